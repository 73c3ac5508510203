"""zero-gap: primal (Adam) vs dual (certified solve and Adam + hinge) losses at several noise levels (Fig. 2).

For each sigma: the primal net (Adam, 512 filters in the paper) is trained while its
objective (2) and per-pixel train/test losses are logged; program (4) over
``--num-patterns`` sampled patterns is solved to certified optimality (and by the
paper's Adam + hinge baseline); and (4) is solved again over the sampled patterns
plus the trained primal net's own patterns. The last one is never above the primal's
objective (the net is a feasible point of that program), so it checks whether the
primal reached the best network its patterns allow.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

import convexdual as cd
from convexdual.experiments.mnist import common as C

__all__ = ["add_arguments", "run", "run_unit", "plot_units", "FULL", "SMOKE", "TOLERANCE"]

logger = logging.getLogger(__name__)

FULL: dict[str, Any] = {"num_train": 600, "num_test": 0, "sigmas": "0.1,0.25,0.5,0.75", "width": 512, "epochs": 100,
                        "lr": 1e-2, "num_patterns": "8000", "baseline_epochs": 100}
SMOKE: dict[str, Any] = {"num_train": 4, "num_test": 8, "sigmas": "0.1,0.5", "width": 32, "epochs": 80,
                         "lr": 1e-2, "num_patterns": "24", "baseline_epochs": 40}
#: relative tolerance of "the certified dual optimum is not above the primal's objective"
TOLERANCE = 1e-6


def add_arguments(p: argparse.ArgumentParser) -> None:
    C.add_common_arguments(p, FULL, SMOKE)


def run_unit(args: argparse.Namespace, noise: str, level: float, num_patterns: int, *,
             out: Path) -> dict[str, Any]:
    """One noise setting: primal run, certified dual (sampled, sampled + primal's), baseline."""
    data, beta, primal, net = C.train_unit(args, noise, level, evals=50)
    net.save(out / "nets" / f"primal_{noise}_{level:g}.pt", {"beta": beta, "noise": noise, "level": level})
    pats = cd.sample_patterns(data.noisy, 3, num_patterns, seed=args.seed)
    duals, dnets = C.dual_pair(args, data, beta, pats, net, prefix="certified", seed=args.seed)
    if dnets["sampled"] is not None:
        dnets["sampled"].save(out / "nets" / f"dual_{noise}_{level:g}.pt", {"beta": beta, "noise": noise, "level": level})
    if str(args.baseline).lower() != "none":
        duals["baseline"], _ = C.run_dual(data, beta, pats, args.baseline, label="Adam + hinge (paper)",
                                          device=args.device, epochs=args.baseline_epochs, seed=args.seed,
                                          checkpoint=out / "checkpoints" / f"baseline_{noise}_{level:g}.pt")
    p_obj = primal["objective"]
    for rec in duals.values():
        if "objective" in rec:
            rec["excess_over_primal"] = (rec["objective"] - p_obj) / abs(p_obj)
            lb = (rec.get("certificate") or {}).get("dual_bound")
            if lb is not None:
                rec["primal_excess_over_dual_bound"] = (p_obj - lb) / abs(p_obj)
    check = None
    a = duals["augmented"]
    if "objective" in a:
        check = {"dual_objective": a["objective"], "primal_objective": p_obj, "tolerance": TOLERANCE,
                 "dual_not_above_primal": bool(a["objective"] <= p_obj * (1 + TOLERANCE)),
                 "certified": bool((a.get("certificate") or {}).get("ok", False))}
    return {"data": data.describe(), "beta": beta, "primal": primal, "duals": duals, "check": check,
            "noise": noise, "level": level}


def plot_units(plt, units: list[dict[str, Any]], title: str, path: Path) -> Path:
    """Rows: objective, train loss, test loss (per pixel); one column per unit."""
    fig, axes = plt.subplots(3, len(units), figsize=(4.2 * len(units), 9), squeeze=False)
    styles = {"sampled": ("C1", "--"), "augmented": ("C2", ":"), "baseline": ("C3", "-.")}
    for j, u in enumerate(units):
        h = u["primal"]["history"]
        ep = [r["epoch"] for r in h]
        for i, key in enumerate(("objective", "train_loss", "test_loss")):
            ax = axes[i, j]
            ax.plot(ep, [r[key] for r in h], "C0-", label=f"primal Adam ({u['primal']['width']} filters)")
            for name, rec in u["duals"].items():
                if key not in rec or rec.get(key) is None:
                    continue
                col, ls = styles.get(name, ("C4", "-"))
                ax.axhline(rec[key], color=col, ls=ls, label=f"dual: {rec['label']}")
                if key == "objective" and rec.get("history") and all("iteration" in r and "objective" in r
                                                                      for r in rec["history"]):
                    hh = rec["history"]
                    ax.plot([r["iteration"] for r in hh], [r["objective"] for r in hh], color=col, ls="-",
                            alpha=0.6, lw=1)
            ax.set_yscale("log")
            ax.set_xlabel("epoch")
            ax.set_ylabel({"objective": "objective (2)/(4) (sum)", "train_loss": "train loss / pixel",
                           "test_loss": "test loss / pixel"}[key])
            if i == 0:
                ax.set_title(f"{u['noise']} {u['level']:g}")
        axes[0, j].legend(fontsize=6)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def summary_table(units: list[dict[str, Any]]) -> list[str]:
    lines = ["| noise | primal obj. (train / test loss) | dual | dual obj. (train / test loss) | "
             "vs primal | certificate |", "|---|---|---|---|---|---|"]
    for u in units:
        p = u["primal"]
        for rec in u["duals"].values():
            lines.append(
                f"| {u['noise']} {u['level']:g} | {C.fmt(p['objective'])} ({C.fmt(p['train_loss'])} / "
                f"{C.fmt(p['test_loss'])}) | {rec['label']} | {C.fmt(rec.get('objective'))} "
                f"({C.fmt(rec.get('train_loss'))} / {C.fmt(rec.get('test_loss'))}) | "
                f"{C.fmt(rec.get('excess_over_primal'), '+.2%') if 'excess_over_primal' in rec else 'n/a'} | "
                f"{C.certificate_cell(rec)} |")
    return lines


def run(args: argparse.Namespace) -> int:
    return C.run_experiment(args, FULL, SMOKE, _run)


def _run(args: argparse.Namespace, out: Path) -> int:
    cache = C.UnitCache(out, args.resume)
    P = C.parse_ints(args.num_patterns)[0]
    units = []
    for sigma in C.parse_floats(args.sigmas):
        u = cache.get_or_run(f"zero_gap_gaussian_{sigma:g}", lambda: run_unit(args, "gaussian", sigma, P, out=out))
        units.append(u)
        logger.info("sigma %g: primal %.6g, certified dual %s", sigma, u["primal"]["objective"],
                    u["duals"]["sampled"].get("objective"))
    plt = C.setup_matplotlib()
    fig = plot_units(plt, units, "zero duality gap: primal vs dual (MNIST denoising)", out / "zero_gap.png")
    lines = [f"Data: {units[0]['data']['source']}, train {units[0]['data']['train_shape']}, "
             f"test {units[0]['data']['test_shape']}; beta = {args.beta_frac} x reference beta_max; primal "
             f"{args.width} filters, {args.epochs} epochs; {P} sampled patterns; certified solver "
             f"`{args.solver}`.", "", "Objectives are exact sums of (2)/(4); losses are per pixel "
             "(1/2 mean squared error).", ""] + summary_table(units)
    checks = [u["check"] for u in units if u["check"]]
    lines += ["", "Check (certified optimum over sampled + primal's patterns <= primal objective (1 + "
              f"{TOLERANCE:g})): " + ", ".join(f"{u['level']:g}: {'yes' if u['check']['dual_not_above_primal'] else 'NO'}"
                                                for u in units if u["check"]) if checks else "no check ran",
              "", f"Figure: {fig.name}"]
    C.write_outputs(out, "zero_gap", "zero-gap", args, {"units": units, "figures": [fig.name]}, lines)
    return 0
