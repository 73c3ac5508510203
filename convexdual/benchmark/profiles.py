"""Time to accuracy and Dolan-Moré performance profiles (pure functions, no solver imports).

A *trace* is a list of points ``{"time": s, "objective": f, "violation": v}`` (``violation``
None when unknown). Against the certified reference optimum ``f*`` a point is *within eps*
when ``|f - f*| <= eps |f*|`` **and** its relative cone violation is known and ``<= eps``
(an infeasible point below the optimum is not a solution of (4)).

Performance profile (Dolan and Moré, 2002): with ``t[p, s]`` the first time solver ``s`` is
within eps on instance ``p`` (inf when never), ``r[p, s] = t[p, s] / min_s t[p, s]`` and
``rho_s(tau) = #{p : r[p, s] <= tau} / #instances``. Instances no solver solves count for
nobody (every ``r`` is inf) but stay in the denominator; a solver that refuses an
instance (another loss) counts as not solving it.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

__all__ = ["relative_error", "within", "time_to_accuracy", "performance_ratios", "performance_profile",
           "ACCURACIES"]

#: accuracies of the profiles and the table
ACCURACIES = (1e-3, 1e-6)


def relative_error(objective: float | None, reference: float) -> float:
    """``|f - f*| / |f*|`` (inf for a missing or non-finite objective)."""
    if objective is None or not math.isfinite(float(objective)):
        return math.inf
    return abs(float(objective) - float(reference)) / max(abs(float(reference)), 1e-300)


def within(point: Mapping[str, Any], reference: float, eps: float) -> bool:
    """Whether ``point`` is within ``eps`` of the reference: objective and violation (known)."""
    v = point.get("violation")
    return (relative_error(point.get("objective"), reference) <= eps and v is not None
            and math.isfinite(float(v)) and float(v) <= eps)


def time_to_accuracy(trace: Iterable[Mapping[str, Any]], reference: float, eps: float) -> float | None:
    """First time of a point within ``eps`` (None when no point is)."""
    for p in sorted(trace, key=lambda q: float(q["time"])):
        if within(p, reference, eps):
            return float(p["time"])
    return None


def performance_ratios(times: Mapping[str, Mapping[str, float | None]]) -> dict[str, dict[str, float]]:
    """``{instance: {solver: r}}`` from ``{instance: {solver: time or None}}`` (``r`` = inf when unsolved)."""
    out: dict[str, dict[str, float]] = {}
    for inst, row in times.items():
        solved = [float(t) for t in row.values() if t is not None]
        best = min(solved) if solved else None
        out[inst] = {}
        for s, t in row.items():
            if t is None or best is None:
                out[inst][s] = math.inf
            else:
                out[inst][s] = float(t) / best if best > 0 else (1.0 if float(t) == 0 else math.inf)
    return out


def performance_profile(times: Mapping[str, Mapping[str, float | None]], solvers: Sequence[str] | None = None,
                        taus: Sequence[float] | None = None) -> dict[str, Any]:
    """Dolan-Moré profile: ``{"taus": [...], "rho": {solver: [...]}, "ratios": {...}}``.

    ``times[instance][solver]`` is the time to accuracy (None: not reached, or not run); a
    solver missing from an instance's row counts as not solving it. ``taus`` default: 1 and
    every finite ratio (the profile's breakpoints), sorted.
    """
    insts = list(times)
    names = list(solvers) if solvers is not None else sorted({s for row in times.values() for s in row})
    full = {i: {s: times[i].get(s) for s in names} for i in insts}
    ratios = performance_ratios(full)
    if taus is None:
        finite = {r for row in ratios.values() for r in row.values() if math.isfinite(r)}
        taus = sorted(finite | {1.0})
    taus = [float(t) for t in taus]
    m = len(insts)
    rho = {s: [(sum(1 for i in insts if ratios[i][s] <= tau) / m) if m else 0.0 for tau in taus] for s in names}
    return {"taus": taus, "rho": rho, "ratios": ratios, "instances": insts, "solvers": names}
