"""Benchmark of the pattern operator and the torch solvers (issue 3).

Parts (``--part``):
* ``pass``: memory bandwidth (numpy/torch copy) and seconds per full fused pass
  (forward + adjoint) at the paper's MNIST scale (600 x 28x28, k = 3, P = 8,000;
  random data), for the numba and torch backends. The bound is one read of n*P float32.
* ``solvers``: on identical instances in one run (5 digits / P = 20 and 20 digits 8x8 /
  P = 100; k = 3, sigma 0.5, beta = 0.02 beta_max): plain Clarabel (CVXPY; its optimum is
  the reference), clarabel-ws, active_set, fista (gated relaxation: a lower-bound method),
  adam_hinge, primal Adam (``train_primal``, objective (2)), and pyscnn's augmented
  Lagrangian and R-FISTA when ``pyscnn`` is installed. Times to 1e-3 and 1e-6 relative
  suboptimality; JSON + PNG (see :mod:`bench_solvers`).

Usage: OPENBLAS_NUM_THREADS=1 python benchmarks/bench_first_order.py --part pass --rows-fraction 1
       OPENBLAS_NUM_THREADS=1 python benchmarks/bench_first_order.py --part solvers
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).parent / "results"


def bandwidth() -> dict:
    a = np.ones(2**27)  # 1 GiB
    b = np.empty_like(a)
    best_copy = 0.0
    for _ in range(4):
        t = time.perf_counter(); np.copyto(b, a); dt = time.perf_counter() - t
        best_copy = max(best_copy, 2 * a.nbytes / dt / 1e9)
    ta = torch.from_numpy(a)
    best_read = 0.0
    for _ in range(4):
        t = time.perf_counter(); ta.sum(); dt = time.perf_counter() - t
        best_read = max(best_read, a.nbytes / dt / 1e9)
    return {"numpy_copy_GBps_read_plus_write": best_copy, "torch_sum_read_GBps": best_read}


def full_pass(frac: int, threads: int) -> dict:
    from convexdual.operators import PatternOperator

    N, H, P, k = 600 // frac, 28, 8000, 3
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, 1, H, H)).astype(np.float32)
    gates = rng.standard_normal((P, k * k))
    V = 0.01 * rng.standard_normal((P, k * k))
    y = rng.standard_normal(N * H * H)
    out = {"N": N, "scale_factor_to_600": frac, "P": P, "threads": threads}
    for backend in ("numba", "torch"):
        op = PatternOperator(x, k, gates, dtype=torch.float32, backend=backend, memory_budget_mb=256,
                             num_threads=threads if backend == "numba" else None)
        Vt = torch.as_tensor(V, dtype=torch.float32)
        rt = torch.as_tensor(y, dtype=torch.float32)
        calls = {"full_pass": lambda: op.gradient_sq(V, y),  # forward + adjoint, fused: one gradient
                 "forward": lambda: op.forward(Vt),          # one application of sum_i D_i X v_i
                 "adjoint": lambda: op.adjoint(rt)}          # one application of (X^T D_i r)_i
        for what, call in calls.items():
            call()  # compile / warm up
            times = []
            for _ in range(2):
                t = time.perf_counter(); call(); times.append(time.perf_counter() - t)
            out[f"{backend}_seconds_per_{what}_at_600_images"] = min(times) * frac
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=["pass", "solvers"], default="pass")
    ap.add_argument("--rows-fraction", type=int, default=1, help="run 600/F images and scale the time by F")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--adam-seconds", type=float, default=60.0, help="time budget of each Adam baseline (main instance)")
    ap.add_argument("--quick", action="store_true", help="small instance only (smoke run)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    OUT.mkdir(parents=True, exist_ok=True)
    if a.part == "pass":
        bw = bandwidth()
        fp = full_pass(a.rows_fraction, a.threads)
        n_p = 600 * 784 * 8000
        bound = n_p * 4 / 1e9 / max(bw.values())
        res = {"bandwidth": bw, "pass": fp, "bound_seconds_one_read_nP_float32": bound,
               "ratio_numba_to_bound": fp["numba_seconds_per_full_pass_at_600_images"] / bound,
               "ratio_torch_to_bound": fp["torch_seconds_per_full_pass_at_600_images"] / bound,
               "note": "full_pass = one gradient (forward + adjoint, fused); forward / adjoint = one "
                       "application of the operator each; the bound is one read of n*P float32 values"}
        for b in ("numba", "torch"):
            for what in ("forward", "adjoint"):
                res[f"ratio_{b}_{what}_to_bound"] = fp[f"{b}_seconds_per_{what}_at_600_images"] / bound
        (OUT / "operator_pass.json").write_text(json.dumps(res, indent=2))
        print(json.dumps(res, indent=2))
    else:
        import sys

        sys.path.insert(0, str(Path(__file__).parent))
        from bench_solvers import run_solvers

        run_solvers(OUT, adam_seconds=a.adam_seconds, quick=a.quick)


if __name__ == "__main__":
    main()
