"""Per-region diagnostics of the global oracle's bounds on the issue-16 target instance.

The target is the N=20 8x8 column-generation optimum of ``bench_global_oracle.py --part
certify`` (cached in ``benchmarks/results/global_oracle_certify_N20.npz``).  Two things:

* ``regions``: random chart boxes of several half-widths (random centres, and centres near
  the local search's incumbent); for each, the bound without and with the corner bound and
  the maximum of 3,000 sampled points of the region; reports the median ratio of the two
  bounds' excesses over that sampled maximum (< 1: the corner bound is tighter).
* ``tips``: the network's active neurons (groups of the convex optimum), ``|f| / beta`` at
  each and how many rows' hyperplanes pass within 1e-7 of it.

Writes ``benchmarks/results/global_oracle_regions.json`` and ``.png``.
Usage: ``python benchmarks/diag_global_oracle_regions.py [--boxes 12]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_global_oracle as bench  # noqa: E402
from convexdual.global_oracle import _Bounder, _local_search, _prepare  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--boxes", type=int, default=12, help="boxes per half-width and placement")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    prob, res, X, r, beta = bench.certify_instance(bench.OUT / "global_oracle_certify_N20.npz")
    X = np.asarray(X)
    r = np.asarray(r).ravel()
    Xh, rh = _prepare(X, r)
    d = Xh.shape[1]
    rng = np.random.default_rng(0)
    _, u_inc, s_inc = _local_search(Xh, rh, rng, starts=64)
    plain = _Bounder(Xh, rh, "cpu", 8, "slack", None, 8)
    corner = _Bounder(Xh, rh, "cpu", 8, "slack", None, 8, corners=True)
    out = {"settings": bench.settings(args, sampled_points_per_box=3000), "instance": "N=20 8x8 column-generation optimum (bench_global_oracle --part certify)",
           "beta": beta, "boxes_per_size": args.boxes, "regions": {}}
    widths = (0.4, 0.25, 0.15, 0.1, 0.05, 0.02)
    for place in ("random", "incumbent"):
        rows = []
        for w in widths:
            ratios, b0s, b1s, ss = [], [], [], []
            for _ in range(args.boxes):
                if place == "random":
                    i, s, sg = int(rng.integers(d)), float(rng.choice([-1.0, 1.0])), float(rng.choice([-1.0, 1.0]))
                    c = rng.uniform(-1, 1, d)
                else:
                    i = int(np.argmax(np.abs(u_inc)))
                    s, sg = float(np.sign(u_inc[i])), float(s_inc)
                    c = u_inc / abs(u_inc[i]) + rng.uniform(-w, w, d) * 0.5
                c[i] = s
                lo = np.clip(c - w, -1, 1)[None]
                hi = np.clip(c + w, -1, 1)[None]
                lo[0, i] = hi[0, i] = s
                args_ = (lo, hi, np.array([i]), np.array([s]), np.array([sg]), 0.0)
                b0 = float(plain(*args_)[0][0])
                b1 = float(corner(*args_)[0][0])
                W = lo[0] + rng.random((3000, d)) * (hi[0] - lo[0])
                W /= np.linalg.norm(W, axis=1, keepdims=True)
                smax = float((sg * (np.maximum(Xh @ W.T, 0.0).T @ rh)).max())
                if b0 - smax > 1e-9 * beta:
                    ratios.append((b1 - smax) / (b0 - smax))
                b0s.append(b0 / beta)
                b1s.append(b1 / beta)
                ss.append(smax / beta)
            rows.append({"half_width": w, "median_excess_ratio_corner_over_plain": float(np.median(ratios)),
                         "median_bound_plain_over_beta": float(np.median(b0s)),
                         "median_bound_corner_over_beta": float(np.median(b1s)),
                         "median_sampled_max_over_beta": float(np.median(ss))})
            print(place, rows[-1], flush=True)
        out["regions"][place] = rows
    tips = {}
    for name, M, sg in (("W", np.asarray(res.W), 1.0), ("Z", np.asarray(res.Z), -1.0)):
        nrm = np.linalg.norm(M, axis=1)
        act = nrm > 1e-6 * nrm.max()
        U = M[act] / nrm[act, None]
        A = Xh @ U.T
        vals = sg * (rh @ np.maximum(A, 0.0)) / beta
        on = (np.abs(A) < 1e-7).sum(0)
        tips[name] = {"active": int(act.sum()), "f_over_beta_min_max": [float(vals.min()), float(vals.max())],
                      "rows_on_hyperplanes_min_median_max": [int(on.min()), float(np.median(on)), int(on.max())]}
        print(name, tips[name], flush=True)
    out["tips"] = tips
    bench.write("global_oracle_regions.json", out)
    plt = bench._plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for place, mk in (("random", "o-"), ("incumbent", "s--")):
        rr = out["regions"][place]
        ax.plot([q["half_width"] for q in rr], [q["median_excess_ratio_corner_over_plain"] for q in rr], mk,
                label=f"{place} boxes")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("chart half-width of the box")
    ax.set_ylabel("median excess ratio (corner / relaxation)")
    ax.set_title("Corner bound vs per-row relaxation, target instance (N=20 8x8)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(bench.OUT / "global_oracle_regions.png", dpi=120)


if __name__ == "__main__":
    main()
