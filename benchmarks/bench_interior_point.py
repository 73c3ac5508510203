"""Build vs solve time of program (4) through CVXPY for every installed interior-point backend.

Instance (PERFORMANCE.md): sklearn digits 8x8 normalised, Gaussian noise sigma 0.5,
k = 3, beta = 0.02 * max_i ||X^T D_i y||, P sampled patterns. For each (images,
patterns) and solver: seconds to build the CVXPY problem, seconds inside
``Problem.solve`` (CVXPY canonicalisation + the backend), the backend's own solve
time, iterations, objective, and the certificate. Objectives are compared with
Clarabel's in the same run.

    python benchmarks/bench_interior_point.py --images 5 20 --patterns 20 100 --out benchmarks/results/interior_point.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, nargs="+", default=[5, 20])
    ap.add_argument("--patterns", type=int, nargs="+", default=[20, 100])
    ap.add_argument("--solvers", nargs="+", default=["clarabel", "ecos", "mosek", "scs"])
    ap.add_argument("--max-seconds", type=float, default=900.0,
                    help="skip a solver on larger instances once one of its solves took longer than this")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/interior_point.json"))
    args = ap.parse_args(argv)

    import torch

    import convexdual as cd
    from convexdual._registry import get_solver
    from convexdual.cvxpy_program import to_cvxpy
    from convexdual.data import add_noise, load_digits_dataset

    torch.set_num_threads(1)
    solvers = [s for s in args.solvers if get_solver(s).available()[0]]
    skipped = {s: get_solver(s).available()[1] for s in args.solvers if s not in solvers}
    rows, too_slow = [], set()
    for N in args.images:
        clean = load_digits_dataset(N, 0, seed=args.seed).train
        noisy = add_noise(clean, "gaussian", 0.5, seed=args.seed + 1)
        for P in args.patterns:
            pats = cd.sample_patterns(noisy, 3, P, seed=args.seed)
            beta = 0.02 * cd.beta_max(noisy, clean, 3, pats)
            problem = cd.build_problem(noisy, clean, 3, beta, patterns=pats)
            t0 = time.perf_counter()
            prog = to_cvxpy(problem)
            build_only = time.perf_counter() - t0
            del prog
            ref = None
            for s in solvers:
                if s in too_slow:
                    rows.append({"images": N, "n": problem.n, "P": problem.P, "solver": s, "skipped": "too slow"})
                    continue
                res = cd.solve(problem, solver=s)
                row = {
                    "images": N, "n": problem.n, "P": problem.P, "solver": s, "status": res.status.value,
                    "objective": res.objective, "iterations": res.iterations,
                    "build_s": res.timings.build, "solve_s": res.timings.solve,
                    "backend_s": res.info.get("solver_time"), "recover_s": res.timings.recover,
                    "certify_s": res.timings.certify, "cvxpy_build_only_s": build_only,
                    "relative_gap": res.certificate.relative_gap if res.certificate else None,
                    "max_violation": res.certificate.max_violation if res.certificate else None,
                    "neurons": res.num_groups,
                }
                if s == "clarabel":
                    ref = res.objective
                if ref is not None:
                    row["relative_to_clarabel"] = (res.objective - ref) / abs(ref)
                rows.append(row)
                print(json.dumps(row), flush=True)
                if res.timings.solve > args.max_seconds:
                    too_slow.add(s)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.platform(), "cpus": os.cpu_count(), "torch_threads": 1,
            "load_average": os.getloadavg(), "skipped_solvers": skipped,
            "note": "solve_s = time inside cvxpy.Problem.solve (canonicalisation + backend); "
                    "backend_s = the backend's own reported time"}
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
