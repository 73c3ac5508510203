"""``convexdual.solve``: pick a solver, solve, recover, certify."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from convexdual._registry import get_solver
from convexdual.errors import SolverUnavailableError
from convexdual.problem import DualProblem
from convexdual.result import SolveResult

__all__ = ["solve", "resolve_solver"]

logger = logging.getLogger(__name__)


def resolve_solver(solver: str) -> tuple[Any, str]:
    """The solver object for a name; "auto" is MOSEK when licensed, else Clarabel.

    Returns ``(solver, note)`` where ``note`` explains a fallback ("" otherwise).
    Raises SolverUnavailableError when a named solver cannot run, with the reason.
    """
    if not isinstance(solver, str):
        raise TypeError(f"solver must be a name such as 'clarabel', 'mosek' or 'auto'; got {solver!r}")
    if solver.lower() == "auto":
        mosek = get_solver("mosek")
        ok, why = mosek.available()
        if ok:
            return mosek, ""
        note = f"solver='auto': MOSEK unavailable ({why}); falling back to Clarabel"
        logger.warning(note)
        return get_solver("clarabel"), note
    s = get_solver(solver)
    ok, why = s.available()
    if not ok:
        raise SolverUnavailableError(why)
    return s, ""


def solve(problem: DualProblem, solver: str = "auto", options: Any = None, *, recover: bool = True,
          certify: bool = True, device: Any = "cpu", tolerance: float = 1e-6,
          violation_tolerance: float = 1e-7) -> SolveResult:
    """Solve program (4), recover the primal CNN (eq. 5) and certify it (MATH.md §6).

    Args:
        problem: from :func:`convexdual.build_problem`.
        solver: "auto" (MOSEK if licensed, else Clarabel), "clarabel", "mosek",
            "scs", "ecos", or any name in ``convexdual.available_solvers()``.
        options: the solver's options dataclass (``solver.options_class``); None for defaults.
        recover: build ``result.network``.
        certify: attach ``result.certificate``.
        device: where the recovered network lives ("cpu", "cuda", a torch.device).
        tolerance, violation_tolerance: thresholds of ``certificate.ok``.

    Returns:
        A :class:`SolveResult`; check ``result.status`` (or ``raise_for_status()``).

    Raises:
        TypeError: ``problem`` or ``options`` of the wrong type.
        SolverUnavailableError: unknown, missing or unlicensed solver (named explicitly).
    """
    from convexdual.solvers.base import finalize

    if not isinstance(problem, DualProblem):
        raise TypeError(f"problem must be a DualProblem from convexdual.build_problem(); got {type(problem).__name__}")
    backend, note = resolve_solver(solver)
    if options is None:
        options = backend.options_class()
    elif not isinstance(options, backend.options_class):
        # allow the common base options for any solver; anything else is a mistake
        from convexdual.solvers.base import SolverOptions

        if type(options) is not SolverOptions:
            raise TypeError(f"options for solver {backend.name!r} must be {backend.options_class.__name__}; "
                            f"got {type(options).__name__}")
    raw = backend.solve(problem, options)
    if note:
        raw = dataclasses.replace(raw, message=f"{note}. {raw.message}" if raw.message else note)
    return finalize(problem, raw, recover=recover, certify=certify, device=device, tolerance=tolerance,
                    violation_tolerance=violation_tolerance)
