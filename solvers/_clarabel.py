"""Clarabel called directly (no CVXPY): the settings, the status map and the call.

The one place that knows Clarabel's names (in the spirit of cvxpy's
``clarabel_conif.py``): both working-set solvers (``clarabel-ws``, ``active_set``) solve
their restricted programs through :func:`solve_program`, and the CVXPY backend
(:class:`~convexdual.solvers.interior_point.ClarabelSolver`) takes its keyword arguments
from :func:`settings_dict`, so a tolerance means the same thing on every path.
"""

from __future__ import annotations

from typing import Any

from convexdual.result import Status

__all__ = ["STATUS_MAP", "map_clarabel_status", "status_name", "settings_dict", "make_settings", "solve_program"]

#: Clarabel's ``SolverStatus`` names -> Status (anything else: SOLVER_ERROR)
STATUS_MAP: dict[str, Status] = {
    "Solved": Status.OPTIMAL,
    "AlmostSolved": Status.OPTIMAL_INACCURATE,
    "MaxIterations": Status.MAX_ITERATIONS,
    "MaxTime": Status.TIME_LIMIT,
    "PrimalInfeasible": Status.INFEASIBLE,
    "AlmostPrimalInfeasible": Status.INFEASIBLE,
    "DualInfeasible": Status.UNBOUNDED,
    "AlmostDualInfeasible": Status.UNBOUNDED,
    "NumericalError": Status.NUMERICAL_ERROR,
    "InsufficientProgress": Status.NUMERICAL_ERROR,
}

KKT_METHODS = ("qdldl", "faer")


def status_name(status: Any) -> str:
    """``"Solved"`` for ``SolverStatus.Solved`` (or the string itself)."""
    return str(status).split(".")[-1]


def map_clarabel_status(status: Any) -> Status:
    """Clarabel's ``SolverStatus`` -> Status; anything unknown is SOLVER_ERROR."""
    return STATUS_MAP.get(status_name(status), Status.SOLVER_ERROR)


def settings_dict(*, gap_tol: float, feas_tol: float, max_iter: int, kkt: str,
                  time_limit: float | None = None) -> dict[str, Any]:
    """Clarabel's settings for the common options, by Clarabel's names (also CVXPY's keywords).

    Raises:
        ValueError: an unknown direct solve method.
    """
    if kkt not in KKT_METHODS:
        raise ValueError(f"clarabel_kkt must be 'qdldl' or 'faer', got {kkt!r}")
    kw: dict[str, Any] = {"tol_gap_abs": gap_tol, "tol_gap_rel": gap_tol, "tol_feas": feas_tol,
                          "max_iter": int(max_iter), "direct_solve_method": kkt}
    if time_limit is not None:
        kw["time_limit"] = float(time_limit)
    return kw


def make_settings(values: dict[str, Any], native: dict[str, Any], verbose: bool = False) -> Any:
    """``clarabel.DefaultSettings`` with ``values`` (from :func:`settings_dict`), then ``native``.

    Raises:
        ValueError: a ``native`` key that is not a Clarabel setting, or a value Clarabel refuses
            (the message names the key).
    """
    import clarabel

    st = clarabel.DefaultSettings()
    st.verbose = bool(verbose)
    for key, val in values.items():
        setattr(st, key, val)
    for key, val in native.items():
        if not hasattr(st, key):
            raise ValueError(f"unknown Clarabel setting {key!r} in options.native")
        try:
            setattr(st, key, val)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"Clarabel setting {key!r} in options.native refused {val!r}: {exc}") from None
    return st


def solve_program(prog: Any, values: dict[str, Any], native: dict[str, Any], verbose: bool = False) -> Any:
    """Solve a restricted program (:class:`~convexdual.compressed_program.RestrictedProgram`:
    ``P, q, A, b, cones()``) with Clarabel; returns Clarabel's solution object.

    ``values["time_limit"]``, when given, is floored at 1 ms (Clarabel refuses 0)."""
    import clarabel

    if values.get("time_limit") is not None:
        values = {**values, "time_limit": max(float(values["time_limit"]), 1e-3)}
    st = make_settings(values, native, verbose)
    return clarabel.DefaultSolver(prog.P, prog.q, prog.A, prog.b, prog.cones(), st).solve()
