"""``convexdual solve`` (train through program (4)) and ``convexdual solvers`` (what can run here)."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["add_parser", "add_solve_parser", "add_solvers_parser", "OUTPUTS"]

# Every file `solve` writes into --out (an earlier run's are refused, or removed with --overwrite).
OUTPUTS = ("result.json", "network.pt", "dual_weights.npz", "train.npz")


def add_parser(sub) -> None:
    """Register both ``solve`` and ``solvers``."""
    add_solve_parser(sub)
    add_solvers_parser(sub)


def add_solve_parser(sub) -> None:
    from convexdual.cli import COMMANDS

    p = sub.add_parser("solve", help=COMMANDS["solve"].help,
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Build program (4), solve it, recover the CNN (eq. 5), certify the gap, and save "
                                   "network.pt, result.json, dual_weights.npz and the training pair train.npz "
                                   "(noisy/clean, for `convexdual certify`) into --out.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", type=Path, help=".npz with arrays noisy/clean, or .npy of clean images")
    src.add_argument("--digits", type=int, default=10, help="use this many bundled sklearn digits (8x8)")
    p.add_argument("--crop", type=int, default=None,
                   help="keep only the central CROP x CROP window of every image (exact enumeration needs tiny "
                        "data: --digits 1 --crop 3 has at most 512 sign patterns)")
    p.add_argument("--noise", choices=["gaussian", "exponential"], default="gaussian",
                   help="noise model when the file has no 'noisy' array (and for --digits)")
    p.add_argument("--sigma", type=float, default=0.5, help="noise level")
    p.add_argument("--kernel-size", type=int, default=3)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--beta", type=float, help="weight decay beta of (2)")
    g.add_argument("--beta-fraction", type=float, default=0.02,
                   help="beta = fraction * max_i ||X^T D_i y|| (used when --beta is not given)")
    p.add_argument("--patterns", default="100",
                   help="number of sampled sign patterns, 'enumerate' for the exact arrangement (tiny data, see "
                        "--crop), or 'generate' (column generation from 8 sampled patterns; give --beta, as "
                        "beta_max over 8 patterns is small)")
    p.add_argument("--max-patterns", type=int, default=4096,
                   help="with --patterns enumerate: refuse arrangements whose size bound exceeds this")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--loss", choices=["squared", "absolute", "huber"], default="squared")
    p.add_argument("--huber-delta", type=float, default=1.0)
    p.add_argument("--residual", action="store_true", help="skip connection: learn clean - noisy")
    p.add_argument("--solver", default="auto", help="auto (active_set for the squared loss; other losses: MOSEK if licensed, else Clarabel), "
                        "clarabel, active_set, clarabel-ws, mosek, scs, ... (see 'convexdual solvers')")
    p.add_argument("--tol", type=float, default=None, help="solver tolerance (solver default if omitted)")
    p.add_argument("--time-limit", type=float, default=None, help="solver time limit in seconds")
    p.add_argument("--solver-log", action="store_true", help="show the solver's own iteration log")
    p.add_argument("--device", default="cpu",
                   help="where the operator passes, the solver's scans and the recovered net run (cpu, cuda, "
                        "cuda:N); cone projections and restricted programs stay on the CPU")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="write the solver's checkpoint here every round (solvers with checkpoints: active_set, "
                        "fista, augmented_lagrangian, adam_hinge)")
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint (same problem and solver)")
    p.add_argument("--out", type=Path, default=Path("runs/solve"), help="output folder")
    p.epilog = ("Under torchrun (e.g. torchrun --standalone --nproc_per_node=2 -m convexdual solve ...) the images are "
                "sharded over the ranks and solved by active_set with torch.distributed (gloo; see docs/distributed.md); "
                "rank 0 writes the outputs.")
    p.set_defaults(func=run)


def add_solvers_parser(sub) -> None:
    from convexdual.cli import COMMANDS

    s = sub.add_parser("solvers", help=COMMANDS["solvers"].help)
    s.set_defaults(func=run_solvers)


def run_solvers(args) -> int:
    import convexdual as cd

    for name, state in cd.available_solvers().items():
        print(f"{name:>24} : {state}")
    return 0


def _crop(images: np.ndarray, size: int, name: str) -> np.ndarray:
    """The central ``size x size`` window of ``(N, [C,] H, W)`` images."""
    H, W = images.shape[-2:]
    if isinstance(size, bool) or size < 1 or size > min(H, W):
        raise ValueError(f"--crop must be between 1 and the image size {min(H, W)} ({name} is {H}x{W}); got {size}")
    top, left = (H - size) // 2, (W - size) // 2
    return np.ascontiguousarray(images[..., top : top + size, left : left + size])


def _progress(fn: Any, args) -> dict[str, bool]:
    """``{"progress": not --quiet}`` for a function that takes ``progress`` (the core adds bars step by step)."""
    if "progress" in inspect.signature(fn).parameters:
        return {"progress": bool(getattr(args, "progress", True))}
    return {}


def _patterns(cd: Any, noisy: np.ndarray, args) -> Any:
    choice = str(args.patterns).lower()
    if choice == "enumerate":
        if args.max_patterns < 1:
            raise ValueError(f"--max-patterns must be >= 1, got {args.max_patterns}")
        try:
            return cd.enumerate_patterns(noisy, args.kernel_size, max_patterns=args.max_patterns,
                                         **_progress(cd.enumerate_patterns, args))
        except ValueError as exc:
            if "refused" not in str(exc):
                raise
            raise ValueError(f"{exc}. On the command line: crop the images (e.g. --digits 1 --crop 3: at most 512 "
                             "patterns), raise --max-patterns, or sample (--patterns 100)") from None
    if choice == "generate":  # the initial set of pattern generation
        return cd.sample_patterns(noisy, args.kernel_size, 8, seed=args.seed, **_progress(cd.sample_patterns, args))
    try:
        num = int(args.patterns)
    except ValueError:
        raise ValueError(f"--patterns must be an integer, 'enumerate' or 'generate'; got {args.patterns!r}") from None
    return cd.sample_patterns(noisy, args.kernel_size, num, seed=args.seed, **_progress(cd.sample_patterns, args))


def _sharded_problem(comm: Any, noisy: np.ndarray, clean: np.ndarray, args) -> tuple[Any, float]:
    """This rank's shard of program (4) under torchrun (sampled patterns, squared loss), and beta."""
    from convexdual.distributed import build_sharded_problem, shard_images

    try:
        num = int(args.patterns)
    except ValueError:
        raise ValueError(f"under torchrun --patterns must be a number of sampled patterns, got {args.patterns!r} "
                         "('enumerate' and 'generate' run in one process)") from None
    if args.loss != "squared":
        raise ValueError(f"under torchrun the loss must be 'squared' (the sharded solver is active_set), got {args.loss!r}")
    nl, cl = shard_images(comm, np.asarray(noisy), np.asarray(clean))
    problem = build_sharded_problem(nl, cl, args.kernel_size, 1.0 if args.beta is None else args.beta, comm=comm,
                                    num_patterns=num, seed=args.seed, residual=args.residual)
    if args.beta is None:  # beta_max over every rank's images: one reduced operator pass
        G = problem.engine.adjoint(problem.y)
        beta = args.beta_fraction * float(np.sqrt((G * G).sum(axis=1)).max())
        problem = dataclasses.replace(problem, beta=beta)
    return problem, float(problem.beta)


