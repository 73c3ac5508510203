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
from convexdual import plotting as pl
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
    data, beta, primal, net = C.train_unit(args, noise, level)
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


def _pattern_line(units: list[dict[str, Any]], solver: str) -> str:
    u = units[0]
    s, a = u["duals"].get("sampled", {}), u["duals"].get("augmented", {})
    return (f"dual: program (4) over the {s.get('P', '?')} sampled patterns, and over them + the primal net's own "
            f"({a.get('P', '?')} in all, per column); certified solver {solver}")


def _noise_text(u: dict[str, Any]) -> str:
    name = {"gaussian": "Gaussian noise sigma", "exponential": "exponential noise scale"}.get(u["noise"], u["noise"])
    return f"{name} {u['level']:g}"


def _data_line(units: list[dict[str, Any]], beta_frac: float) -> str:
    d = units[0]["data"]
    tr, te = d["train_shape"], d["test_shape"]
    return (f"{pl.describe_source(d['source'])}: {tr[0]} train / {te[0]} test images of {tr[1]}x{tr[2]}; "
            f"beta = {beta_frac:g} x beta_max over 256 reference Gaussian gates; losses per pixel "
            "(1/2 mean squared error, normalised units)")


def plot_units(units: list[dict[str, Any]], headline: str, path: Path, args: argparse.Namespace) -> Path:
    """Rows: objective, relative excess over the best certified optimum (log), train loss, test loss (per pixel)."""
    styles = {"sampled": ("C1", (0, (5, 2))), "augmented": ("C2", (0, (1, 1))), "baseline": ("C3", "-.")}
    fig, axes = pl.new_figure(4, len(units), size=(4.6 * len(units) + 0.6, 13))
    for j, u in enumerate(units):
        h = u["primal"]["history"]
        ep = [r["epoch"] for r in h]
        p_lab = f"primal Adam ({u['primal']['width']} filters)"
        for i, key in enumerate(("objective", "excess", "train_loss", "test_loss")):
            ax = axes[i, j]
            if key == "excess":
                _excess_panel(ax, u, ep, [r["objective"] for r in h], p_lab, styles)
                continue
            ax.plot(ep, [r[key] for r in h], "C0-", label=p_lab)
            for name, rec in u["duals"].items():
                if rec.get(key) is None:
                    continue
                col, ls = styles.get(name, ("C4", "-"))
                ax.axhline(rec[key], color=col, ls=ls, lw=1.6, label=f"dual: {rec['label']}: {rec[key]:.4g}")
                if key == "objective" and rec.get("history") and all("iteration" in r and "objective" in r
                                                                      for r in rec["history"]):
                    hh = rec["history"]
                    ax.plot([r["iteration"] for r in hh], [r["objective"] for r in hh], color=col, ls="-",
                            alpha=0.6, lw=1, label=f"{rec['label']}: iterates (infeasible until certified)")
            ax.set_yscale("log")
            ax.set_xlabel("epoch")
            ax.set_ylabel({"objective": "objective (2)/(4) (exact sum)", "train_loss": "train loss / pixel",
                           "test_loss": "test loss / pixel"}[key])
            ax.set_title({"objective": f"{_noise_text(u)} (beta = {u['beta']:.3g}): objective",
                          "train_loss": "train loss (per pixel)", "test_loss": "test loss (per pixel)"}[key],
                         fontsize=9)
            ax.legend(fontsize=6)
    pl.set_title(fig, headline, _data_line(units, args.beta_frac), _pattern_line(units, args.solver), fontsize=10)
    return pl.save(fig, path)


def _excess_panel(ax, u: dict[str, Any], ep: list, obj: list, p_lab: str, styles: dict) -> None:
    """(objective - certified optimum over sampled + primal's) / optimum on a log axis."""
    ref_rec = u["duals"].get("augmented", {})
    ax.set_xlabel("epoch")
    ax.set_ylabel("(objective - ref.) / ref.")
    if ref_rec.get("objective") is None:
        ax.set_title("relative excess: no certified reference", fontsize=9)
        ax.text(0.5, 0.5, "no certified optimum over\nsampled + primal's patterns", ha="center", va="center",
                transform=ax.transAxes)
        return
    ref = float(ref_rec["objective"])
    ax.set_title(f"relative excess over ref. = optimum over\nsampled + primal's patterns ({ref_rec['status']})",
                 fontsize=9)
    ex, low = pl.relative_excess(obj, ref)
    ax.plot(ep, ex, "C0-", label=p_lab + (f" ({low} points <= ref., drawn at {pl.LOG_FLOOR:g})" if low else "")
            + f": final {100 * (obj[-1] - ref) / abs(ref):+.3g}%")
    for name, rec in u["duals"].items():
        col, ls = styles.get(name, ("C4", "-"))
        if name == "augmented":
            lb = (rec.get("certificate") or {}).get("dual_bound")
            if lb is not None:
                g, _ = pl.relative_excess([ref], lb)
                ax.axhline(g[0], color=col, ls=ls, lw=1.6, label=f"ref. minus its certified lower bound "
                                                               f"(rel. gap {rec['certificate']['relative_gap']:.1e})")
            continue
        if rec.get("objective") is None:
            continue
        rel = (rec["objective"] - ref) / abs(ref)
        note = "" if rel > pl.LOG_FLOOR else " (below ref.: an infeasible point)"
        ax.axhline(max(rel, pl.LOG_FLOOR), color=col, ls=ls, lw=1.6, label=f"dual: {rec['label']}: {100 * rel:+.3g}%{note}")
    ax.set_yscale("log")
    ax.legend(fontsize=6)


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
    cache = C.UnitCache(out, args.resume, settings=args)
    P = C.parse_ints(args.num_patterns)[0]
    units = []
    for sigma in C.parse_floats(args.sigmas):
        u = cache.get_or_run(f"zero_gap_gaussian_{sigma:g}", lambda: run_unit(args, "gaussian", sigma, P, out=out))
        units.append(u)
        logger.info("sigma %g: primal %.6g, certified dual %s", sigma, u["primal"]["objective"],
                    u["duals"]["sampled"].get("objective"))
    fig = plot_units(units, f"zero duality gap: primal (Adam) vs dual (4) ({pl.describe_source(units[0]['data']['source'])} "
                     "denoising)", out / "zero_gap.png", args)
    lines = [f"Data: {C.data_text(units[0]['data'])}; {C.beta_rule(args)}; primal {args.width} filters, "
             f"{args.epochs} epochs; {P} sampled patterns; certified solver `{args.solver}`.", "", C.UNITS, "",
             "Each dual's optimum holds over its own pattern set only (the certificate column says which): "
             "the sampled patterns, or the sampled patterns + the primal net's own.", ""] + summary_table(units)
    checks = [u["check"] for u in units if u["check"]]
    lines += ["", "Check (the certified optimum over the sampled patterns + the primal net's own is <= the primal "
              f"objective x (1 + {TOLERANCE:g})): " + ", ".join(f"{u['level']:g}: {'yes' if u['check']['dual_not_above_primal'] else 'NO'}"
                                                for u in units if u["check"]) if checks else "no check ran",
              "", f"Figure: {fig.name}"]
    C.write_outputs(out, "zero_gap", "zero-gap", args, {"units": units, "figures": [fig.name]}, lines)
    return 0
