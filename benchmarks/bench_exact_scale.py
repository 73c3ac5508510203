"""Exact interior-point solves of program (4) at scale: plain CVXPY + Clarabel vs clarabel-ws.

One run, same instances, same machine:

* **reference instance** (n = 1,280 = 20 digits 8x8, k = 3, Gaussian sigma 0.5,
  beta = 0.02 * beta_max, P = 100): plain ``cd.solve(problem, "clarabel")`` and
  ``cd.solve(problem, "clarabel-ws")``, totals (solve + recover + certify) and the
  solver stage alone, as ratios, with the relative objective difference.
* **ablations** (``--ablations``) on the reference instance, one idea switched off at a
  time: no group working set, no lazy rows, no Gram compression, and the plain program
  called through Clarabel directly (everything switched off, no CVXPY).
* **large instances** (``--large N:P`` ...): clarabel-ws alone, n*P >= 10x the reference,
  with rounds and working-set sizes per round.

Writes ``benchmarks/results/exact_scale.json`` (and a PNG). Usage::

    python benchmarks/bench_exact_scale.py                       # reference + one 10x instance
    python benchmarks/bench_exact_scale.py --ablations --large 200:100 100:200
    python benchmarks/bench_exact_scale.py --smoke               # seconds; checks the script runs
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # shared 2-core machine: no BLAS oversubscription
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

import convexdual as cd  # noqa: E402
from convexdual.data import add_noise, load_digits_dataset  # noqa: E402
from convexdual.solvers.working_set import WorkingSetOptions  # noqa: E402

logger = logging.getLogger("bench_exact_scale")

ABLATIONS = {
    "ws: no group working set (all 2P groups, lazy rows, Gram)": dict(init_groups=0),
    "ws: no lazy rows (group working set, every row, Gram)": dict(init_rows=0),
    "ws: no Gram compression (working sets, n-row residual)": dict(compressed=False),
    "direct Clarabel, plain program (all groups, all rows, n-row residual; no CVXPY)":
        dict(init_groups=0, init_rows=0, compressed=False),
}


def make_problem(num_images: int, num_patterns: int, sigma: float = 0.5, seed: int = 0,
                 residual: bool = False) -> cd.DualProblem:
    """The PERFORMANCE.md recipe: normalised digits, Gaussian noise, k = 3, beta = 0.02 beta_max."""
    clean = load_digits_dataset(num_images, 0, seed=seed).train
    noisy = add_noise(clean, "gaussian", sigma, seed=seed + 1)
    pats = cd.sample_patterns(noisy, 3, num_patterns, seed=seed)
    beta = 0.02 * cd.beta_max(noisy, clean, 3, pats, residual=residual)
    return cd.build_problem(noisy, clean, 3, beta, patterns=pats, residual=residual)


def run(problem: cd.DualProblem, solver: str, options=None) -> dict:
    t0 = time.perf_counter()
    res = cd.solve(problem, solver, options)
    wall = time.perf_counter() - t0
    out = res.to_dict()
    out["wall_s"] = wall
    out["history"] = [dict(h) for h in res.history]
    logger.info("%s: %s, objective %.10g, %.1f s (solve %.1f s)", solver, res.status, res.objective, wall,
                res.timings.solve)
    return out


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", default="20:100", help="reference instance N_images:P (default 20:100, n = 1,280)")
    ap.add_argument("--large", nargs="*", default=["200:100"], help="large instances N_images:P for clarabel-ws")
    ap.add_argument("--ablations", action="store_true", help="also run each idea switched off on the reference")
    ap.add_argument("--ablation-time-limit", type=float, default=600.0, help="seconds per ablation run")
    ap.add_argument("--large-time-limit", type=float, default=600.0, help="seconds for each large instance")
    ap.add_argument("--smoke", action="store_true", help="tiny instances, seconds (checks the script)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "exact_scale.json"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(1)
    if args.smoke:
        args.ref, args.large = "3:20", ["6:20"]

    def parse(spec: str) -> tuple[int, int]:
        a, b = spec.split(":")
        return int(a), int(b)

    report: dict = {
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "loadavg_start": os.getloadavg()},
        "settings": {"plain": "cd.solve(problem, 'clarabel'): CVXPY + Clarabel, tol 1e-9, faer LDL",
                     "ws": "cd.solve(problem, 'clarabel-ws') with WorkingSetOptions() defaults",
                     "ws_options": WorkingSetOptions().__dict__ | {"native": {}},
                     "times": "wall seconds of cd.solve: solve + recover + certify (certificate included)"},
    }
    # ---- reference instance: plain vs clarabel-ws -------------------------------------
    N, P = parse(args.ref)
    prob = make_problem(N, P)
    logger.info("reference: %s", prob.describe())
    ws = run(prob, "clarabel-ws")
    plain = run(prob, "clarabel")
    ref = {"instance": prob.describe(), "n_times_P": prob.n * prob.P, "plain": plain, "ws": ws,
           "speedup_total": plain["wall_s"] / ws["wall_s"],
           "speedup_solve_stage": plain["timings"]["solve"] / ws["timings"]["solve"],
           "objective_rel_diff": rel(ws["objective"], plain["objective"])}
    logger.info("reference: speedup %.1fx total, %.1fx solve stage, objective rel diff %.2e",
                ref["speedup_total"], ref["speedup_solve_stage"], ref["objective_rel_diff"])
    report["reference"] = ref
    # ---- ablations ---------------------------------------------------------------------
    if args.ablations:
        report["ablations"] = {}
        for label, kw in ABLATIONS.items():
            opts = WorkingSetOptions(time_limit=args.ablation_time_limit, **kw)
            r = run(prob, "clarabel-ws", opts)
            r["options"] = kw
            r["objective_rel_diff_vs_plain"] = rel(r["objective"], plain["objective"])
            r["time_vs_ws"] = r["wall_s"] / ws["wall_s"]
            report["ablations"][label] = r
    # ---- large instances ---------------------------------------------------------------
    report["large"] = []
    for spec in args.large:
        N, P = parse(spec)
        big = make_problem(N, P)
        logger.info("large: %s", big.describe())
        r = run(big, "clarabel-ws", WorkingSetOptions(time_limit=args.large_time_limit))
        r["instance"] = big.describe()
        r["n_times_P"] = big.n * big.P
        r["scale_vs_reference"] = big.n * big.P / (prob.n * prob.P)
        report["large"].append(r)
    report["machine"]["loadavg_end"] = os.getloadavg()
    out = Path(args.out)
    if args.smoke:
        out = out.with_name(out.stem + "_smoke.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str))
    logger.info("wrote %s", out)
    _plot(report, out.with_suffix(".png"))
    return report


def _plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ref = report["reference"]
    labels = ["plain CVXPY+Clarabel", "clarabel-ws"]
    times = [ref["plain"]["wall_s"], ref["ws"]["wall_s"]]
    for label, r in report.get("ablations", {}).items():
        labels.append(label.split(" (")[0])
        times.append(r["wall_s"])
    axes[0].barh(range(len(times)), times)
    axes[0].set_yticks(range(len(times)), labels, fontsize=7)
    axes[0].set_xscale("log")
    axes[0].set_xlabel("wall seconds (solve + certify)")
    inst = ref["instance"]
    axes[0].set_title(f"n = {inst['n']}, P = {inst['P']}", fontsize=9)
    for r in report["large"]:
        h = r["history"]
        if h:
            axes[1].plot([x.get("iteration", x.get("round")) for x in h], [x["cone_rows"] for x in h], marker="o",
                         label=f"n = {r['instance']['n']}, P = {r['instance']['P']} (of {r['info']['full_cone_rows']:,})")
    axes[1].set_xlabel("round")
    axes[1].set_ylabel("cone rows in the working set")
    axes[1].set_title("clarabel-ws working-set growth (large instances)", fontsize=9)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