def run(args) -> int:
    import convexdual as cd
    from convexdual._io import atomic_save_npz, atomic_write_json
    from convexdual.api import make_options, resolve_solver
    from convexdual.cli import prepare_output_folder
    from convexdual.data import add_noise, load_digits_dataset
    from convexdual.data.arrays import load_pair

    from convexdual.distributed import in_torchrun, init_from_env

    comm = init_from_env() if in_torchrun() else None
    root = comm is None or comm.is_root
    quiet = not getattr(args, "progress", True) or not root

    def say(msg: str) -> None:
        if not quiet:
            print(msg, flush=True)

    t_start = time.perf_counter()
    from convexdual._validation import check_device

    check_device(args.device)  # before any work
    if args.resume and args.checkpoint is None:
        raise ValueError("--resume needs --checkpoint PATH (the file an earlier run wrote)")
    out = (prepare_output_folder(args.out, OUTPUTS, overwrite=getattr(args, "overwrite", False) or args.resume,
                                 command="solve") if root else Path(args.out))
    say("[convexdual] loading data")
    if args.data is not None:
        noisy, clean = load_pair(args.data, noise=args.noise, level=args.sigma, seed=args.seed)
        source = str(args.data)
    else:
        if isinstance(args.digits, bool) or args.digits < 1:
            raise ValueError(f"--digits must be >= 1 (how many bundled 8x8 digits to use), got {args.digits}")
        clean = load_digits_dataset(args.digits, 0, seed=args.seed).train
        noisy = add_noise(clean, args.noise, args.sigma, seed=args.seed + 1)
        source = f"sklearn digits x{args.digits} (seed {args.seed}, {args.noise} noise {args.sigma})"
    if args.crop is not None:
        noisy, clean = _crop(np.asarray(noisy), args.crop, "noisy"), _crop(np.asarray(clean), args.crop, "clean")
        source += f", central {args.crop}x{args.crop} crop"
    t = time.perf_counter()
    say(f"[convexdual] sign patterns ({args.patterns})")
    if comm is not None:
        problem, beta = _sharded_problem(comm, noisy, clean, args)
        patterns = problem.patterns
    else:
        patterns = _patterns(cd, noisy, args)
        beta = args.beta
        if beta is None:
            beta = args.beta_fraction * cd.beta_max(noisy, clean, args.kernel_size, patterns, residual=args.residual,
                                                    **_progress(cd.beta_max, args))
        problem = cd.build_problem(noisy, clean, args.kernel_size, beta, patterns=patterns, loss=args.loss,
                                   **_progress(cd.build_problem, args),
                                   huber_delta=args.huber_delta, residual=args.residual)
    say(f"  {len(patterns)} distinct patterns ({patterns.source}) in {time.perf_counter() - t:.2f}s")
    backend, note = resolve_solver(args.solver, problem)
    if note:  # e.g. "auto" without a MOSEK licence: said once, on stderr, even with --quiet
        print(f"convexdual solve: note: {note}", file=sys.stderr, flush=True)
    fields = {f.name for f in dataclasses.fields(backend.options_class)}
    changes: dict[str, Any] = {}
    for name, value in (("verbose", args.solver_log), ("progress", not quiet)):
        if name in fields:
            changes[name] = value
    if args.tol is not None:
        changes["tol"] = args.tol  # a solver without the option refuses it, naming its options
    if args.time_limit is not None:
        changes["time_limit"] = args.time_limit
    if args.checkpoint is not None:  # a solver without checkpoints refuses them, naming its options
        changes["checkpoint_path"] = str(args.checkpoint)
        if args.resume:
            changes["resume_from"] = str(args.checkpoint)
    options = make_options(backend, None, **changes)
    say(f"[convexdual] solving (4) with {backend.name}: n={problem.n}, d={problem.d}, P={problem.P}, beta={beta:.6g}")
    if str(args.patterns).lower() == "generate":
        from convexdual.pattern_generation import generate_patterns

        gen = generate_patterns(problem, solver=backend.name, solver_options=options,
                                **_progress(generate_patterns, args))
        say(gen.summary())
        result, problem, patterns = gen.result, gen.problem, gen.patterns
    else:
        result = cd.solve(problem, solver=backend.name, options=options, device=args.device,
                          **_progress(cd.solve, args))
    say(result.summary())
    if not root:  # the result is the same on every rank; rank 0 writes it
        return 0 if result.status is cd.Status.OPTIMAL else 1
    # outputs: each written atomically (temporary name in --out, then renamed)
    desc = problem.describe()
    atomic_save_npz(out / "train.npz", noisy=np.asarray(problem.inputs), clean=np.asarray(clean))
    if comm is not None:
        source += f", sharded over {comm.world} ranks (torch.distributed)"
    report: dict[str, Any] = {"data": source, "training_pair_file": "train.npz", "problem": desc,
                              "optimality": result.optimality(), "solver_note": note, "result": result.to_dict()}
    if result.network is not None:
        meta = {"beta": float(beta), "loss": args.loss, "kernel_size": int(args.kernel_size),
                "residual": bool(args.residual), "objective": float(result.objective),
                "status": result.status.value, "optimality": result.optimality(),
                "exact_patterns": bool(desc.get("exact_patterns", False)), "P": int(problem.P), "data": source,
                "training_pair_file": "train.npz"}
        if args.loss == "huber":
            meta["huber_delta"] = float(args.huber_delta)
        result.network.save(out / "network.pt", metadata=meta)
        report["network_file"] = "network.pt"
        report["certify_command"] = shlex.join(["convexdual", "certify", "--net", str(out / "network.pt"),
                                                "--data", str(out / "train.npz"),
                                                "--out", str(out / "certificate.json")])
    atomic_save_npz(out / "dual_weights.npz", compressed=True,
                    W=result.W if result.W is not None else np.zeros(0),
                    Z=result.Z if result.Z is not None else np.zeros(0), gates=patterns.gates)
    atomic_write_json(out / "result.json", report)
    say(f"[convexdual] wrote {out}/: result.json, {'network.pt, ' if result.network is not None else ''}"
        "dual_weights.npz, train.npz (the training pair)")
    cert = result.certificate
    gap = "" if cert is None else f", relative gap {cert.relative_gap:.1e}"
    print(f"solve: {result.optimality()}; objective {result.objective:.10g}{gap}, {result.num_groups} neurons, "
          f"{time.perf_counter() - t_start:.1f}s -> {out}/", flush=True)
    if "certify_command" in report:
        print(f"check whether the network is a global optimum of (2) with: {report['certify_command']}", flush=True)
    return 0 if result.status is cd.Status.OPTIMAL else 1
