"""``convexdual solve`` (train through program (4)) and ``convexdual solvers`` (what can run here)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

__all__ = ["add_parser"]


def add_parser(sub) -> None:
    p = sub.add_parser("solve", help="solve program (4) on your data or the bundled digits",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Build program (4), solve it, recover the CNN (eq. 5), certify the gap, and save "
                                   "network.pt + result.json into --out.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", type=Path, help=".npz with arrays noisy/clean, or .npy of clean images")
    src.add_argument("--digits", type=int, default=10, help="use this many bundled sklearn digits (8x8)")
    p.add_argument("--noise", choices=["gaussian", "exponential"], default="gaussian",
                   help="noise model when the file has no 'noisy' array (and for --digits)")
    p.add_argument("--sigma", type=float, default=0.5, help="noise level")
    p.add_argument("--kernel-size", type=int, default=3)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--beta", type=float, help="weight decay beta of (2)")
    g.add_argument("--beta-fraction", type=float, default=0.02,
                   help="beta = fraction * max_i ||X^T D_i y|| (used when --beta is not given)")
    p.add_argument("--patterns", default="100",
                   help="number of sampled sign patterns, 'enumerate' for the exact arrangement (tiny data), or "
                        "'generate' (column generation from 8 sampled patterns; give --beta, as beta_max over 8 "
                        "patterns is small)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--loss", choices=["squared", "absolute", "huber"], default="squared")
    p.add_argument("--huber-delta", type=float, default=1.0)
    p.add_argument("--residual", action="store_true", help="skip connection: learn clean - noisy")
    p.add_argument("--solver", default="auto", help="auto (MOSEK if licensed, else Clarabel), clarabel, mosek, scs, ...")
    p.add_argument("--tol", type=float, default=None, help="solver tolerance (solver default if omitted)")
    p.add_argument("--time-limit", type=float, default=None, help="solver time limit in seconds")
    p.add_argument("--solver-log", action="store_true", help="show the solver's own iteration log")
    p.add_argument("--out", type=Path, default=Path("runs/solve"), help="output folder")
    p.set_defaults(func=run)

    s = sub.add_parser("solvers", help="list registered solvers and whether each can run here")
    s.set_defaults(func=run_solvers)


def run_solvers(args) -> int:
    import convexdual as cd

    for name, state in cd.available_solvers().items():
        print(f"{name:>24} : {state}")
    return 0


def _step(msg: str) -> float:
    print(f"[convexdual] {msg}", flush=True)
    return time.perf_counter()


def run(args) -> int:
    import dataclasses

    import convexdual as cd
    from convexdual.api import resolve_solver
    from convexdual.data import add_noise, load_digits_dataset
    from convexdual.data.arrays import load_pair

    t = _step("loading data")
    if args.data is not None:
        noisy, clean = load_pair(args.data, noise=args.noise, level=args.sigma, seed=args.seed)
        source = str(args.data)
    else:
        clean = load_digits_dataset(args.digits, 0, seed=args.seed).train
        noisy = add_noise(clean, args.noise, args.sigma, seed=args.seed + 1)
        source = f"sklearn digits x{args.digits}"
    t = _step(f"sign patterns ({args.patterns})")
    if str(args.patterns).lower() == "enumerate":
        patterns = cd.enumerate_patterns(noisy, args.kernel_size)
    elif str(args.patterns).lower() == "generate":  # the initial set of pattern generation
        patterns = cd.sample_patterns(noisy, args.kernel_size, 8, seed=args.seed)
    else:
        try:
            num = int(args.patterns)
        except ValueError:
            raise ValueError(f"--patterns must be an integer or 'enumerate', got {args.patterns!r}") from None
        patterns = cd.sample_patterns(noisy, args.kernel_size, num, seed=args.seed)
    print(f"  {len(patterns)} distinct patterns ({patterns.source}) in {time.perf_counter() - t:.2f}s")
    beta = args.beta
    if beta is None:
        beta = args.beta_fraction * cd.beta_max(noisy, clean, args.kernel_size, patterns, residual=args.residual)
    problem = cd.build_problem(noisy, clean, args.kernel_size, beta, patterns=patterns, loss=args.loss,
                               huber_delta=args.huber_delta, residual=args.residual)
    backend, note = resolve_solver(args.solver)
    if note:
        print(f"  note: {note}")
    options = backend.options_class()
    changes = {"verbose": args.solver_log}
    if args.tol is not None:
        changes["tol"] = args.tol
    if args.time_limit is not None:
        changes["time_limit"] = args.time_limit
    options = dataclasses.replace(options, **changes)
    _step(f"solving (4) with {backend.name}: n={problem.n}, d={problem.d}, P={problem.P}, beta={beta:.6g}")
    if str(args.patterns).lower() == "generate":
        from convexdual.pattern_generation import generate_patterns

        gen = generate_patterns(problem, solver=None if args.solver == "auto" else backend.name,
                                solver_options=None if args.solver == "auto" else options)
        print(gen.summary())
        result, problem, patterns = gen.result, gen.problem, gen.patterns
    else:
        result = cd.solve(problem, solver=backend.name, options=options)
    print(result.summary())
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"data": source, "problem": problem.describe(), "result": result.to_dict()}
    if result.network is not None:
        result.network.save(args.out / "network.pt", metadata={"beta": beta, "objective": result.objective,
                                                              "status": result.status.value, "data": source})
        report["network_file"] = "network.pt"
    (args.out / "result.json").write_text(json.dumps(report, indent=2))
    np.savez_compressed(args.out / "dual_weights.npz", W=result.W if result.W is not None else np.zeros(0),
                        Z=result.Z if result.Z is not None else np.zeros(0), gates=patterns.gates)
    _step(f"wrote {args.out}/result.json, network.pt, dual_weights.npz")
    return 0 if result.status is cd.Status.OPTIMAL else 1
