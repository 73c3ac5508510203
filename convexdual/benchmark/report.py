"""The benchmark's outputs: profiles and peer ratios (``add_analysis``), then JSON, PNG and summary.md.

Every plotted number is in ``benchmark.json``; every figure goes through
:mod:`convexdual.plotting`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from convexdual.benchmark.profiles import ACCURACIES, performance_profile

__all__ = ["add_analysis", "write_outputs", "OUTPUTS", "OURS"]

#: fixed output names (per-instance curves are time_to_accuracy_<instance>.png)
OUTPUTS = ("benchmark.json", "summary.md", "profiles.png")
#: our own solvers (the reference side of the peer ratios)
OURS = ("active_set", "clarabel-ws", "augmented_lagrangian", "fista")


def _key(eps: float) -> str:
    return f"{eps:.0e}"


def add_analysis(report: dict[str, Any]) -> None:
    """Profiles at each accuracy and ratios of each peer to our fastest solver, into ``report``."""
    solvers = [s for s, info in report["solvers"].items() if info["available"]]
    cells = report["cells"]
    report["profiles"] = {}
    report["peer_ratios"] = {}
    budget = float(report["settings"]["time_limit"])
    for eps in ACCURACIES:
        k = f"time_to_{eps:.0e}"
        times = {i: {s: cells[i].get(s, {}).get(k) for s in solvers} for i in cells}
        report["profiles"][_key(eps)] = performance_profile(times, solvers)
        ratios: dict[str, Any] = {}
        for peer in solvers:
            if peer in OURS:
                continue
            per: dict[str, Any] = {}
            for i in cells:
                ours = [(times[i][s], s) for s in OURS if s in times[i] and times[i][s] is not None]
                if not ours:
                    per[i] = {"ratio": None, "note": "no solver of ours reached this accuracy"}
                    continue
                t_ours, who = min(ours)
                t_peer = times[i].get(peer)
                st = cells[i].get(peer, {}).get("status")
                if t_peer is None:
                    censored = st in ("time_limit", "killed")  # stopped by the budget: ratio >= budget / ours
                    per[i] = {"ratio": None, "at_least": (budget / t_ours) if censored else None,
                              "ours": who, "ours_seconds": t_ours, "peer_status": st,
                              "note": "not applicable (loss)" if st == "not_applicable" else
                              ("stopped by the budget before this accuracy" if censored else
                               f"ended ({st}) without reaching this accuracy")}
                else:
                    per[i] = {"ratio": t_peer / t_ours if t_ours > 0 else None, "ours": who, "ours_seconds": t_ours,
                              "peer_seconds": t_peer}
            finite = [v["ratio"] for v in per.values() if v.get("ratio")]
            ratios[peer] = {"per_instance": per,
                            "geometric_mean": float(np.exp(np.mean(np.log(finite)))) if finite else None,
                            "both_reached": len(finite),
                            "peer_not_reached": sum(1 for v in per.values() if v.get("at_least") is not None)}
        report["peer_ratios"][_key(eps)] = ratios


# --------------------------------------------------------------------------------------------- figures
def _styles(solvers: list[str]) -> dict[str, dict[str, Any]]:
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    marks = "os^vD<>ph*Xd"
    return {s: {"color": cmap(i % 20), "marker": marks[i % len(marks)]} for i, s in enumerate(solvers)}


def _curves(report: dict[str, Any], name: str, path: Path) -> None:
    from convexdual import plotting

    cells = report["cells"][name]
    inst = report["instances"][name]
    fig, axes = plotting.new_figure(1, 2, size=(12.0, 4.6))
    ax_e, ax_v = axes[0]
    styles = _styles(list(report["solvers"]))
    floor = plotting.LOG_FLOOR
    for s, c in cells.items():
        tr = c.get("trace") or []
        if not tr:
            continue
        t = [max(float(p["time"]), 1e-3) for p in tr]
        e = [max(float(p["relative_error"]), floor) if math.isfinite(float(p["relative_error"])) else np.nan
             for p in tr]
        st = styles[s]
        ax_e.plot(t, e, "-", ms=3, lw=1, label=f"{s} ({c.get('status')})", **st)
        pv = [(ti, max(float(p["violation"]), floor)) for ti, p in zip(t, tr) if p.get("violation") is not None]
        if pv:
            ax_v.plot([a for a, _ in pv], [b for _, b in pv], "-", ms=3, lw=1, label=s, **st)
    for ax in (ax_e, ax_v):
        ax.set_xscale("log")
        ax.set_yscale("log")
        for eps in ACCURACIES:
            ax.axhline(eps, color="gray", lw=0.6, ls=":")
        ax.set_xlabel("seconds (wall, from the start of the solve)")
    ax_e.set_ylabel(f"|f - f*| / |f*| of (4)  (floor {floor:g})")
    ax_v.set_ylabel(f"relative cone violation (floor {floor:g})")
    ax_e.set_title("relative error vs the certified optimum", fontsize=9)
    ax_v.set_title("cone violation (points with a measured violation)", fontsize=9)
    ax_e.legend(fontsize=6, loc="best")
    ref = inst["reference"]
    plotting.set_title(fig, f"Time to accuracy: {name}", inst["description"],
                       f"n = {inst['problem']['n']:,}, d = {inst['problem']['d']}, P = {inst['problem']['P']}; "
                       f"f* = {ref['objective']:.10g} ({ref['solver']}, certified gap {ref['relative_gap']:.1e}); "
                       f"budget {report['settings']['time_limit']:g} s per solver", fontsize=9)
    plotting.save(fig, path)


def _profiles(report: dict[str, Any], path: Path) -> None:
    from convexdual import plotting

    fig, axes = plotting.new_figure(1, len(ACCURACIES), size=(12.0, 4.6))
    styles = _styles(list(report["solvers"]))
    for ax, eps in zip(axes[0], ACCURACIES):
        prof = report["profiles"][_key(eps)]
        finite = [r for row in prof["ratios"].values() for r in row.values() if math.isfinite(r)]
        tmax = max(finite + [2.0]) * 2
        for s in prof["solvers"]:
            taus = list(prof["taus"]) + [tmax]
            rho = list(prof["rho"][s]) + [prof["rho"][s][-1] if prof["rho"][s] else 0.0]
            ax.step(taus, rho, where="post", lw=1.2, label=s, color=styles[s]["color"])
        ax.set_xscale("log", base=2)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("tau (time / fastest solver's time on the instance)")
        ax.set_ylabel("fraction of instances within tau")
        ax.set_title(f"accuracy {eps:g} (objective and violation)", fontsize=9)
        ax.legend(fontsize=6, loc="lower right")
    plotting.set_title(fig, f"Dolan-Moré performance profiles, suite {report['suite']!r}",
                       f"{len(report['cells'])} instances; budget {report['settings']['time_limit']:g} s per solver; "
                       "unsolved or not applicable counts as never", fontsize=9)
    plotting.save(fig, path)


# --------------------------------------------------------------------------------------------- summary
def _f(x: Any, spec: str = ".3g", none: str = "-") -> str:
    if x is None:
        return none
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    return "inf" if math.isinf(v) else format(v, spec)


def _reused_note(report: dict[str, Any]) -> list[str]:
    cells = [c for row in report["cells"].values() for c in row.values()]
    k = sum(1 for c in cells if c.get("reused"))
    if not k:
        return []
    return [f"**{k} of {len(cells)} cells were reused from an earlier run (--resume)**: their times and memory are "
            "from that run; the wall time above is this run's.", ""]


def _summary(report: dict[str, Any]) -> str:
    s = report["settings"]
    lines = [f"# convexdual benchmark: suite `{report['suite']}`", "",
             f"Budget {s['time_limit']:g} s per (instance, solver); device `{s['device']}`; threads {s['threads']}; "
             f"{'each cell in a worker process (hard limit 2 x budget + 30 s, memory cap)' if s['isolated'] else 'in process'}; "
             f"{report['machine']['cpus']} CPUs, load average at start {report['machine']['load_avg_start'][0]:.2f}; "
             f"wall time {report['wall_seconds']:.0f} s.", "",
             *_reused_note(report),
             "Accuracy: a point is within eps when |f - f*| <= eps |f*| for the certified reference f* **and** its "
             "relative cone violation is known and <= eps. Times are wall seconds from the start of the solve "
             "(model build included; the final certificate of `cd.solve` not included). Peak memory: RSS of the "
             "process running the cell, sampled every 20 ms (not tracemalloc).", ""]
    viol = report["status_violations"]
    lines += ["## Status check against the certified references", ""]
    if viol:
        lines += [f"**!!! {len(viol)} STATUS VIOLATION(S): a solver said optimal but is not within "
                  f"{report['status_tolerance']:g} of the reference (or a feasible point beat the certified bound):**", ""]
        lines += [f"- **{v['instance']} / {v['solver']}**: {v['problem']}" for v in viol]
    else:
        n_opt = sum(1 for row in report["cells"].values() for c in row.values() if c.get("status") == "optimal")
        lines += [f"No violations: all {n_opt} 'optimal' reports are within {report['status_tolerance']:g} "
                  "(relative) of the certified reference."]
    lines += [""]
    if report["unavailable"]:
        lines += ["## Solvers not run here", ""] + [f"- `{k}`: {v}" for k, v in report["unavailable"].items()] + [""]
    lines += ["## Instances", "", "| instance | data | n | P | loss | f* (certified) | reference solver, gap | neurons |",
              "|---|---|---|---|---|---|---|---|"]
    for name, inst in report["instances"].items():
        p, r = inst["problem"], inst["reference"]
        lines.append(f"| `{name}` | {inst['description']} | {p['n']:,} | {p['P']} | {p['loss']} | {r['objective']:.10g} | "
                     f"{r['solver']}, {r['relative_gap']:.1e} | {r['num_neurons']} |")
    lines += ["", "## Results per instance", ""]
    for name, row in report["cells"].items():
        lines += [f"### `{name}`", "", "| solver | kind | final status | time to 1e-6 (s) | time to 1e-3 (s) | "
                  "final rel. error | final violation | peak RSS (MB) | +RSS (MB) | status check |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for sname, c in row.items():
            chk = c["status_check"]
            ck = "-" if chk.get("ok") is None else ("ok" if chk["ok"] else "**VIOLATION**")
            lines.append(f"| `{sname}` | {c['kind']} | {c.get('status')} | {_f(c.get('time_to_1e-06'))} | "
                         f"{_f(c.get('time_to_1e-03'))} | {_f(c.get('final_relative_error'), '.1e')} | "
                         f"{_f(c.get('final_violation'), '.1e')} | {_f(c.get('peak_rss_mb'), '.0f')} | "
                         f"{_f(c.get('peak_rss_increase_mb'), '.0f')} | {ck} |")
        notes = [(sname, c.get("message", "")) for sname, c in row.items()
                 if c.get("status") in ("not_applicable", "error", "killed", "refused_memory")]
        if notes:
            lines += [""] + [f"- `{s}`: {m[:300]}" for s, m in notes]
        lines += [""]
    lines += ["## Performance profiles", "",
              "rho(1): fraction of instances where the solver was the fastest to the accuracy; rho(max): fraction "
              "it reached at all (see profiles.png).", "",
              "| solver | " + " | ".join(f"rho(1) at {e:g} | solved at {e:g}" for e in ACCURACIES) + " |",
              "|---|" + "---|---|" * len(ACCURACIES)]
    first = report["profiles"][_key(ACCURACIES[0])]
    for sname in first["solvers"]:
        cols = []
        for e in ACCURACIES:
            prof = report["profiles"][_key(e)]
            rho = prof["rho"][sname]
            cols += [_f(rho[0] if rho else 0.0, ".2f"), _f(rho[-1] if rho else 0.0, ".2f")]
        lines.append(f"| `{sname}` | " + " | ".join(cols) + " |")
    lines += ["", "## Ratios against each peer (same run)", "",
              f"Peer time to accuracy / our fastest solver's ({', '.join(OURS)}) on the same instance; "
              "'>= x': the peer was stopped by the budget before reaching it (ratio at least budget / ours); 'never': it ended on its own without reaching it; 'n/a': it does not accept the instance's loss; '-': no solver of ours reached it.", ""]
    for e in ACCURACIES:
        lines += [f"### accuracy {e:g}", "", "| peer | geometric mean | " + " | ".join(f"`{i}`" for i in report["cells"]) + " |",
                  "|---|---|" + "---|" * len(report["cells"])]
        for peer, r in report["peer_ratios"][_key(e)].items():
            cols = []
            for i in report["cells"]:
                v = r["per_instance"][i]
                if v.get("ratio"):
                    cols.append(f"{v['ratio']:.3g}")
                elif v.get("at_least"):
                    cols.append(f">= {v['at_least']:.3g}")
                elif "not applicable" in v.get("note", ""):
                    cols.append("n/a")
                else:
                    cols.append("never" if v.get("ours") else "-")
            lines.append(f"| `{peer}` | {_f(r['geometric_mean'])} ({r['both_reached']} instances) | " + " | ".join(cols) + " |")
        lines += [""]
    return "\n".join(lines) + "\n"


def write_outputs(report: dict[str, Any], out: Path) -> None:
    """``benchmark.json``, ``summary.md``, ``profiles.png`` and ``time_to_accuracy_<instance>.png`` in ``out``."""
    from convexdual._io import atomic_write_json, atomic_write_text, to_jsonable

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report["figures"] = ["profiles.png"] + [f"time_to_accuracy_{i}.png" for i in report["cells"]]
    for name in report["cells"]:
        _curves(report, name, out / f"time_to_accuracy_{name}.png")
    _profiles(report, out / "profiles.png")
    atomic_write_json(out / "benchmark.json", to_jsonable(report))
    atomic_write_text(out / "summary.md", _summary(report))
