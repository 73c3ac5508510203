"""``convexdual certify``: is a saved network a global optimum of (2) on its training data?"""

from __future__ import annotations

import argparse
import inspect
import math
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    from convexdual.cli import COMMANDS

    p = sub.add_parser(
        "certify", help=COMMANDS["certify"].help,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Evaluate objective (2) of a saved TwoLayerConvNet on its training data, map it into program "
                    "(4), solve (4) over the net's own + enumerated/sampled sign patterns, search for descent "
                    "neurons, print the verdict and write a JSON report. Exit status: 0 when the net is certified "
                    "optimal (globally, or over S with no descent neuron found), 1 when it is not optimal or the "
                    "check is inconclusive, 2 on bad input.")
    p.add_argument("--net", type=Path, required=True, help="network file written by TwoLayerConvNet.save (.pt)")
    p.add_argument("--data", type=Path, required=True,
                   help=".npz with arrays 'noisy' and 'clean': the pair the net was trained on")
    p.add_argument("--beta", type=float, default=None,
                   help="the weight decay beta of (2) the net was trained with (default: the 'beta' stored in the "
                        "network file's metadata; a warning is printed when a given value differs)")
    p.add_argument("--loss", choices=["squared", "absolute", "huber"], default=None,
                   help="loss of (2) (default: the network file's metadata, else squared)")
    p.add_argument("--huber-delta", type=float, default=None, help="Huber delta (default: metadata, else 1.0)")
    p.add_argument("--patterns", default="auto",
                   help="'auto' (enumerate when the arrangement is small, else sample), 'enumerate', or the "
                        "number of sampled patterns")
    p.add_argument("--max-enumerate", type=int, default=1024, help="largest arrangement 'auto' enumerates")
    p.add_argument("--solver", default="auto", help="solver of (4) over S (see 'convexdual solvers')")
    p.add_argument("--global-time-limit", type=float, default=60.0,
                   help="seconds for the branch-and-bound proof of global optimality when S is not an exact "
                        "enumeration (0: skip it)")
    p.add_argument("--starts", type=int, default=64, help="projected-ascent starts of the descent search")
    p.add_argument("--gates", type=int, default=2048, help="random gates of the descent search")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tolerance", type=float, default=1e-6, help="relative tolerance of the verdict")
    p.add_argument("--out", type=Path, default=Path("certificate.json"), help="JSON report")
    p.add_argument("--save-improved", type=Path, default=None,
                   help="write the better network (when one is found) to this .pt file")
    p.set_defaults(func=run)


def _load_training_pair(path: Path):
    import numpy as np

    from convexdual.data.arrays import load_pair
    from convexdual.errors import DataFormatError

    if path.suffix.lower() != ".npz":
        raise DataFormatError(f"--data must be a .npz with arrays 'noisy' and 'clean'; got {path.name!r}")
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as f:
                keys = set(f.files)
        except Exception as exc:
            raise DataFormatError(f"could not read {path}: {exc}") from exc
        if "noisy" not in keys or "clean" not in keys:
            raise DataFormatError(f"{path} holds arrays {sorted(keys)}; certification needs both 'noisy' and "
                                  "'clean' (the exact training inputs, not freshly drawn noise)")
    return load_pair(path)


def _from_metadata(args, meta: dict[str, Any], net: Any) -> tuple[float, str, float]:
    """beta, loss and Huber delta: the command line's, else the network file's metadata; warn on a mismatch."""
    from convexdual._validation import check_beta

    def stored(key: str) -> Any:
        return meta.get(key) if isinstance(meta, dict) else None

    beta_meta = stored("beta")
    if args.beta is None:
        if beta_meta is None:
            raise ValueError(f"{args.net} records no beta in its metadata; give the weight decay it was trained "
                             "with: --beta B")
        try:
            beta = check_beta(beta_meta)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{args.net}: the beta in its metadata is unusable ({exc}); give --beta B") from None
    else:
        beta = check_beta(args.beta)
        if beta_meta is not None and not _same(beta_meta, beta):
            _warn(f"--beta {beta!r} differs from the beta {beta_meta!r} stored in {args.net}; certifying with "
                  f"--beta {beta!r} (the verdict is about that problem)")
    loss_meta = stored("loss")
    if args.loss is None:
        loss = loss_meta if loss_meta in ("squared", "absolute", "huber") else "squared"
        if loss_meta is not None and loss != loss_meta:
            _warn(f"{args.net} names an unknown loss {loss_meta!r}; using squared (give --loss)")
    else:
        loss = args.loss
        if loss_meta is not None and loss_meta != loss:
            _warn(f"--loss {loss} differs from the loss {loss_meta!r} stored in {args.net}")
    delta_meta = stored("huber_delta")
    delta = args.huber_delta if args.huber_delta is not None else (
        float(delta_meta) if isinstance(delta_meta, (int, float)) and not isinstance(delta_meta, bool) else 1.0)
    for key, value in (("kernel_size", net.kernel_size), ("residual", net.residual)):
        if stored(key) is not None and stored(key) != value:
            _warn(f"{args.net}: metadata says {key}={stored(key)!r} but the stored weights give {value!r}; "
                  "using the weights")
    return beta, loss, delta


