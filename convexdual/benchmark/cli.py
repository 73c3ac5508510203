"""``convexdual benchmark``: the command (argument parsing only; the work is in :mod:`.runner`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    from convexdual.benchmark.instances import SUITES

    p = sub.add_parser("benchmark", help="benchmark every available solver on a standard instance suite (profiles, summary.md)",
                       description="Run every available solver (ours, the CVXPY backends, pyscnn when installed, "
                       "the paper's Adam + hinge) on a suite of named instances of program (4) under one time "
                       "budget; write time-to-accuracy curves, Dolan-More profiles, JSON and summary.md.")
    p.add_argument("--suite", choices=list(SUITES), default="small",
                   help="small: a few minutes on 2 cores; full: about 20-25 minutes")
    p.add_argument("--instances", nargs="+", metavar="NAME", help="a subset of the instances (names or a "
                   "comma-separated list; --list shows them)")
    p.add_argument("--solvers", nargs="+", metavar="NAME", help="a subset of the solvers (--list shows them)")
    p.add_argument("--time-limit", type=float, default=None, metavar="S",
                   help="seconds per (instance, solver) (default: small 5, full 15)")
    p.add_argument("--device", default="cpu", help="torch device of the torch solvers (cpu, cuda, ...)")
    p.add_argument("--threads", type=int, default=1, help="BLAS / torch threads of each solver (default 1)")
    p.add_argument("--out", type=Path, default=Path("benchmark-results"), help="output folder")
    p.add_argument("--references", type=Path, default=None,
                   help="folder of stored reference optima (default OUT/references; shared between runs)")
    p.add_argument("--resume", action="store_true", help="reuse finished (instance, solver) cells in OUT")
    p.add_argument("--in-process", action="store_true",
                   help="run cells in this process (no hard time limit or memory cap)")
    p.add_argument("--list", action="store_true", help="list the suites, instances and solvers, then exit")
    p.set_defaults(func=run)
    return p


def _list() -> int:
    from convexdual.benchmark.instances import INSTANCES, SUITES
    from convexdual.benchmark.runner import solver_availability

    for name, members in SUITES.items():
        print(f"suite {name}: {', '.join(members)}")
    print("instances:")
    for name, spec in INSTANCES.items():
        print(f"  {name:34s} {spec.description}")
    print("solvers:")
    for name, why in solver_availability().items():
        print(f"  {name:22s} {why}")
    return 0


def run(args: argparse.Namespace) -> int:
    from convexdual.benchmark.report import OUTPUTS
    from convexdual.benchmark.runner import resolve_instances, resolve_solvers, run_benchmark
    from convexdual.cli import prepare_output_folder

    if args.list:
        return _list()
    resolve_instances(args.suite, args.instances)  # bad names: an error before any work
    resolve_solvers(args.solvers)
    if args.time_limit is not None and not args.time_limit > 0:
        raise ValueError(f"--time-limit must be > 0 seconds, got {args.time_limit}")
    out = Path(args.out)
    if not args.resume:
        cells = out / "cells"
        earlier = [n for n in OUTPUTS if (out / n).exists()] + (
            ["cells/"] if cells.is_dir() and any(cells.rglob("*.json")) else [])
        if earlier and not args.overwrite:
            raise FileExistsError(f"--out {out} holds an earlier run ({', '.join(earlier)}); give --resume to reuse "
                                  "its finished cells, --overwrite to run everything again, or another folder")
        prepare_output_folder(out, OUTPUTS, overwrite=args.overwrite, command="benchmark")
        for f in (cells.rglob("*.json") if cells.is_dir() else ()):
            f.unlink()  # --overwrite: the earlier cells go too (stored references are kept)
    log = (lambda s: None) if getattr(args, "quiet", False) else (lambda s: print(s, file=sys.stderr, flush=True))
    report = run_benchmark(args.suite, instances=args.instances, solvers=args.solvers, time_limit=args.time_limit,
                           device=args.device, out=out, resume=args.resume, references=args.references,
                           isolate=not args.in_process, threads=args.threads, log=log)
    n = sum(len(r) for r in report["cells"].values())
    print(f"benchmark: {len(report['cells'])} instances, {n} cells in {report['wall_seconds']:.0f} s; "
          f"{len(report['status_violations'])} status violation(s); outputs in {out}/ (summary.md)")
    return 1 if report["status_violations"] else 0
