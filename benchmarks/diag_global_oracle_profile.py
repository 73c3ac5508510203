"""Where the global oracle's time goes, op by op (torch.profiler), on CPU or CUDA.

Runs ``global_max_correlation`` for a fixed number of nodes on one instance under
``torch.profiler`` and writes the operators with the largest self time (device time on CUDA,
CPU time otherwise) to ``benchmarks/results/global_oracle_profile_<name>.json`` and a bar
chart ``.png``.  Instances: ``--instance certify`` (the N=20 8x8 target of
``bench_global_oracle.py --part certify``) or ``--instance mnistN`` (N real MNIST digits 28x28,
least-squares residual, as ``--part mnist``).

Usage: ``python benchmarks/diag_global_oracle_profile.py --instance mnist600 --device cuda --nodes 1200``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_global_oracle as bench  # noqa: E402
from convexdual.global_oracle import global_max_correlation  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--instance", default="certify", help="certify or mnistN (e.g. mnist600)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--nodes", type=int, default=20_000, help="nodes bounded under the profiler")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--out", default=None, help="result name (default global_oracle_profile_<instance>_<device>)")
    args = ap.parse_args()
    import torch
    from torch.profiler import ProfilerActivity, profile

    if args.instance == "certify":
        _, _, X, r, beta = bench.certify_instance(bench.OUT / "global_oracle_certify_N20.npz")
        kw = {"beta": beta * (1 + 1e-6), "eps": 2.5e-7}
    elif args.instance.startswith("mnist"):
        X, r = bench.mnist_problem(int(args.instance[5:]))
        kw = {}
    else:
        sys.exit(f"--instance: 'certify' or 'mnistN', got {args.instance!r}")
    X = np.asarray(X)
    r = np.asarray(r).ravel()
    cuda = args.device.startswith("cuda")
    # warm-up (numba compilation, CUDA context and kernels) outside the profile
    global_max_correlation(X, r, max_nodes=64, device=args.device, num_threads=args.threads, **kw)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    t = time.perf_counter()
    with profile(activities=acts) as prof:
        o = global_max_correlation(X, r, max_nodes=args.nodes, device=args.device,
                                   num_threads=args.threads, **kw)
        if cuda:
            torch.cuda.synchronize()
    wall = time.perf_counter() - t
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    rows = []
    for e in prof.key_averages():
        dev_us = float(getattr(e, "self_device_time_total", 0.0) or getattr(e, "self_cuda_time_total", 0.0) or 0.0)
        rows.append({"op": e.key, "count": int(e.count), "self_cpu_ms": e.self_cpu_time_total / 1e3,
                     "self_device_ms": dev_us / 1e3})
    sort = "self_device_ms" if cuda else "self_cpu_ms"
    rows.sort(key=lambda d: -d[sort])
    name = args.out or f"global_oracle_profile_{args.instance}_{args.device.split(':')[0]}"
    out = {"settings": bench.settings(args, instance=args.instance, nodes=args.nodes, sorted_by=key),
           "n": int(X.shape[0]), "nodes": o.nodes, "wall_s": wall, "oracle_stats": o.stats,
           "total_self_cpu_ms": sum(d["self_cpu_ms"] for d in rows),
           "total_self_device_ms": sum(d["self_device_ms"] for d in rows), "top": rows[:args.top]}
    bench.write(f"{name}.json", out)
    print(f"{args.instance} on {args.device}: {o.nodes} nodes in {wall:.1f} s under the profiler; "
          f"self cpu {out['total_self_cpu_ms']:.0f} ms, self device {out['total_self_device_ms']:.0f} ms")
    for d in rows[:args.top]:
        print(f"  {d[sort]:10.1f} ms  x{d['count']:<7d} {d['op']}")
    plt = bench._plt()
    fig, ax = plt.subplots(figsize=(8, 5))
    top = rows[:15][::-1]
    ax.barh([d["op"][:40] for d in top], [d[sort] for d in top])
    ax.set_xlabel(f"{sort.replace('_', ' ')} (ms) over {o.nodes} nodes")
    ax.set_title(f"global oracle, {args.instance} (n={X.shape[0]}) on {args.device}: top ops", fontsize=10)
    fig.tight_layout()
    fig.savefig(bench.OUT / f"{name}.png", dpi=120)


if __name__ == "__main__":
    main()
