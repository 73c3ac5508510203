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

``--part scaling`` (``global_oracle_scaling.json`` / ``.png``) measures where the proof's
cost comes from, on the same instance:

* ``thresholds``: the full search deciding ``M* <= tau beta`` for tau = 1.5, 1.3, 1.2, ...
  (``global_max_correlation(beta=tau beta)``): nodes and seconds to the proof, or the
  upper bound reached when the budget ran out.  How the node count grows as tau -> 1 is
  the cost of the bulk of the sphere (away from the maximisers).
* ``tips``: a depth-first search over one chart box of half-width 0.01 around each of a
  few of the network's active neurons (where ``|f| = beta``, on several hyperplanes),
  with the oracle's own region bound, until every region is below ``beta (1 + 1e-6)`` or
  a node cap: the cost of closing the neighbourhood of a maximiser.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_global_oracle as bench  # noqa: E402
from convexdual.global_oracle import _Bounder, _local_search, _prepare  # noqa: E402


def tip_box_search(bd, Xh, u, sg, thr, margin, w0, cap):
    """Depth-first search over the chart box of half-width ``w0`` around ``u`` with the
    oracle's region bound ``bd``: (nodes, open regions left, smallest split width)."""
    d = Xh.shape[1]
    i = int(np.argmax(np.abs(u)))
    s = float(np.sign(u[i]))
    c = u / abs(u[i])
    lo = np.clip(c - w0, -1, 1)[None]
    hi = np.clip(c + w0, -1, 1)[None]
    lo[0, i] = hi[0, i] = s
    face, fs, sgv = np.array([i]), np.array([s]), np.array([sg])
    nodes, minw = 0, w0
    while len(lo) and nodes < cap:
        B = min(len(lo), 1024)
        blo, bhi, bf, bfs, bsg = lo[:B], hi[:B], face[:B], fs[:B], sgv[:B]
        lo, hi, face, fs, sgv = lo[B:], hi[B:], face[B:], fs[B:], sgv[B:]
        ub, split = bd(blo, bhi, bf, bfs, bsg, thr - margin)[:2]
        nodes += B
        al = np.nonzero(ub + margin > thr)[0]
        if len(al) == 0:
            continue
        blo, bhi, split = blo[al], bhi[al], split[al]
        rows = np.arange(len(al))
        mid = 0.5 * (blo[rows, split] + bhi[rows, split])
        minw = min(minw, float((bhi - blo)[rows, split].min()))
        h1 = bhi.copy()
        h1[rows, split] = mid
        l2 = blo.copy()
        l2[rows, split] = mid
        lo, hi = np.concatenate([l2, blo, lo]), np.concatenate([bhi, h1, hi])
        face = np.concatenate([bf[al], bf[al], face])
        fs = np.concatenate([bfs[al], bfs[al], fs])
        sgv = np.concatenate([bsg[al], bsg[al], sgv])
    return nodes, len(lo), minw


