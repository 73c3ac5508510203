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
from convexdual.experiments.mnist import common as C

__all__ = ["add_arguments", "run", "FULL", "SMOKE", "patterns_needed"]

logger = logging.getLogger(__name__)

FULL: dict[str, Any] = {"num_train": 600, "num_test": 0, "sigmas": "0.1,0.5", "width": 512, "epochs": 100,
                        "lr": 1e-2, "num_patterns": "2,8,32,125,500,1000,2000,4000,8000", "baseline_epochs": 100}
SMOKE: dict[str, Any] = {"num_train": 4, "num_test": 8, "sigmas": "0.1,0.5", "width": 32, "epochs": 80,
                         "lr": 1e-2, "num_patterns": "2,8,32,128", "baseline_epochs": 40}


def add_arguments(p: argparse.ArgumentParser) -> None:
    C.add_common_arguments(p, FULL, SMOKE)


def patterns_needed(points: list[dict[str, Any]], primal_objective: float, rtol: float) -> int | None:
    """Smallest requested pattern count whose certified optimum is <= primal * (1 + rtol), or None."""
    for pt in sorted(points, key=lambda r: r["num_requested"]):
        if pt.get("objective") is not None and pt["objective"] <= primal_objective * (1 + rtol):
            return int(pt["num_requested"])
    return None


def _unit(args: argparse.Namespace, sigma: float, counts: list[int], out: Path) -> dict[str, Any]:
    data, beta, primal, _ = C.train_unit(args, "gaussian", sigma, evals=20)
    points = []
    for P in counts:
        pats = cd.sample_patterns(data.noisy, 3, P, seed=args.seed)  # same seed: nested gate sets
        rec, _ = C.run_dual(data, beta, pats, args.solver, label=f"{P} sampled", time_limit=args.solver_time_limit,
                            device=args.device, seed=args.seed)
        rec["num_requested"] = int(P)
        if "objective" in rec:
            rec["excess_over_primal"] = (rec["objective"] - primal["objective"]) / abs(primal["objective"])
        rec.pop("history", None)
        points.append(rec)
    return {"data": data.describe(), "beta": beta, "sigma": sigma, "primal": primal, "points": points,
            "patterns_needed": {str(t): patterns_needed(points, primal["objective"], t) for t in (1e-6, 0.01, 0.05)}}


def run(args: argparse.Namespace) -> int:
    return C.run_experiment(args, FULL, SMOKE, _run)


def _run(args: argparse.Namespace, out: Path) -> int:
    cache = C.UnitCache(out, args.resume)
    counts = sorted(C.parse_ints(args.num_patterns))
    units = []
    for sigma in C.parse_floats(args.sigmas):
        units.append(cache.get_or_run(f"ablation_{sigma:g}_" + "-".join(map(str, counts)),
                                      lambda: _unit(args, sigma, counts, out)))
    plt = C.setup_matplotlib()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for j, u in enumerate(units):
        pts = [p for p in u["points"] if "objective" in p]
        xs = [p["num_requested"] for p in pts]
        col = f"C{j}"
        for ax, key in zip(axes, ("objective", "train_loss", "test_loss")):
            ax.plot(xs, [p.get(key) for p in pts], "o-", color=col, label=f"dual (certified), sigma {u['sigma']:g}")
            ax.axhline(u["primal"][key], color=col, ls="--", label=f"primal ({u['primal']['width']} filters), "
                                                                       f"sigma {u['sigma']:g}")
    for ax, lab in zip(axes, ("objective (2)/(4) (sum)", "train loss / pixel", "test loss / pixel")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("sampled sign patterns")
        ax.set_ylabel(lab)
    axes[0].legend(fontsize=7)
    fig.suptitle("pattern ablation: certified dual optimum vs number of sampled patterns")
    fig.tight_layout()
    fig.savefig(out / "pattern_ablation.png", dpi=110)
    plt.close(fig)
    lines = [f"Data: {units[0]['data']['source']}, train {units[0]['data']['train_shape']}; primal {args.width} filters, "
             f"{args.epochs} epochs; certified solver `{args.solver}`.", "",
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
              "", "Figure: pattern_ablation.png"]
    C.write_outputs(out, "pattern_ablation", "pattern-ablation", args,
                    {"units": units, "figures": ["pattern_ablation.png"]}, lines)
    return 0
