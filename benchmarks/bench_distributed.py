"""Data-parallel solves: one operator pass and one certified solve at 1 and R processes (torchrun).

Real MNIST digits (the bundled 5,000-digit sample, 28x28, normalised), Gaussian noise sigma,
k = 3, P sampled patterns, beta = frac * beta_max, solver ``active_set``. The same problem is
solved by one process and by ``torchrun --standalone --nproc_per_node=R`` (gloo, CPU), each rank
with ``--threads`` torch/BLAS threads; reported per run: the time of one reduced adjoint pass
``(X^T D_i v)_i`` (median of 3), of the whole certified solve, its objective and certificate, the
peak resident memory of every rank, and the ratios against one process. From the measured per-row
rates and memory it then states how the paper's CS-MRI problem (1,741 slices x 2 (real/imag)
x 80 x 80 = 22.3 million patch rows, d = 49, P = 5,000) would be split.

    python benchmarks/bench_distributed.py                    # N = 150, P = 2,000, R = 2
    python benchmarks/bench_distributed.py --images 600 --patterns 8000 --ranks 2

Writes ``benchmarks/results/distributed.json`` and ``.png``. On a 2-core machine two ranks of one
thread each compete with everything else on it: read the ratios with the load average reported.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
MRI = {"slices": 1741, "examples_per_slice": 2, "H": 80, "W": 80, "d": 49, "P": 5000}


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def worker(a: argparse.Namespace) -> None:
    """One run (one process, or one rank under torchrun); rank 0 writes ``a.out``."""
    import torch

    import convexdual as cd
    from convexdual.data.mnist import load_bundled_mnist
    from convexdual.distributed import build_sharded_problem, init_from_env, shard_images

    torch.set_num_threads(a.threads)
    comm = init_from_env(timeout_s=600)
    split = load_bundled_mnist(a.images, 100, seed=a.seed)
    clean = split.train
    noisy = clean + a.sigma * np.random.default_rng(a.seed + 1).standard_normal(clean.shape)
    nl, cl = shard_images(comm, noisy, clean)
    t = time.perf_counter()
    problem = build_sharded_problem(nl, cl, 3, 1.0, comm=comm, num_patterns=a.patterns, seed=a.seed)
    build_s = time.perf_counter() - t
    passes = []
    for _ in range(3):
        comm.barrier()
        t = time.perf_counter()
        G = problem.engine.adjoint(problem.y)
        passes.append(time.perf_counter() - t)
    beta = a.beta_frac * float(np.sqrt((G * G).sum(axis=1)).max())
    problem = dataclasses.replace(problem, beta=beta)
    comm.barrier()
    t = time.perf_counter()
    res = cd.solve(problem, "active_set")
    solve_s = time.perf_counter() - t
    peaks = [float(p[0]) for p in comm.gather(np.array([_peak_mb()]))]
    rows = [int(r[0]) for r in comm.gather(np.array([problem.n], dtype=np.int64))]
    if comm.is_root:
        c = res.certificate
        out = {"ranks": comm.world, "threads_per_rank": a.threads, "N": a.images, "P": problem.P,
               "n": int(sum(rows)), "rows_per_rank": rows, "d": problem.d, "beta": beta,
               "build_s": build_s, "adjoint_pass_s": float(np.median(passes)), "adjoint_passes_s": passes,
               "solve_s": solve_s, "status": res.status.value, "objective": res.objective,
               "relative_gap": c.relative_gap, "violation": c.max_violation, "neurons": res.num_groups,
               "rounds": res.iterations, "projections": res.info.get("projections"),
               "peak_rss_mb_per_rank": peaks, "load_average_end": os.getloadavg()}
        Path(a.out).write_text(json.dumps(out))


def _launch(a: argparse.Namespace, ranks: int, out: Path) -> dict:
    args = [str(Path(__file__).resolve()), "--worker", "--out", str(out), "--images", str(a.images), "--patterns",
            str(a.patterns), "--sigma", str(a.sigma), "--beta-frac", str(a.beta_frac), "--seed", str(a.seed),
            "--threads", str(a.threads)]
    if ranks == 1:
        cmd = [sys.executable, *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
               "--max-restarts=0", *args]
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads)}
    t = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"run with {ranks} rank(s) failed:\n{p.stderr[-4000:]}")
    rec = json.loads(out.read_text())
    rec["wall_s"] = time.perf_counter() - t
    return rec


def _mri_plan(one: dict, many: dict) -> dict:
    """How the paper's CS-MRI problem would be split, from the measured per-rank rates and memory."""
    n = MRI["slices"] * MRI["examples_per_slice"] * MRI["H"] * MRI["W"]
    d, P = MRI["d"], MRI["P"]
    # one adjoint pass touches n x P x d; the measured rate of one rank (rows * patterns * d per second)
    rate = one["n"] * one["P"] * one["d"] / one["adjoint_pass_s"]
    eff = (one["adjoint_pass_s"] / many["adjoint_pass_s"]) / many["ranks"]  # parallel efficiency measured here

    def row_bytes(dd: int, outer: bool) -> float:  # inputs, y, xnorm, X and one copy (Xnz), the (n, d^2) table
        return 8.0 * (3 + 2 * dd + (dd * dd if outer else 0))

    # what the measured peak holds beyond the per-row arrays: the budget-bounded caches (masks, operator
    # batches, scan blocks) and the interpreter; treated as a constant per rank
    fixed_mb = max(many["peak_rss_mb_per_rank"]) - max(many["rows_per_rank"]) * row_bytes(many["d"], True) / 2**20
    plans = []
    for ranks in (8, 16, 32, 64, 128):
        rows = n / ranks
        plans.append({"ranks": ranks, "rows_per_rank": int(rows),
                      "X_per_rank_gib": rows * d * 8 / 2**30,
                      # at d = 49 the (n, d^2) table is over active_set's Gram budget and is not built
                      "est_memory_per_rank_gib": (fixed_mb + rows * row_bytes(d, False) / 2**20) / 1024,
                      "est_adjoint_pass_s": rows * P * d / (rate * max(eff, 1e-3))})
    return {"problem": {**MRI, "n": n}, "measured_rate_rows_patterns_d_per_s_per_rank": rate,
            "measured_parallel_efficiency": eff, "plans": plans,
            "fixed_mb_per_rank_measured": fixed_mb,
            "note": ("estimates, not measurements: the pass time is one rank's measured adjoint rate (rows x "
                     "patterns x d per second, at d = 9) scaled to n x P x d and divided by the measured 2-rank "
                     "efficiency; memory = the per-row arrays at d = 49 (inputs, y, norms, X and one copy) plus "
                     "the rest of the measured peak (caches bounded by the memory budget, interpreter) as a "
                     "constant; the restricted programs, the scans' exact projections and the number of rounds "
                     "are not in these estimates")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=150)
    ap.add_argument("--patterns", type=int, default=2000)
    ap.add_argument("--sigma", type=float, default=0.5)
    ap.add_argument("--beta-frac", type=float, default=0.02)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch/BLAS threads of every rank (and of the one process)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS / "distributed.json")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        worker(a)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        one = _launch(a, 1, Path(tmp) / "one.json")
        print(f"1 rank : pass {one['adjoint_pass_s']:.3f}s, solve {one['solve_s']:.1f}s, {one['status']}, "
              f"objective {one['objective']:.10g}, peak {one['peak_rss_mb_per_rank']} MB", flush=True)
        many = _launch(a, a.ranks, Path(tmp) / "many.json")
        print(f"{a.ranks} ranks: pass {many['adjoint_pass_s']:.3f}s, solve {many['solve_s']:.1f}s, {many['status']}, "
              f"objective {many['objective']:.10g}, peak {many['peak_rss_mb_per_rank']} MB", flush=True)
    rel = abs(many["objective"] - one["objective"]) / abs(one["objective"])
    report = {"benchmark": "distributed", "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
              "settings": {k: v for k, v in vars(a).items() if k not in ("out", "worker")},
              "runs": [one, many],
              "ratios": {"adjoint_pass_speedup": one["adjoint_pass_s"] / many["adjoint_pass_s"],
                         "solve_speedup": one["solve_s"] / many["solve_s"],
                         "peak_memory_per_rank_ratio": max(many["peak_rss_mb_per_rank"]) / one["peak_rss_mb_per_rank"][0],
                         "objective_relative_difference": rel},
              "mri_paper_size_plan": _mri_plan(one, many)}
    from convexdual._io import atomic_write_json

    a.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(a.out, report)
    _figure(report, a.out.with_suffix(".png"))
    print(json.dumps(report["ratios"], indent=1))
    return 0


