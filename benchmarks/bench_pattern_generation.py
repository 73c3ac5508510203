"""Pattern generation (column generation) vs random sign-pattern sampling, one run.

Instance: the bundled sklearn digits (8x8, normalised), Gaussian noise sigma = 0.5,
k = 3, ``beta = 0.02 * beta_max`` with beta_max over the reference pattern set.

* **reference**: the optimum of (4) over ``--reference-patterns`` (8,000) random
  Gaussian-gate patterns. Plain Clarabel cannot hold that program here (``2 P n`` cone
  rows); it is solved exactly with the working-set solver ``clarabel-ws`` and certified
  by the duality gap over all 8,000 patterns (``cd.solve``'s certificate).
* **generation**: :func:`convexdual.pattern_generation.generate_patterns` from 8
  random patterns, inner solver ``clarabel-ws``, recorded per round (patterns, objective,
  time). Reported: the first round whose objective is within ``1e-4`` relative of the
  reference (or below it), with its pattern count and elapsed time, and the final state.
* **random at the same size**: (4) over as many random patterns as generation used at
  that round (same solver), to compare like with like.

Writes ``benchmarks/results/pattern_generation.json`` and a PNG. Usage::

    python benchmarks/bench_pattern_generation.py               # 10 digits, 8,000-pattern reference
    python benchmarks/bench_pattern_generation.py --smoke       # seconds; checks the script runs
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # shared 2-core machine
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

import convexdual as cd  # noqa: E402
from convexdual.data import add_noise, load_digits_dataset  # noqa: E402
from convexdual.pattern_generation import GenerationOptions, generate_patterns  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def _solve(problem, solver: str) -> dict:
    t = time.perf_counter()
    res = cd.solve(problem, solver=solver)
    secs = time.perf_counter() - t
    cert = res.certificate
    return {"patterns": problem.P, "objective": float(res.objective), "status": res.status.value,
            "seconds": secs, "solve_seconds": res.timings.solve,
            "relative_gap": None if cert is None else cert.relative_gap,
            "max_violation": None if cert is None else cert.max_violation,
            "neurons": res.num_groups, "message": res.message}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=10)
    ap.add_argument("--sigma", type=float, default=0.5)
    ap.add_argument("--reference-patterns", type=int, default=8000)
    ap.add_argument("--initial-patterns", type=int, default=8)
    ap.add_argument("--per-round", type=int, default=16)
    ap.add_argument("--max-rounds", type=int, default=40)
    ap.add_argument("--time-limit", type=float, default=1500.0, help="seconds for the generation loop")
    ap.add_argument("--solver", default="clarabel-ws")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.smoke:
        args.images, args.reference_patterns, args.max_rounds, args.time_limit = 3, 300, 6, 120.0
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    out = args.out or RESULTS / ("pattern_generation_smoke.json" if args.smoke else "pattern_generation.json")
    out.parent.mkdir(parents=True, exist_ok=True)

    clean = load_digits_dataset(args.images, 0, seed=0).train
    noisy = add_noise(clean, "gaussian", args.sigma, seed=1)
    ref_pats = cd.sample_patterns(noisy, 3, args.reference_patterns, seed=0)
    beta = 0.02 * cd.beta_max(noisy, clean, 3, ref_pats)
    print(f"n = {noisy.size}, beta = {beta:.6g}, reference: {len(ref_pats)} distinct random patterns", flush=True)

    # generation first (its rounds tell which random sizes to compare with)
    t = time.perf_counter()
    start = cd.build_problem(noisy, clean, 3, beta, num_patterns=args.initial_patterns, seed=0)
    gen = generate_patterns(start, solver=args.solver, options=GenerationOptions(
        max_rounds=args.max_rounds, patterns_per_round=args.per_round, time_limit=args.time_limit, seed=0),
        callback=lambda r: print(f"  round {r['round']:>2}: P = {r['patterns']:>4}, objective {r['objective']:.10g}, "
                                 f"max ratio {r['max_ratio']:.5g}, +{r['added']} ({r['elapsed']:.0f} s)", flush=True))
    gen_secs = time.perf_counter() - t
    print(gen.summary(), flush=True)
    final = {"patterns": gen.num_patterns, "objective": float(gen.result.objective),
             "status": gen.result.status.value, "converged": gen.converged, "message": gen.message,
             "seconds": gen_secs, "neurons": gen.result.num_groups,
             "relative_gap": None if gen.result.certificate is None else gen.result.certificate.relative_gap}

    print("reference solve ...", flush=True)
    ref = _solve(cd.build_problem(noisy, clean, 3, beta, patterns=ref_pats), args.solver)
    print(f"reference: {ref}", flush=True)
    target = ref["objective"] * (1 + 1e-4)
    hit = next((r for r in gen.rounds if r["objective"] <= target), None)
    if hit is None and final["objective"] <= target:
        hit = {"round": len(gen.rounds), "patterns": final["patterns"], "objective": final["objective"],
               "elapsed": gen_secs}
    compare_sizes = sorted({gen.num_patterns} | ({hit["patterns"]} if hit else set()))
    random_same = []
    for P in compare_sizes:
        pats = cd.sample_patterns(noisy, 3, P, seed=1)
        random_same.append(_solve(cd.build_problem(noisy, clean, 3, beta, patterns=pats), args.solver))
        print(f"random {P}: {random_same[-1]}", flush=True)

    report = {
        "instance": {"images": args.images, "n": int(noisy.size), "d": 9, "sigma": args.sigma, "kernel_size": 3,
                     "beta": beta, "beta_rule": "0.02 * beta_max over the reference patterns"},
        "solver": args.solver,
        "reference": {**ref, "requested": args.reference_patterns},
        "generation": {"rounds": list(gen.rounds), "final": final, "initial_patterns": args.initial_patterns,
                       "per_round": args.per_round},
        "first_within_1e-4": None if hit is None else {
            "round": hit["round"], "patterns": hit["patterns"], "objective": hit["objective"],
            "elapsed_seconds": hit["elapsed"],
            "relative_to_reference": (hit["objective"] - ref["objective"]) / abs(ref["objective"]),
            "pattern_ratio": ref["patterns"] / hit["patterns"]},
        "final_relative_to_reference": (final["objective"] - ref["objective"]) / abs(ref["objective"]),
        "random_same_size": random_same,
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": args.threads,
                    "note": "shared 2-core machine; times are upper bounds"},
    }
    out.write_text(json.dumps(report, indent=2, default=str))
    print(f"wrote {out}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot([r["patterns"] for r in gen.rounds], [r["objective"] for r in gen.rounds], "o-",
                label="pattern generation (per round)")
        ax.axhline(ref["objective"], color="k", ls="--", label=f"optimum over {ref['patterns']} random patterns")
        ax.plot([r["patterns"] for r in random_same], [r["objective"] for r in random_same], "s", color="C3",
                label="random patterns, same count")
        ax.set_xscale("log")
        ax.set_xlabel("sign patterns in (4)")
        ax.set_ylabel("objective of (4)")
        ax.set_title(f"digits x{args.images}, sigma {args.sigma}, beta {beta:.3g}")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out.with_suffix(".png"), dpi=120)
    except Exception as exc:  # the JSON is the result; a plot failure must not lose it
        print(f"plot skipped: {exc}")


if __name__ == "__main__":
    main()
