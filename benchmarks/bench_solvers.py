"""Solver comparison for issue 3 (``bench_first_order.py --part solvers``).

Every method runs on the same instances in one process, one after the other, so
ratios are comparable on a loaded machine. The reference optimum is plain Clarabel's
(CVXPY) objective of (4). For each method the JSON holds its trajectory
``(seconds, objective, violation, certified gap)`` and the first time its relative
suboptimality ``|f - f*| / f*`` is <= 1e-3 and <= 1e-6, plus whether the point was
feasible for (4) then (relative cone violation <= 1e-7):

* interior point (clarabel, clarabel-ws): one point, at the end of the solve;
* active_set: one point per round (feasible by construction, certified gap logged);
* fista: the gated relaxation's objective (a *lower bound* on (4), never feasible in
  general): reported, not ranked;
* adam_hinge: the objective of (4) at its iterates, which may be infeasible;
* primal Adam: the network objective (2) (every network is feasible for (2)); with
  sampled patterns (4) is a restriction, so (2) can end *below* f*;
* scnn AL / R-FISTA: scnn's own ``model_loss`` metric times n (its objective is
  ``1/(2n)||.||^2 + lam sum||.||`` with ``lam = beta/n``), logged every 25 iterations;
  the final AL point is then mapped to (W, Z) and evaluated with our objective,
  violation and certificate.

Times exclude the final certificate of ``convexdual.solve`` (every method is certified
afterwards the same way) but include each solver's own checks.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import convexdual as cd
from convexdual.data import add_noise, load_digits_dataset

THRESHOLDS = (1e-3, 1e-6)


def instance(N: int, P: int) -> Any:
    clean = load_digits_dataset(N, 0, seed=0).train
    noisy = add_noise(clean, "gaussian", 0.5, seed=1)
    pats = cd.sample_patterns(noisy, 3, P, seed=0)
    beta = 0.02 * cd.beta_max(noisy, clean, 3, pats)
    return cd.build_problem(noisy, clean, 3, beta, patterns=pats)


def reach(traj: list[dict[str, float]], ref: float, feasible: bool | None = None) -> dict[str, Any]:
    """First times ``|f - ref| <= thr ref``; ``feasible``: known feasibility when points carry no violation."""
    out: dict[str, Any] = {}
    for thr in THRESHOLDS:
        hit = next((p for p in traj if abs(p["objective"] - ref) <= thr * abs(ref)), None)
        out[f"seconds_to_{thr:.0e}"] = None if hit is None else hit["time"]
        if hit is None:
            out[f"feasible_at_{thr:.0e}"] = None
        elif hit.get("violation") is not None:
            out[f"feasible_at_{thr:.0e}"] = bool(hit["violation"] <= 1e-7)
        else:
            out[f"feasible_at_{thr:.0e}"] = feasible
    if traj:
        out["final_relative_suboptimality"] = (traj[-1]["objective"] - ref) / abs(ref)
        out["final_seconds"] = traj[-1]["time"]
    return out


def certified(problem, W, Z) -> dict[str, float]:
    from convexdual.certificate import certify_solution

    c = certify_solution(problem, W, Z)
    return {"objective": c.convex_objective, "relative_gap": c.relative_gap, "violation": c.max_violation,
            "neurons": c.num_neurons}


def _hist(r, offset: float, key: str = "objective") -> list[dict[str, float]]:
    return [{"time": offset + h["time"], "objective": h[key], "violation": h.get("violation"),
             "gap": h.get("relative_gap")} for h in r.history]


def _scnn(problem, gated: bool, tol: float, max_iters: int) -> dict[str, Any]:
    """scnn AL / R-FISTA through the package's peer wrapper (``convexdual.benchmark.peers``), in this
    script's format: its metrics as the trajectory, the final point evaluated with our certificate."""
    from convexdual.benchmark.peers import run_peer

    t0 = time.perf_counter()
    rec = run_peer("scnn-rfista" if gated else "scnn-al", problem, time_limit=None, tol=tol, max_iters=max_iters,
                   metric_freq=25)
    out: dict[str, Any] = {"wall_seconds": time.perf_counter() - t0, "tol": tol, "max_iters": max_iters,
                           "trajectory": [{"time": p["time"], "objective": p["objective"], "violation": None,
                                           "scnn_constraint_gap": p.get("scnn_constraint_gap")}
                                          for p in rec["trace"] if p.get("source") == "scnn metrics"]}
    if rec["status"] != "finished":
        out["mapping"] = rec.get("message")
        return out
    c = rec["certificate"]
    ev = {"objective": rec["objective"], "relative_gap": c["relative_gap"], "violation": c["max_violation"],
          "neurons": c["num_neurons"]}
    out["final_gated_objective" if gated else "final_exact_evaluation"] = rec["objective"] if gated else ev
    return out


