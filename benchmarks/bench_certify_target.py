"""``cd.certify`` end to end on the 8x8 target net (issue 16).

The net is the demo-settings N=20 column-generation optimum of ``bench_global_oracle.py --part
certify`` (cached gates in ``results/global_oracle_certify_N20.npz``), certified with the default
tolerance and ``global_time_limit`` seconds of the global oracle (seeded with the net's neurons).
Writes ``benchmarks/results/certify_target.json`` (the certificate's ``to_dict``) and ``.png``
(objective, lower bound over S, certified global lower bound).

Usage: ``python benchmarks/bench_certify_target.py [--global-time 600] [--threads 1]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_global_oracle as bench  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--global-time", type=float, default=600.0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import convexdual as cd
    from convexdual.data import add_noise, load_digits_dataset

    _, res, _, _, beta = bench.certify_instance(bench.OUT / "global_oracle_certify_N20.npz")
    clean = load_digits_dataset(20, 24, seed=0).train
    noisy = add_noise(clean, "gaussian", 0.5, seed=1)
    load0 = os.getloadavg()
    t = time.perf_counter()
    cert = cd.certify(res.network, noisy, clean, beta, global_time_limit=args.global_time,
                      global_threads=args.threads)
    d = cert.to_dict()
    d["seconds_total"] = time.perf_counter() - t
    d["settings"] = {"global_time_limit": args.global_time, "threads": args.threads,
                     "loadavg_start": load0, "loadavg_end": os.getloadavg(), "cpus": os.cpu_count()}
    (bench.OUT / "certify_target.json").write_text(json.dumps(d, indent=2, default=lambda o: np.asarray(o).tolist()))
    print(d["verdict"], flush=True)
    plt = bench._plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    names = ["objective (2)", "lower bound over S", "certified global lower bound"]
    vals = [d["objective"], d["lower_bound"], d["global_lower_bound"]]
    ax.bar(names, vals)
    ax.set_ylim(min(vals) * 0.98, max(vals) * 1.005)
    ax.set_ylabel("objective units")
    ax.set_title(f"certify on the 8x8 target net: {d['status']}, {args.global_time:.0f} s oracle", fontsize=10)
    fig.tight_layout()
    fig.savefig(bench.OUT / "certify_target.png", dpi=120)


if __name__ == "__main__":
    main()
