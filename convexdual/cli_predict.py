"""``convexdual predict``: denoise images with a saved network; PSNR/SSIM when clean images are given."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["add_parser", "run", "read_inputs", "image_metrics"]


def add_parser(sub) -> None:
    from convexdual.cli import COMMANDS

    p = sub.add_parser(
        "predict", help=COMMANDS["predict"].help,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Run a network saved by `convexdual solve` (or TwoLayerConvNet.save) on new images and write "
                    "the outputs to --out (.npz with array 'denoised', plus 'noisy', and 'clean' when given). When "
                    "the input file also holds 'clean', PSNR and SSIM (skimage.metrics, data range of each clean "
                    "image) are printed and stored, for the noisy inputs and the outputs. Exit status 2 on bad input.")
    p.add_argument("--net", type=Path, required=True, help="network file (.pt) written by TwoLayerConvNet.save")
    p.add_argument("--data", type=Path, required=True,
                   help=".npz with array 'noisy' (N, [C,] H, W) and optionally 'clean' (N, H, W), or a .npy of "
                        "noisy images")
    p.add_argument("--out", type=Path, required=True, help="output .npz")
    p.add_argument("--device", default="cpu", help="where to run: cpu, cuda, cuda:N")
    p.add_argument("--batch-size", type=int, default=None,
                   help="images per forward pass (default: as many as keep the hidden activations within 256 MB)")
    p.set_defaults(func=run)


def read_inputs(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """``(noisy, clean or None)`` from a ``.npz`` (arrays 'noisy' [+ 'clean']) or a ``.npy`` of noisy images."""
    import zipfile

    from convexdual.errors import DataFormatError

    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"--data {path} does not exist; give a .npz with array 'noisy' (and optionally "
                              "'clean') or a .npy of noisy images")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                if "noisy" not in f.files:
                    raise DataFormatError(f"{path} holds arrays {sorted(f.files)}; predict needs 'noisy' (the images "
                                          "to denoise) and optionally 'clean' (for PSNR/SSIM)")
                noisy = np.asarray(f["noisy"])
                clean = np.asarray(f["clean"]) if "clean" in f.files else None
        elif suffix == ".npy":
            noisy, clean = np.load(path, allow_pickle=False), None
        else:
            raise DataFormatError(f"unsupported --data file {path.name!r}: use .npz (array 'noisy', optionally "
                                  "'clean') or .npy (noisy images)")
    except DataFormatError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataFormatError(f"could not read {path}: {exc}") from exc
    return noisy, clean


def image_metrics(images: np.ndarray, clean: np.ndarray) -> dict[str, float]:
    """Mean PSNR and SSIM of ``images (N, H, W)`` against ``clean (N, H, W)`` (skimage.metrics).

    Each image uses the data range of its clean reference (max - min; 1 for a constant image).
    """
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    psnr, ssim = [], []
    for x, ref in zip(images, clean):
        data_range = float(ref.max() - ref.min()) or 1.0
        psnr.append(float(peak_signal_noise_ratio(ref, x, data_range=data_range)))
        win = min(7, *ref.shape)
        win -= 1 - win % 2  # odd window no larger than the image
        ssim.append(float(structural_similarity(ref, x, data_range=data_range, win_size=win)) if win >= 3
                    else float("nan"))
    return {"psnr": float(np.mean(psnr)), "ssim": float(np.mean(ssim))}


def run(args) -> int:
    import convexdual as cd
    from convexdual._io import atomic_save_npz, atomic_write_json
    from convexdual._validation import as_images, as_targets, check_device
    from convexdual.cli import prepare_output_file

    quiet = not getattr(args, "progress", True)
    out = prepare_output_file(args.out, overwrite=getattr(args, "overwrite", False))
    if out.suffix.lower() != ".npz":
        raise ValueError(f"--out must be a .npz file name, got {out.name!r}")
    metrics_file = out.with_suffix(".json")
    prepare_output_file(metrics_file, overwrite=getattr(args, "overwrite", False), option="metrics file")
    device = check_device(args.device)
    if args.batch_size is not None and args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    net, meta = cd.TwoLayerConvNet.load(args.net, device=device)
    noisy_raw, clean_raw = read_inputs(args.data)
    noisy = as_images(noisy_raw, "noisy")
    if noisy.shape[1] != net.in_channels:
        raise ValueError(f"{args.data}: 'noisy' has {noisy.shape[1]} channel(s) but {args.net} takes "
                         f"{net.in_channels}")
    clean = None if clean_raw is None else as_targets(clean_raw, noisy, "clean")
    t0 = time.perf_counter()
    denoised = net.predict(noisy, batch_size=args.batch_size, device=device)
    seconds = time.perf_counter() - t0
    arrays: dict[str, Any] = {"denoised": denoised, "noisy": noisy}
    report: dict[str, Any] = {"net": str(args.net), "data": str(args.data), "out": str(out), "device": str(device),
                              "num_images": int(noisy.shape[0]), "seconds": seconds, "net_metadata": meta}
    line = f"predict: {noisy.shape[0]} images ({noisy.shape[2]}x{noisy.shape[3]}) on {device} in {seconds:.2f}s"
    if clean is not None:
        arrays["clean"] = clean
        report["noisy_metrics"] = image_metrics(noisy[:, net.residual_channel if net.residual else 0], clean)
        report["denoised_metrics"] = image_metrics(denoised, clean)
        line += ("; PSNR {:.2f} -> {:.2f} dB, SSIM {:.3f} -> {:.3f} (noisy -> denoised)".format(
            report["noisy_metrics"]["psnr"], report["denoised_metrics"]["psnr"],
            report["noisy_metrics"]["ssim"], report["denoised_metrics"]["ssim"]))
    atomic_save_npz(out, **arrays)
    atomic_write_json(metrics_file, report)
    print(line + f" -> {out}" + ("" if quiet else f" (report {metrics_file})"), flush=True)
    return 0