def run_instance(name: str, N: int, P: int, adam_seconds: float) -> dict[str, Any]:
    from convexdual.solvers.active_set import ActiveSetOptions
    from convexdual.solvers.adam_hinge import AdamHingeOptions
    from convexdual.solvers.fista import FistaOptions
    from convexdual.solvers.working_set import WorkingSetOptions
    from convexdual.train import train_primal

    problem = instance(N, P)
    res: dict[str, Any] = {"instance": {"name": name, **problem.describe()}, "methods": {}}
    meth = res["methods"]
    print(f"== {name}: n = {problem.n}, P = {P}", flush=True)

    r = cd.solve(problem, solver="clarabel", certify=False, recover=False)
    ref = float(r.objective)
    t = r.timings.build + r.timings.solve
    res["reference_objective"] = ref
    meth["clarabel"] = {"status": r.status.value, "seconds": t, **certified(problem, r.W, r.Z),
                        **reach([{"time": t, "objective": ref, "violation": None}], ref, True)}
    print("clarabel", meth["clarabel"], flush=True)

    r = cd.solve(problem, solver="clarabel-ws", certify=False, recover=False, options=WorkingSetOptions())
    t = r.timings.build + r.timings.solve
    meth["clarabel-ws"] = {"status": r.status.value, "seconds": t, **certified(problem, r.W, r.Z),
                           **reach([{"time": t, "objective": r.objective, "violation": None}], ref, True)}
    print("clarabel-ws", meth["clarabel-ws"], flush=True)

    r = cd.solve(problem, solver="active_set", certify=False, recover=False, options=ActiveSetOptions(num_threads=1))
    traj = _hist(r, r.timings.build)
    meth["active_set"] = {"status": r.status.value, "seconds": r.timings.build + r.timings.solve,
                          "rounds": r.iterations, **certified(problem, r.W, r.Z), **reach(traj, ref),
                          "trajectory": traj}
    print("active_set", {k: v for k, v in meth["active_set"].items() if k != "trajectory"}, flush=True)

    r = cd.solve(problem, solver="fista", certify=False, recover=False,
                 options=FistaOptions(tol=1e-6, max_iter=50_000, check_every=25, num_threads=1))
    traj = _hist(r, r.timings.build)
    meth["fista_gated_lower_bound"] = {
        "status": r.status.value, "seconds": r.timings.build + r.timings.solve, "iterations": r.iterations,
        "gated_objective": r.objective, "gated_relative_to_reference": (r.objective - ref) / ref,
        "note": "relaxation: its optimum is a lower bound on (4), not a solution of it", "trajectory": traj}
    print("fista", {k: v for k, v in meth["fista_gated_lower_bound"].items() if k != "trajectory"}, flush=True)

    r = cd.solve(problem, solver="adam_hinge", certify=False, recover=False,
                 options=AdamHingeOptions(max_iter=100_000, time_limit=adam_seconds, check_every=max(1, 200 // N),
                                          num_threads=1))
    traj = _hist(r, r.timings.build)
    meth["adam_hinge"] = {"status": r.status.value, "epochs": r.iterations, **reach(traj, ref),
                          "final_certified": certified(problem, r.W, r.Z), "trajectory": traj}
    print("adam_hinge", {k: v for k, v in meth["adam_hinge"].items() if k != "trajectory"}, flush=True)

    torch.set_num_threads(1)
    pr = train_primal(problem.inputs, problem.targets, width=512, kernel_size=3, beta=problem.beta, epochs=100_000,
                      batch_size=25, lr=1e-3, seed=0, time_limit=adam_seconds, eval_every=max(1, 100 // N))
    traj = [{"time": h["time"], "objective": h["objective"], "violation": None} for h in pr.history]
    meth["primal_adam"] = {"status": pr.status, "epochs": pr.epochs, "width": 512, **reach(traj, ref, True),
                           "min_relative_to_reference": min((p["objective"] - ref) / ref for p in traj),
                           "note": "objective (2) of the network; (4) with sampled patterns is a restriction, "
                                   "so (2) may end below the reference", "trajectory": traj}
    print("primal_adam", {k: v for k, v in meth["primal_adam"].items() if k != "trajectory"}, flush=True)

    try:
        import scnn  # noqa: F401
    except ImportError:
        meth["scnn"] = {"skipped": "pyscnn is not installed (pip install pyscnn, optional benchmark dependency)"}
    else:
        for key, gated, tol in (("scnn_al", False, 1e-8), ("scnn_rfista_gated", True, 1e-8)):
            out = _scnn(problem, gated, tol, 10_000)
            out.update(reach(out["trajectory"], ref))  # scnn's iterates: feasibility unknown (None)
            meth[key] = out
            print(key, {k: v for k, v in out.items() if k != "trajectory"}, flush=True)
    a = meth["active_set"]
    ratios = {}
    for other in ("clarabel", "clarabel-ws", "scnn_al"):
        for thr in THRESHOLDS:
            k = f"seconds_to_{thr:.0e}"
            mine, theirs = a.get(k), meth.get(other, {}).get(k)
            ratios[f"{other}/active_set {k}"] = None if (mine is None or theirs is None) else theirs / mine
    res["speedups_of_active_set"] = ratios
    print("speedups", ratios, flush=True)
    return res


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(7 * len(results), 5), squeeze=False)
    for ax, res in zip(axes[0], results):
        ref = res["reference_objective"]
        for name, m in res["methods"].items():
            traj = m.get("trajectory")
            if traj:
                t = [p["time"] for p in traj]
                f = [max(abs(p["objective"] - ref) / ref, 1e-12) for p in traj]
                ax.loglog(t, f, "-o" if name == "active_set" else "-", ms=3, label=f"{name} |f - f*|/f*")
                if name == "active_set":
                    ax.loglog(t, [max(p["gap"], 1e-12) for p in traj], "k--", label="active_set certified gap")
            elif "seconds" in m:
                ax.loglog([m["seconds"]], [max(abs(m["objective"] - ref) / ref, 1e-12)], "s", ms=8, label=name)
        for thr in THRESHOLDS:
            ax.axhline(thr, color="gray", lw=0.5)
        inst = res["instance"]
        ax.set_title(f"{inst['name']}: n = {inst['n']}, P = {inst['P']}")
        ax.set_xlabel("seconds")
        ax.set_ylabel("relative suboptimality / certified gap")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def run_solvers(out_dir: Path, adam_seconds: float = 60.0, quick: bool = False) -> None:
    torch.set_num_threads(1)
    specs = [("5 digits", 5, 20, adam_seconds / 3)] + ([] if quick else [("20 digits", 20, 100, adam_seconds)])
    results = [run_instance(name, N, P, secs) for name, N, P, secs in specs]
    tag = "_quick" if quick else ""
    (out_dir / f"solvers{tag}.json").write_text(json.dumps(results, indent=1, default=float))
    plot(results, out_dir / f"solvers{tag}.png")
    print(f"wrote {out_dir / f'solvers{tag}.json'} and .png", flush=True)
