"""Benchmark of the certified descent-neuron oracle (convexdual.global_oracle, issue 16).

Data: sklearn 8x8 digits, normalised by the global mean/std, Gaussian noise sigma 0.5,
kernel 3 (d = 9), patch rows ``X = patch_matrix(noisy (N,1,8,8), 3)`` (n = 64 N), targets
the clean centre pixels.  Residual: the least-squares residual ``r = y - X w_ls`` of the
best linear filter.  ``beta = 0.02 * max over 256 Gaussian gates g of ||X^T D(g) y||``.

Per N in (1, 5, 20) three runs:

* ``decide``: ``beta`` given, LS residual (is there a descent neuron?);
* ``bracket``: no ``beta``; certified ``[lower, upper]`` on ``M*`` against time (the gap at
  60 s and at the end of the long budget);
* ``decide_scaled``: the residual scaled so that the attained value is ``beta / 2``
  (``M*`` somewhat above ``beta/2``, at most ``beta/2 * upper/lower`` of the bracket run):
  can the oracle *prove* ``M* <= beta``?

Writes ``benchmarks/results/global_oracle.json`` and ``global_oracle.png``.
Usage: ``python benchmarks/bench_global_oracle.py [--long 300] [--short 60] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from convexdual.global_oracle import global_max_correlation
from convexdual.patches import patch_matrix

OUT = Path(__file__).resolve().parent / "results"


def make_problem(N, seed=0):
    from sklearn.datasets import load_digits

    dig = load_digits().images.astype(np.float64)
    rng = np.random.default_rng(seed)
    imgs = dig[rng.choice(len(dig), N, replace=False)]
    mu, sd = dig.mean(), dig.std()
    clean = (imgs - mu) / sd
    noisy = clean + 0.5 * rng.standard_normal(clean.shape)
    X = patch_matrix(noisy[:, None], 3)
    y = clean.reshape(-1)
    w, *_ = np.linalg.lstsq(X, y, rcond=None)
    r = y - X @ w
    G = rng.standard_normal((9, 256))
    beta = 0.02 * max(float(np.linalg.norm(X.T @ (y * (X @ G[:, k] >= 0)))) for k in range(256))
    return X, y, r, beta


def gap_at(history, t):
    """Certified relative gap (upper - lower) / upper at time t (last sample <= t)."""
    rows = [h for h in history if h[0] <= t]
    if not rows:
        return None
    _, nodes, up, lo = rows[-1]
    if not np.isfinite(up):
        return None
    return {"seconds": t, "nodes": int(nodes), "upper": up, "lower": lo,
            "rel_gap": (up - lo) / up if up > 0 else 0.0}


def summary(res):
    st = dict(res.stats)
    tot = st.get("seconds_total", res.seconds)
    return {
        "status": res.status, "verdict": res.verdict, "upper": res.upper, "lower": res.lower,
        "rel_gap": res.gap, "nodes": res.nodes, "seconds": res.seconds,
        "nodes_per_second": res.nodes / max(res.seconds, 1e-9),
        "open_regions": res.open_regions, "margin": res.margin, "beta": res.beta,
        "time_split": {k: v for k, v in st.items() if k.startswith("seconds_")},
        "time_fraction_bound": st.get("seconds_bound", 0.0) / max(tot, 1e-9),
        "rows": {"in": st.get("rows_in"), "after_merge": st.get("rows_merged")},
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--long", type=float, default=300.0)
    ap.add_argument("--short", type=float, default=60.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sizes", type=str, default="1,5,20")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    out = {"settings": {"data": "sklearn digits 8x8, global mean/std, noise 0.5, k=3 (d=9)",
                        "residual": "least-squares residual y - X w_ls",
                        "beta": "0.02 * max_{256 gates} ||X^T D(g) y||",
                        "eps": 1e-6, "long_s": args.long, "short_s": args.short,
                        "torch_threads": args.threads, "device": "cpu",
                        "machine": platform.processor() or platform.machine(),
                        "cpus": os.cpu_count(), "loadavg_start": os.getloadavg()},
           "runs": {}}
    curves = {}
    for N in sizes:
        X, y, r, beta = make_problem(N)
        entry = {"n": int(X.shape[0]), "d": int(X.shape[1]), "beta": beta,
                 "r_norm": float(np.linalg.norm(r))}
        t = time.perf_counter()
        dec = global_max_correlation(X, r, beta=beta, time_limit=args.short,
                                     num_threads=args.threads)
        entry["decide"] = summary(dec)
        print(f"N={N} n={X.shape[0]} decide: {dec.status} lower={dec.lower:.4g} "
              f"beta={beta:.4g} ({dec.seconds:.2f}s, {dec.nodes} nodes)", flush=True)
        br = global_max_correlation(X, r, time_limit=args.long, num_threads=args.threads)
        entry["bracket"] = summary(br)
        entry["bracket"]["at_short"] = gap_at(br.history, args.short)
        entry["bracket"]["at_long"] = gap_at(br.history, args.long + 10)
        curves[N] = np.asarray(br.history, dtype=float)
        print(f"N={N} bracket: {br.status} [{br.lower:.6g}, {br.upper:.6g}] gap={br.gap:.3g} "
              f"nodes={br.nodes} ({br.nodes / br.seconds:.0f}/s) open={br.open_regions} "
              f"at {args.short:.0f}s: {entry['bracket']['at_short']}", flush=True)
        scale = 0.5 * beta / br.lower
        sc = global_max_correlation(X, scale * r, beta=beta, time_limit=args.short,
                                    num_threads=args.threads)
        entry["decide_scaled"] = summary(sc)
        entry["decide_scaled"]["scale"] = scale
        entry["decide_scaled"]["attained_over_beta"] = 0.5
        entry["decide_scaled"]["Mstar_over_beta_at_most"] = 0.5 * br.upper / br.lower
        print(f"N={N} scaled (M*/beta in [0.5, {0.5 * br.upper / br.lower:.3g}]): {sc.status} "
              f"verdict={sc.verdict} upper/beta={sc.upper / beta:.4g} ({sc.seconds:.1f}s, "
              f"{sc.nodes} nodes)", flush=True)
        entry["wall_seconds"] = time.perf_counter() - t
        out["runs"][str(N)] = entry
        out["settings"]["loadavg_end"] = os.getloadavg()
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "global_oracle.json").write_text(json.dumps(out, indent=2, default=float))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for k, (N, h) in enumerate(curves.items()):
        ok = np.isfinite(h[:, 2])
        col = f"C{k}"
        ax.plot(h[ok, 0], h[ok, 2], color=col, label=f"N={N} upper (certified)")
        ax.plot(h[:, 0], h[:, 3], color=col, ls="--", label=f"N={N} lower (attained)")
    ax.set_xlabel("seconds (CPU, %d torch thread)" % args.threads)
    ax.set_ylabel("max |sum_p r_p relu(x_p^T u)| over ||u|| <= 1")
    ax.set_yscale("log")
    ax.set_title("Global oracle on 8x8 digits (k=3, d=9): certified bracket vs time")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / "global_oracle.png", dpi=120)
    print("wrote", OUT / "global_oracle.json", OUT / "global_oracle.png")


if __name__ == "__main__":
    main()