def _same(a: Any, b: float) -> bool:
    try:
        return math.isclose(float(a), b, rel_tol=1e-12, abs_tol=0.0)
    except (TypeError, ValueError):
        return False


def _warn(msg: str) -> None:
    print(f"convexdual certify: warning: {msg}", file=sys.stderr, flush=True)


def run(args) -> int:
    import convexdual as cd
    from convexdual._io import atomic_write_json
    from convexdual.cli import prepare_output_file

    quiet = not getattr(args, "progress", True)
    overwrite = getattr(args, "overwrite", False)
    prepare_output_file(args.out, overwrite=overwrite, option="--out")
    if args.save_improved is not None:
        prepare_output_file(args.save_improved, overwrite=overwrite, option="--save-improved")
        if args.save_improved.resolve() == args.out.resolve():
            raise ValueError("--out and --save-improved must be different files")
    pats: str | int = args.patterns
    if str(pats).lower() in ("auto", "enumerate"):
        pats, num = str(pats).lower(), 100
    else:
        try:
            num = int(pats)
        except ValueError:
            raise ValueError(f"--patterns must be 'auto', 'enumerate' or an integer; got {args.patterns!r}") from None
        pats = "sample"
    net, meta = cd.TwoLayerConvNet.load(args.net)
    beta, loss_name, delta = _from_metadata(args, meta, net)
    noisy, clean = _load_training_pair(args.data)
    loss = cd.get_loss("huber", delta=delta) if loss_name == "huber" else loss_name
    t0 = time.perf_counter()
    if not quiet:
        print(f"[convexdual] certifying {args.net} ({net.width} filters, k={net.kernel_size}) on {args.data} "
              f"({noisy.shape[0]} images), beta={beta:.6g}, loss {loss_name}", flush=True)
    extra = {"progress": not quiet} if "progress" in inspect.signature(cd.certify).parameters else {}
    cert = cd.certify(net, noisy, clean, beta, loss=loss, patterns=pats, num_patterns=num,
                      max_enumerate=args.max_enumerate, solver=args.solver, num_starts=args.starts,
                      num_gates=args.gates, seed=args.seed, tolerance=args.tolerance,
                      global_time_limit=args.global_time_limit or None, **extra)
    print(cert.summary())
    report = {"net": str(args.net), "data": str(args.data), "net_metadata": meta, "beta": beta, "loss": loss_name,
              "seconds": time.perf_counter() - t0, "certificate": cert.to_dict()}
    if loss_name == "huber":
        report["huber_delta"] = delta
    if args.save_improved is not None and cert.improved_network is not None:
        improved_meta = {"beta": beta, "loss": loss_name, "kernel_size": net.kernel_size, "residual": net.residual,
                         "objective": cert.objective - cert.improvement, "source": cert.improvement_source,
                         "improves": str(args.net)}
        if loss_name == "huber":
            improved_meta["huber_delta"] = delta
        cert.improved_network.save(args.save_improved, metadata=improved_meta)
        report["improved_network_file"] = str(args.save_improved)
        if not quiet:
            print(f"[convexdual] wrote the improved network to {args.save_improved}")
    atomic_write_json(args.out, report)
    if not quiet:
        print(f"[convexdual] wrote {args.out}")
    return 0 if cert.status in ("globally_optimal", "optimal_over_S") else 1