def _figure(report: dict, path: Path) -> None:
    from convexdual import plotting

    one, many = report["runs"]
    fig, axes = plotting.new_figure(1, 3, size=(13, 4))
    axes = axes[0]
    labels = ["1 process", f"{many['ranks']} ranks (torchrun, gloo)"]
    for ax, key, unit, title in ((axes[0], "adjoint_pass_s", "seconds", "one reduced adjoint pass"),
                                 (axes[1], "solve_s", "seconds", "certified solve (active_set)")):
        vals = [one[key], many[key]]
        ax.bar(labels, vals, color=["tab:gray", "tab:blue"])
        ax.set_ylabel(unit)
        ax.set_title(f"{title}: {vals[0] / vals[1]:.2f}x")
    axes[2].bar(["1 process"] + [f"rank {r}" for r in range(many["ranks"])],
                [one["peak_rss_mb_per_rank"][0]] + many["peak_rss_mb_per_rank"], color=["tab:gray"] + ["tab:blue"] * many["ranks"])
    axes[2].set_ylabel("peak resident memory (MB)")
    axes[2].set_title("peak memory per process")
    plotting.set_title(fig, "data-parallel certified solve, 1 process vs torchrun (gloo, CPU)",
                       f"{one['N']} real MNIST digits 28x28 (n = {one['n']:,} patch rows), P = {one['P']:,} sampled "
                       f"patterns, k = 3, {one['threads_per_rank']} thread(s) per process; objectives agree to "
                       f"{report['ratios']['objective_relative_difference']:.1e} (relative); load average at the end "
                       f"{many['load_average_end'][0]:.1f}")
    plotting.save(fig, path)


if __name__ == "__main__":
    sys.exit(main())
