"""pattern-ablation: final dual train/test loss vs the number of sampled sign patterns, against the primal (Fig. 10).

For each sigma (paper: 0.1 and 0.5) the primal net is trained once; program (4) is
solved to certified optimality over nested sets of 2 ... 8,000 sampled patterns
(same seed, so each set contains the smaller ones). The paper found that about 4,000
patterns reach the primal's loss at sigma = 0.5 and about 125 at sigma = 0.1.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import convexdual as cd
from convexdual import plotting as pl
from convexdual.experiments.mnist import common as C

__all__ = ["add_arguments", "run", "FULL", "SMOKE", "patterns_needed"]

logger = logging.getLogger(__name__)

FULL: dict[str, Any] = {"num_train": 600, "num_test": 0, "sigmas": "0.1,0.5", "width": 512, "epochs": 100,
                        "lr": 1e-2, "num_patterns": "2,8,32,125,500,1000,2000,4000,8000,16000,32000",
                        "baseline_epochs": 100, "cg_rounds": 30, "cg_per_round": 64}
SMOKE: dict[str, Any] = {"num_train": 4, "num_test": 8, "sigmas": "0.1,0.5", "width": 32, "epochs": 80,
                         "lr": 1e-2, "num_patterns": "2,8,32,128", "baseline_epochs": 40, "cg_rounds": 3,
                         "cg_per_round": 8}


def add_arguments(p: argparse.ArgumentParser) -> None:
    C.add_common_arguments(p, FULL, SMOKE)
    p.add_argument("--cg-rounds", type=int, default=None,
                   help="rounds of column generation (generate_patterns) from 8 sampled patterns; 0 skips it "
                        f"(full: {FULL['cg_rounds']}; smoke: {SMOKE['cg_rounds']})")
    p.add_argument("--cg-per-round", type=int, default=None,
                   help=f"most patterns added per round (full: {FULL['cg_per_round']}; smoke: {SMOKE['cg_per_round']})")


def patterns_needed(points: list[dict[str, Any]], primal_objective: float, rtol: float) -> int | None:
    """Smallest requested pattern count whose certified optimum is <= primal * (1 + rtol), or None."""
    for pt in sorted(points, key=lambda r: r["num_requested"]):
        if pt.get("objective") is not None and pt["objective"] <= primal_objective * (1 + rtol):
            return int(pt["num_requested"])
    return None


def _unit(args: argparse.Namespace, sigma: float, counts: list[int], out: Path) -> dict[str, Any]:
    data, beta, primal, _ = C.train_unit(args, "gaussian", sigma)
    points = []
    for P in counts:
        pats = cd.sample_patterns(data.noisy, 3, P, seed=args.seed)  # same seed: nested gate sets
        rec, _ = C.run_dual(data, beta, pats, args.solver, label=f"{P} sampled", time_limit=args.solver_time_limit,
                            device=args.device, seed=args.seed, cache=C.solve_cache(args))
        rec["num_requested"] = int(P)
        rec["over"] = f"over the {rec['P']} sampled patterns"
        if "objective" in rec:
            rec["excess_over_primal"] = (rec["objective"] - primal["objective"]) / abs(primal["objective"])
        rec.pop("history", None)
        points.append(rec)
    unit = {"data": data.describe(), "beta": beta, "sigma": sigma, "primal": primal, "points": points,
            "patterns_needed": {str(t): patterns_needed(points, primal["objective"], t) for t in (1e-6, 0.01, 0.05)}}
    if args.cg_rounds:
        unit["generation"] = _generation(args, data, beta, primal["objective"])
    return unit


def _generation(args: argparse.Namespace, data: C.Data, beta: float, primal_objective: float) -> dict[str, Any]:
    """Column generation (``generate_patterns``) from 8 sampled patterns: certified optimum per round."""
    import time

    from convexdual.pattern_generation import GenerationOptions, generate_patterns

    problem = cd.build_problem(data.noisy, data.clean, 3, beta, num_patterns=8, seed=args.seed)
    # a checkpoint after every round in the cache folder, keyed by the problem's fingerprint and
    # the settings that shape the trajectory (not --cg-rounds: rounds run in the same order whatever the
    # limit): with --resume an interrupted run goes on after its last round, also under a larger limit
    ckpt = None
    if getattr(args, "out", None) is not None:
        from convexdual.checkpoint import problem_fingerprint

        tag = C.sha256_digest("convexdual-mnist-generation-v2", problem_fingerprint(problem), int(args.cg_per_round),
                              int(args.seed), str(args.solver),
                              None if args.solver_time_limit is None else float(args.solver_time_limit))[:32]
        ckpt = C.cache_root(args) / "units" / "generation" / f"{tag}.npz"
        ckpt.parent.mkdir(parents=True, exist_ok=True)
    resume = ckpt is not None and bool(getattr(args, "resume", False)) and ckpt.is_file()
    opts = GenerationOptions(max_rounds=int(args.cg_rounds), patterns_per_round=int(args.cg_per_round),
                             seed=args.seed, device=args.device, time_limit=args.solver_time_limit,
                             checkpoint_path=None if ckpt is None else str(ckpt),
                             resume_from=str(ckpt) if resume else None)
    t0 = time.perf_counter()
    gen = generate_patterns(problem, solver=args.solver, options=opts)
    rounds = [{k: (float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v)
               for k, v in r.items()} for r in gen.rounds]
    pts = [{"num_requested": int(r["patterns"]), "objective": r.get("objective")} for r in rounds
           if r.get("status") == "optimal"]
    res = gen.result
    c = res.certificate
    # a solver that failed leaves no objective to report (its last iterate is not a solution)
    obj = float(res.objective) if res.status.has_solution else None
    losses = {}
    if res.network is not None and res.status.has_solution:  # the recovered net of the final solve
        losses = {**C.net_losses(res.network.to("cpu"), data), "num_neurons": int(res.num_groups)}
    return {"rounds": rounds, "converged": bool(gen.converged), "message": gen.message, **losses,
            "seconds": time.perf_counter() - t0, "final_patterns": int(len(gen.patterns)),
            "status": res.status.value, "objective": obj,
            "excess_over_primal": None if obj is None else (obj - primal_objective) / abs(primal_objective),
            "certificate": None if c is None else {"relative_gap": c.relative_gap, "max_violation": c.max_violation,
                                                   "ok": c.ok, "scope": c.scope},
            "patterns_needed": {str(t): patterns_needed(pts, primal_objective, t) for t in (1e-6, 0.01, 0.05)}}


def _figure(units: list[dict[str, Any]], args: argparse.Namespace, path: Path) -> Path:
    """Dual optimum / primal objective (log, the primal at 1), its excess over the primal in % (symlog,
    with the 0 / 1 / 5% levels of "patterns needed"), and train / test loss (log) vs patterns."""
    fig, grid = pl.new_figure(2, 2, size=(14, 10))
    axes, ex = (grid[0][0], grid[1][0], grid[1][1]), grid[0][1]
    for j, u in enumerate(units):
        pts = [p for p in u["points"] if "objective" in p]
        xs = [p["num_requested"] for p in pts]
        col, p_obj = f"C{j}", u["primal"]["objective"]
        lab = f"sigma {u['sigma']:g} (beta = {u['beta']:.3g})"
        axes[0].plot(xs, [p["objective"] / p_obj for p in pts], "o-", color=col,
                     label=f"dual optimum over the sampled patterns, {lab}")
        ex.plot(xs, [100 * (p["objective"] - p_obj) / abs(p_obj) for p in pts], "o-", color=col,
                label=f"sampled, sigma {u['sigma']:g}")
        g = u.get("generation")
        if g and g["rounds"]:
            gr = [r for r in g["rounds"] if r.get("objective") is not None and r.get("status") == "optimal"]
            axes[0].plot([r["patterns"] for r in gr], [r["objective"] / p_obj for r in gr], "s:", color=col,
                         ms=4, label=f"column generation (certified per round), sigma {u['sigma']:g}")
            ex.plot([r["patterns"] for r in gr], [100 * (r["objective"] - p_obj) / abs(p_obj) for r in gr], "s:",
                    color=col, ms=4, label=f"column generation, sigma {u['sigma']:g}")
        bad = [p for p in pts if not (p.get("status") == "optimal" and (p.get("certificate") or {}).get("ok"))]
        if bad:
            axes[0].plot([p["num_requested"] for p in bad], [p["objective"] / p_obj for p in bad], "x", ms=10,
                         color="k", label=f"not certified optimal ({len(bad)} points), sigma {u['sigma']:g}")
        for ax, key in zip(axes[1:], ("train_loss", "test_loss")):
            ax.plot(xs, [p.get(key) for p in pts], "o-", color=col, label=f"recovered dual net, {lab}")
            if g and g.get(key) is not None:
                ax.plot([g["final_patterns"]], [g[key]], "s", color=col, ms=8, mfc="none",
                        label=f"column generation's final net ({g['final_patterns']} patterns, {g['status']}), "
                              f"sigma {u['sigma']:g}: {g[key]:.4g}")
            ax.axhline(u["primal"][key], color=col, ls="--", label=f"primal ({u['primal']['width']} filters), "
                                                                       f"sigma {u['sigma']:g}: {u['primal'][key]:.4g}")
    axes[0].axhline(1.0, color="k", ls="--", lw=1, label="primal objective (Adam)")
    pl.readable_log_axis(axes[0], "y")
    axes[0].set_ylabel("dual optimum / primal objective (log)")
    axes[0].set_title("certified optimum of (4) relative to the primal's objective (2)", fontsize=9)
    for ax, lab, title in zip(axes[1:], ("train loss / pixel", "test loss / pixel"),
                              ("train loss of the recovered net", "test loss of the recovered net")):
        ax.set_yscale("log")
        ax.set_ylabel(lab)
        ax.set_title(title, fontsize=9)
    for level, ls in ((0.0, "--"), (1.0, ":"), (5.0, ":")):
        ex.axhline(level, color="k", ls=ls, lw=1)
    ex.set_yscale("symlog", linthresh=1.0)
    lo, hi = ex.get_ylim()
    ticks = [t for t in (-50, -10, -5, -1, -0.5, 0, 1, 5, 10, 50, 100, 500, 1000) if lo <= t <= hi]
    ex.set_yticks(ticks, [f"{t:+g}%" if t else "0" for t in ticks])
    ex.set_ylabel("(dual optimum - primal objective) / primal, % (symlog)")
    ex.set_title("excess of the certified optimum of (4) over the primal (lines at 0, 1, 5%: 'patterns needed')",
                 fontsize=9)
    for ax in (*axes, ex):
        ax.set_xscale("log")
        ax.set_xlabel("sign patterns (sampled: requested, nested sets; generation: in S)")
        ax.legend(fontsize=7)
    d = units[0]["data"]
    pl.set_title(fig, f"pattern ablation: certified dual optimum vs number of sampled patterns "
                      f"({pl.describe_source(d['source'])})",
                 f"{d['train_shape'][0]} train / {d['test_shape'][0]} test images of {d['train_shape'][1]}x"
                 f"{d['train_shape'][2]}, Gaussian noise; beta = {args.beta_frac:g} x beta_max over 256 reference "
                 f"Gaussian gates; primal {args.width} filters, {args.epochs} epochs; certified solver {args.solver}; "
                 "losses per pixel (1/2 MSE, normalised units)", fontsize=10)
    return pl.save(fig, path)


def run(args: argparse.Namespace) -> int:
    return C.run_experiment(args, FULL, SMOKE, _run)


def _run(args: argparse.Namespace, out: Path) -> int:
    cache = C.UnitCache(out, args.resume, settings=args)
    counts = sorted(C.parse_ints(args.num_patterns))
    units = []
    for sigma in C.parse_floats(args.sigmas):
        units.append(cache.get_or_run(f"ablation_{sigma:g}_" + "-".join(map(str, counts)),
                                      lambda: _unit(args, sigma, counts, out)))
    _figure(units, args, out / "pattern_ablation.png")
    lines = [f"Data: {C.data_text(units[0]['data'])}; {C.beta_rule(args)}; primal {args.width} filters, "
             f"{args.epochs} epochs; certified solver `{args.solver}`.", "", C.UNITS, "",
             "Each dual optimum holds over its own set of sampled patterns (same seed: each set contains the "
             "smaller ones); 'patterns (distinct)' is the requested count and, in brackets, the distinct ones.", "",
             "| sigma | patterns (distinct) | dual obj. | train / test loss | vs primal | certificate |",
             "|---|---|---|---|---|---|"]
    for u in units:
        p = u["primal"]
        lines.append(f"| {u['sigma']:g} | primal ({p['width']} filters) | {C.fmt(p['objective'])} | "
                     f"{C.fmt(p['train_loss'])} / {C.fmt(p['test_loss'])} | | |")
        for pt in u["points"]:
            lines.append(f"| {u['sigma']:g} | {pt['num_requested']} ({pt['P']}) | {C.fmt(pt.get('objective'))} | "
                         f"{C.fmt(pt.get('train_loss'))} / {C.fmt(pt.get('test_loss'))} | "
                         f"{C.fmt(pt.get('excess_over_primal'), '+.2%') if 'excess_over_primal' in pt else 'n/a'} | "
                         f"{C.certificate_cell(pt)} |")
    lines += ["", "Patterns needed to reach the primal objective (within 0 / 1% / 5%): "
              + "; ".join(f"sigma {u['sigma']:g}: " + ", ".join(str(u['patterns_needed'][t]) for t in u["patterns_needed"])
                          for u in units) + " (None: not reached in the tested range)",
              "", "Column generation from 8 sampled patterns (generate_patterns, patterns needed within 0 / 1% / 5%): "
              + "; ".join(f"sigma {u['sigma']:g}: " + (
                  f"{u['generation']['final_patterns']} patterns after {len(u['generation']['rounds'])} rounds, "
                  f"{u['generation']['status']}, {C.fmt(u['generation']['excess_over_primal'], '+.2%')} vs primal, "
                  f"train / test loss {C.fmt(u['generation'].get('train_loss'))} / "
                  f"{C.fmt(u['generation'].get('test_loss'))}, "
                  f"needed " + ", ".join(str(v) for v in u['generation']['patterns_needed'].values())
                  + f" ({u['generation']['message']})" if u.get("generation") else "not run") for u in units),
              "", "Figure: pattern_ablation.png"]
    C.write_outputs(out, "pattern_ablation", "pattern-ablation", args,
                    {"units": units, "figures": ["pattern_ablation.png"]}, lines)
    return 0
