"""The solver protocol, the common options, and the shared finishing step.

A solver turns a :class:`~convexdual.problem.DualProblem` into a raw
:class:`~convexdual.result.SolveResult` (status, objective, ``W``, ``Z``, timings,
iterations, optionally a dual point). :func:`finalize` then recovers the primal
network (eq. 5) and attaches the certificate (docs/math.md §6); every solver shares it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch

from convexdual.certificate import certify_solution
from convexdual.problem import DualProblem
from convexdual.recover import recover_network
from convexdual.result import SolveResult, Status

__all__ = ["Solver", "SolverBase", "SolverOptions", "EXPLICIT", "OPERATOR", "finalize", "status_from_certificate"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SolverOptions:
    """Options every solver understands.

    Attributes:
        tol: the solver's optimality tolerance (relative gap for interior point).
        max_iter: iteration limit.
        time_limit: seconds, or None.
        verbose: let the backend print its log.
        native: backend-specific options passed through as given (the only
            escape hatch; nothing else is forwarded blindly).
    """

    tol: float = 1e-9
    max_iter: int = 500
    time_limit: float | None = None
    verbose: bool = False
    native: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (self.tol > 0):
            raise ValueError(f"tol must be > 0, got {self.tol}")
        import math
        import numbers

        mi = self.max_iter
        # an iteration count: an integer (or an integral float such as 1e4), never a bool or 2.7
        if isinstance(mi, bool) or not isinstance(mi, (numbers.Integral, numbers.Real)) or (
                not isinstance(mi, numbers.Integral) and not (math.isfinite(mi) and float(mi).is_integer())):
            raise ValueError(f"max_iter must be an integer >= 1 (a number of iterations), got {mi!r}")
        if int(mi) < 1:
            raise ValueError(f"max_iter must be an integer >= 1, got {mi!r}")
        object.__setattr__(self, "max_iter", int(mi))
        if self.time_limit is not None and not (self.time_limit > 0):
            raise ValueError(f"time_limit must be > 0 seconds or None, got {self.time_limit}")

    def replace(self, **changes: Any) -> "SolverOptions":
        return dataclasses.replace(self, **changes)


@runtime_checkable
class Solver(Protocol):
    """What a backend provides."""

    name: ClassVar[str]
    options_class: ClassVar[type[SolverOptions]]

    def available(self) -> tuple[bool, str]:
        """``(True, "")`` or ``(False, reason and fix)``; cheap, never raises."""

    def solve(self, problem: DualProblem, options: SolverOptions) -> SolveResult:
        """Solve; return a raw result (no network, no certificate)."""

    def accepts(self, problem: DualProblem) -> tuple[bool, str]:
        """``(True, "")`` or ``(False, why)``: whether this solver takes ``problem``; never raises."""


#: ``SolverBase.scale``: the solver builds the explicit SOCP (4) (``P x n`` cone rows, small problems)
EXPLICIT = "explicit"
#: ``SolverBase.scale``: the solver works from the gates through operator passes (the paper's size)
OPERATOR = "operator"


class SolverBase:
    """Declarative capabilities of a solver, and the generic checks they drive (cvxpy's
    ``Solver.is_installed`` / ``accepts``).

    A subclass declares, as class attributes:

    * ``requires``: modules that must be importable (``install`` names what to pip install);
    * ``losses``: the losses it solves (None: every loss);
    * ``scale``: :data:`EXPLICIT` (builds the explicit SOCP, memory-checked) or :data:`OPERATOR`.

    ``available()`` and ``accepts(problem)`` follow from them; a subclass overrides
    ``available`` only for a check no declaration states (MOSEK's licence probe).
    """

    name: ClassVar[str]
    options_class: ClassVar[type[SolverOptions]]
    requires: ClassVar[tuple[str, ...]] = ()
    install: ClassVar[str] = ""
    losses: ClassVar[tuple[str, ...] | None] = None
    loss_hint: ClassVar[str] = ""
    scale: ClassVar[str] = OPERATOR

    def available(self) -> tuple[bool, str]:
        import importlib.util

        for module in self.requires:
            if importlib.util.find_spec(module) is None:
                return False, (f"{self.name} needs {module!r}, which is not installed; install it with: "
                               f"pip install {self.install or module}")
        return True, ""

    def accepts(self, problem: DualProblem) -> tuple[bool, str]:
        refusal = self._refusal(problem)
        return (True, "") if refusal is None else (False, str(refusal))

    def check_problem(self, problem: DualProblem) -> None:
        """Raise what :meth:`accepts` says: ``ValueError`` for a loss this solver does not solve,
        :class:`~convexdual.engine.MemoryBudgetError` (a ValueError) for an explicit SOCP too large."""
        refusal = self._refusal(problem)
        if refusal is not None:
            raise refusal

    def _refusal(self, problem: DualProblem) -> ValueError | None:
        if self.losses is not None and problem.loss.name not in self.losses:
            return ValueError(f"solver {self.name!r} supports the {' / '.join(self.losses)} loss only (got "
                              f"{problem.loss.name!r}){self.loss_hint}")
        if self.scale == EXPLICIT:
            from convexdual.cvxpy_program import check_size
            from convexdual.engine import MemoryBudgetError

            try:
                check_size(problem)
            except MemoryBudgetError as exc:
                return exc
        return None


def status_from_certificate(status: Status, cert: Any, message: str, tolerance: float,
                            violation_tolerance: float) -> tuple[Status, str]:
    """The status rule, in one place: a solution is OPTIMAL iff its certificate holds at the
    requested tolerances (relative gap, cone violation and recovery error), whatever the backend
    said; an OPTIMAL / OPTIMAL_INACCURATE point whose certificate fails is OPTIMAL_INACCURATE with
    the reason. Early stops (time or iteration limits, interruptions, errors) keep their status."""
    if cert is None or status not in (Status.OPTIMAL, Status.OPTIMAL_INACCURATE):
        return status, message
    if cert.ok:
        if status is Status.OPTIMAL:
            return status, message
        note = (f"backend reported an inaccurate solve, but the point is certified: relative gap "
                f"{cert.relative_gap:.2e} <= {tolerance:g}, violation {cert.max_violation:.2e} "
                f"<= {violation_tolerance:g}")
        return Status.OPTIMAL, f"{message}; {note}" if message else note
    why = []
    if cert.relative_gap < -tolerance:
        why.append(f"negative gap {cert.relative_gap:.2e}: the point is not a point of (4) or a bound is broken")
    if not (cert.relative_gap <= tolerance):
        why.append(f"relative gap {cert.relative_gap:.2e} > {tolerance:g}")
    if not (cert.max_violation <= violation_tolerance):
        why.append(f"cone violation {cert.max_violation:.2e} > {violation_tolerance:g}")
    if cert.recovery_error is not None and not (cert.recovery_error <= tolerance):
        why.append(f"recovered net's objective differs by {cert.recovery_error:.2e} (> {tolerance:g})")
    note = ("not certified: " + ", ".join(why)) if why else "not certified"
    if status is Status.OPTIMAL:
        note = f"solver reported optimal but the certificate disagrees ({note})"
        logger.warning(note)
    return Status.OPTIMAL_INACCURATE, f"{message}; {note}" if message else note


def finalize(problem: DualProblem, raw: SolveResult, *, recover: bool = True, certify: bool = True,
             device: torch.device | str = "cpu", tolerance: float = 1e-6,
             violation_tolerance: float = 1e-7, progress: bool = False) -> SolveResult:
    """Recover the network and certify a raw result; returns a new SolveResult.

    The status follows the certificate (:func:`status_from_certificate`): OPTIMAL iff the
    certificate holds at ``tolerance`` / ``violation_tolerance``.
    """
    if raw.W is None or raw.Z is None or not raw.status.has_solution:
        return raw
    t0 = time.perf_counter()

    def recover_and_certify(res: SolveResult) -> tuple[Any, Any, float]:
        net = recover_network(problem, res.W, res.Z, device=device) if recover else None
        t = time.perf_counter()
        if not certify:
            return net, None, t
        net_cpu = None
        if net is not None:
            net_cpu = net if str(device) == "cpu" else recover_network(problem, res.W, res.Z)
        return net, certify_solution(problem, res.W, res.Z, network=net_cpu, dual=res.dual, tolerance=tolerance,
                                     violation_tolerance=violation_tolerance, progress=progress), t

    net, cert, t1 = recover_and_certify(raw)
    if cert is not None and not cert.ok and cert.max_violation > 1e-13:
        # interior-point points leave their cones by ~1e-9; projecting those groups exactly makes the
        # recovered ReLU net reproduce (4). The projected point is kept when its certificate holds.
        W, Z, moved = problem.engine.polish(raw.W, raw.Z, scale=problem.weight_scale)
        if moved:
            obj = problem.objective(W, Z)
            note = (f"{moved} group(s) projected exactly onto their cones before recovery (objective "
                    f"{raw.objective:.10g} -> {obj:.10g})")
            cand = dataclasses.replace(raw, W=W, Z=Z, objective=obj,
                                       message=f"{raw.message}; {note}" if raw.message else note)
            net2, cert2, t1 = recover_and_certify(cand)
            if cert2.ok:
                raw, net, cert = cand, net2, cert2
    status, message = raw.status, raw.message
    if cert is not None:
        status, message = status_from_certificate(status, cert, message, tolerance, violation_tolerance)
    t2 = time.perf_counter()
    timings = dataclasses.replace(raw.timings, recover=t1 - t0, certify=t2 - t1)
    return dataclasses.replace(raw, network=net, certificate=cert, timings=timings, status=status,
                               message=message)
