"""``convexdual certify``: is a saved network a global optimum of (2) on its training data?"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

__all__ = ["add_parser", "run"]


def add_parser(sub) -> None:
    p = sub.add_parser(
        "certify", help="certify a trained network: globally optimal, or by how much it can improve",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Evaluate objective (2) of a saved TwoLayerConvNet on its training data, map it into program "
                    "(4), solve (4) over the net's own + enumerated/sampled sign patterns, search for descent "
                    "neurons, print the verdict and write a JSON report. Exit status: 0 when the net is certified "
                    "optimal (globally, or over S with no descent neuron found), 1 when it is not optimal or the "
                    "check is inconclusive, 2 on bad input.")
    p.add_argument("--net", type=Path, required=True, help="network file written by TwoLayerConvNet.save (.pt)")
    p.add_argument("--data", type=Path, required=True,
                   help=".npz with arrays 'noisy' and 'clean': the pair the net was trained on")
    p.add_argument("--beta", type=float, required=True, help="the weight decay beta of (2) the net was trained with")
    p.add_argument("--loss", choices=["squared", "absolute", "huber"], default="squared")
    p.add_argument("--huber-delta", type=float, default=1.0)
    p.add_argument("--patterns", default="auto",
                   help="'auto' (enumerate when the arrangement is small, else sample), 'enumerate', or the "
                        "number of sampled patterns")
    p.add_argument("--max-enumerate", type=int, default=1024, help="largest arrangement 'auto' enumerates")
    p.add_argument("--solver", default="clarabel-ws", help="solver of (4) over S (see 'convexdual solvers')")
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


def run(args) -> int:
    import convexdual as cd

    if args.beta is None or not args.beta > 0:
        raise ValueError(f"--beta must be > 0, got {args.beta}")
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
    noisy, clean = _load_training_pair(args.data)
    loss = cd.get_loss("huber", delta=args.huber_delta) if args.loss == "huber" else args.loss
    t0 = time.perf_counter()
    print(f"[convexdual] certifying {args.net} ({net.width} filters, k={net.kernel_size}) on {args.data} "
          f"({noisy.shape[0]} images), beta={args.beta:.6g}", flush=True)
    cert = cd.certify(net, noisy, clean, args.beta, loss=loss, patterns=pats, num_patterns=num,
                      max_enumerate=args.max_enumerate, solver=args.solver, num_starts=args.starts,
                      num_gates=args.gates, seed=args.seed, tolerance=args.tolerance)
    print(cert.summary())
    report = {"net": str(args.net), "data": str(args.data), "net_metadata": meta,
              "seconds": time.perf_counter() - t0, "certificate": cert.to_dict()}
    if args.save_improved is not None and cert.improved_network is not None:
        cert.improved_network.save(args.save_improved, metadata={
            "beta": args.beta, "objective": cert.objective - cert.improvement,
            "source": cert.improvement_source, "improves": str(args.net)})
        report["improved_network_file"] = str(args.save_improved)
        print(f"[convexdual] wrote the improved network to {args.save_improved}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print(f"[convexdual] wrote {args.out}")
    return 0 if cert.status in ("globally_optimal", "optimal_over_S") else 1
