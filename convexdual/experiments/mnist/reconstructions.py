"""reconstructions: clean / noisy / primal / dual denoised test digits (Fig. 3).

Trains the primal net and solves (4) (certified) at one noise level, then shows
test images with their per-image PSNR (dB, on the normalised scale, peak = the clean
image's range).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

import convexdual as cd
from convexdual.experiments.mnist import common as C

__all__ = ["add_arguments", "run", "FULL", "SMOKE", "psnr"]

FULL: dict[str, Any] = {"num_train": 600, "num_test": 0, "sigmas": "0.5", "width": 512, "epochs": 100,
                        "lr": 1e-2, "num_patterns": "8000", "baseline_epochs": 100}
SMOKE: dict[str, Any] = {"num_train": 4, "num_test": 8, "sigmas": "0.5", "width": 32, "epochs": 80,
                         "lr": 1e-2, "num_patterns": "24", "baseline_epochs": 40}


def add_arguments(p: argparse.ArgumentParser) -> None:
    C.add_common_arguments(p, FULL, SMOKE)
    p.add_argument("--num-images", type=int, default=6, help="test digits shown")


def psnr(x: np.ndarray, ref: np.ndarray) -> float:
    """``10 log10(range(ref)^2 / mean((x - ref)^2))`` in dB."""
    mse = float(np.mean((np.asarray(x) - ref) ** 2))
    peak = float(ref.max() - ref.min())
    return float("inf") if mse == 0 else 10.0 * np.log10(peak**2 / mse)


def run(args: argparse.Namespace) -> int:
    return C.run_experiment(args, FULL, SMOKE, _run)


def _run(args: argparse.Namespace, out: Path) -> int:
    sigma = C.parse_floats(args.sigmas)[0]
    P = C.parse_ints(args.num_patterns)[0]
    data, beta, primal, pnet = C.train_unit(args, "gaussian", sigma, evals=10)
    pats = cd.sample_patterns(data.noisy, 3, P, seed=args.seed)
    # seed=0: the solvers' own seed was never tied to --seed here (kept as it was)
    duals, nets = C.dual_pair(args, data, beta, pats, pnet, prefix="dual", seed=0)
    k = min(int(args.num_images), len(data.clean_test))
    rows: dict[str, np.ndarray] = {"clean": data.clean_test[:k], "noisy": data.noisy_test[:k],
                                   f"primal ({args.width} filters)": pnet.predict(data.noisy_test[:k])}
    for name, net in nets.items():
        if net is not None:
            rows[duals[name]["label"]] = net.predict(data.noisy_test[:k])
    scores = {name: [psnr(img, c) for img, c in zip(imgs, data.clean_test[:k])] for name, imgs in rows.items()}
    plt = C.setup_matplotlib()
    fig, axes = plt.subplots(len(rows), k, figsize=(1.6 * k, 1.7 * len(rows)), squeeze=False)
    lo, hi = float(data.clean_test[:k].min()), float(data.clean_test[:k].max())
    for i, (name, imgs) in enumerate(rows.items()):
        for j in range(k):
            ax = axes[i, j]
            ax.imshow(imgs[j], cmap="gray", vmin=lo, vmax=hi)
            ax.set_xticks([])
            ax.set_yticks([])
            if name != "clean":
                ax.set_title(f"{scores[name][j]:.1f} dB", fontsize=7)
        axes[i, 0].set_ylabel(name, fontsize=7)
    fig.suptitle(f"test reconstructions, Gaussian sigma {sigma:g}")
    fig.tight_layout()
    fig.savefig(out / "reconstructions.png", dpi=110)
    plt.close(fig)
    lines = [f"Data: {data.source}, Gaussian sigma {sigma:g}; certified solver `{args.solver}`.", "",
             "| row | mean PSNR (dB) over shown digits | test loss / pixel (all test images) |", "|---|---|---|"]
    losses = {"noisy": C.per_pixel_loss(data.noisy_test, data.clean_test),
              f"primal ({args.width} filters)": primal["test_loss"]}
    losses.update({duals[n]["label"]: duals[n].get("test_loss") for n in duals})
    for name in rows:
        if name != "clean":
            lines.append(f"| {name} | {np.mean(scores[name]):.2f} | {C.fmt(losses.get(name))} |")
    lines += ["", "Figure: reconstructions.png"]
    C.write_outputs(out, "reconstructions", "reconstructions", args, {
        "beta": beta, "data": data.describe(), "primal": primal, "duals": duals,
        "images": {name: imgs for name, imgs in rows.items()}, "psnr_db": scores,
        "figures": ["reconstructions.png"]}, lines)
    return 0