def part_scaling(args):
    import time

    from convexdual.global_oracle import global_max_correlation

    prob, res, X, r, beta = bench.certify_instance(bench.OUT / "global_oracle_certify_N20.npz")
    X = np.asarray(X)
    r = np.asarray(r).ravel()
    taus = [float(t) for t in args.taus.split(",") if t.strip()]
    out = {"settings": bench.settings(args, taus=taus, budget_s=args.budget, tip_cap=args.tip_cap,
                                      fan_rows=args.fan_rows),
           "instance": "N=20 8x8 column-generation optimum (bench_global_oracle --part certify)",
           "beta": beta, "thresholds": [], "tips": []}
    for tau in taus:
        o = global_max_correlation(X, r, beta=tau * beta, eps=2.5e-7, time_limit=args.budget,
                                   num_threads=args.threads, max_open=12_000_000)
        e = {"tau": tau, "status": o.status, "verdict": o.verdict, "upper_over_beta": o.upper / beta,
             "nodes": o.nodes, "seconds": o.seconds, "open_regions": o.open_regions}
        out["thresholds"].append(e)
        print("threshold", e, flush=True)
        bench.write(f"{args.out}.json", out)
    Xh, rh = _prepare(X, r)
    d = Xh.shape[1]
    S = float(np.sum(np.abs(rh) * np.abs(Xh).sum(1)))
    margin = 8.0 * (len(rh) + 8 * d + 32) * 2.0 ** -53 * S
    thr = beta * (1 + 1e-6) * (1 + 2.5e-7) + 2 * margin
    bd = _Bounder(Xh, rh, "cpu", 8, "slack", None, 8, corners=True, margin=margin, fan_rows=args.fan_rows)
    tips = []
    for M, sg in ((np.asarray(res.W), 1.0), (np.asarray(res.Z), -1.0)):
        nrm = np.linalg.norm(M, axis=1)
        act = nrm > 1e-6 * nrm.max()
        tips += [(u, sg) for u in M[act] / nrm[act, None]]
    for k in np.linspace(0, len(tips) - 1, args.tips).astype(int):
        u, sg = tips[k]
        t = time.perf_counter()
        f0 = list(bd.fan_stats)
        nodes, left, minw = tip_box_search(bd, Xh, u, sg, thr, margin, 0.01, args.tip_cap)
        e = {"tip": int(k), "sign": sg, "rows_on_hyperplanes": int((np.abs(Xh @ u) < 1e-7).sum()),
             "f_over_beta": float(sg * (rh @ np.maximum(Xh @ u, 0.0)) / beta), "nodes": nodes,
             "closed": left == 0, "open_left": left, "smallest_width": minw,
             "seconds": time.perf_counter() - t, "fan_regions": bd.fan_stats[0] - f0[0],
             "fan_pruned": bd.fan_stats[1] - f0[1]}
        out["tips"].append(e)
        print("tip", e, flush=True)
        bench.write(f"{args.out}.json", out)
    plt = bench._plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    th = out["thresholds"]
    ok = [e for e in th if e["verdict"] == "feasible"]
    a1.plot([e["tau"] for e in ok], [e["nodes"] for e in ok], "o-", label="proved M* <= tau beta")
    nb = [e for e in th if e["verdict"] != "feasible"]
    a1.plot([e["tau"] for e in nb], [e["nodes"] for e in nb], "x", ms=9, label=f"budget {args.budget:.0f} s ran out")
    a1.set_xlabel("tau")
    a1.set_ylabel("nodes")
    a1.set_yscale("log")
    a1.invert_xaxis()
    a1.legend(fontsize=8)
    a1.set_title("bulk: nodes to prove M* <= tau beta", fontsize=10)
    tp = out["tips"]
    a2.bar(range(len(tp)), [e["nodes"] for e in tp], color=["C2" if e["closed"] else "C3" for e in tp])
    a2.axhline(args.tip_cap, color="k", lw=0.8, label="node cap (red: not closed)")
    a2.set_xticks(range(len(tp)), [f"{e['tip']}\n{e['rows_on_hyperplanes']} rows" for e in tp], fontsize=7)
    a2.set_ylabel("nodes")
    a2.set_title("tips: box of half-width 0.01 around an active neuron", fontsize=10)
    a2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(bench.OUT / f"{args.out}.png", dpi=120)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=("regions", "scaling"), default="regions")
    ap.add_argument("--boxes", type=int, default=12, help="boxes per half-width and placement")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--taus", type=str, default="1.5,1.3,1.2", help="scaling: thresholds tau")
    ap.add_argument("--budget", type=float, default=300.0, help="scaling: seconds per threshold")
    ap.add_argument("--tips", type=int, default=6, help="scaling: tips searched")
    ap.add_argument("--tip-cap", type=int, default=100_000, help="scaling: node cap per tip")
    ap.add_argument("--out", type=str, default="global_oracle_scaling", help="scaling: result name")
    ap.add_argument("--fan-rows", type=int, default=0, help="scaling: fan bound up to this many undecided rows")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.part == "scaling":
        return part_scaling(args)
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
