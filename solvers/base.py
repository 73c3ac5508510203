"""The solver protocol, the common options, and the shared finishing step.

A solver turns a :class:`~convexdual.problem.DualProblem` into a raw
:class:`~convexdual.result.SolveResult` (status, objective, ``W``, ``Z``, timings,
iterations, optionally a dual point). :func:`finalize` then recovers the primal
network (eq. 5) and attaches the certificate (MATH.md §6); every solver shares it.
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

__all__ = ["Solver", "SolverOptions", "finalize"]

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
        if int(self.max_iter) < 1:
            raise ValueError(f"max_iter must be >= 1, got {self.max_iter}")
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


def finalize(problem: DualProblem, raw: SolveResult, *, recover: bool = True, certify: bool = True,
             device: torch.device | str = "cpu", tolerance: float = 1e-6,
             violation_tolerance: float = 1e-7) -> SolveResult:
    """Recover the network and certify a raw result; returns a new SolveResult.

    A solver's "optimal" whose certificate fails badly (relative gap > 1e-3 or
    violation > 1e-4) is downgraded to OPTIMAL_INACCURATE, with the reason in the message.
    An OPTIMAL_INACCURATE whose certificate holds (``certificate.ok``: gap and violation
    within the tolerances, recovered net reproducing the program) is upgraded to OPTIMAL,
    also with the reason: the certificate is an independent proof.
    """
    if raw.W is None or raw.Z is None or not raw.status.has_solution:
        return raw
    t0 = time.perf_counter()
    net = recover_network(problem, raw.W, raw.Z, device=device) if recover else None
    t1 = time.perf_counter()
    cert = None
    status, message = raw.status, raw.message
    if certify:
        net_cpu = None
        if net is not None:
            net_cpu = net if str(device) == "cpu" else recover_network(problem, raw.W, raw.Z)
        cert = certify_solution(problem, raw.W, raw.Z, network=net_cpu, dual=raw.dual,
                                tolerance=tolerance, violation_tolerance=violation_tolerance)
        if status is Status.OPTIMAL and (cert.relative_gap > 1e-3 or cert.max_violation > 1e-4):
            status = Status.OPTIMAL_INACCURATE
            note = (f"solver reported optimal but the certificate disagrees (relative gap "
                    f"{cert.relative_gap:.2e}, violation {cert.max_violation:.2e})")
            logger.warning(note)
            message = f"{message}; {note}" if message else note
        elif status is Status.OPTIMAL_INACCURATE and cert.ok:
            # the certificate is a proof on its own (a dual feasible point from exact cone
            # projections, and the recovered net's objective evaluated independently)
            status = Status.OPTIMAL
            note = (f"backend reported an inaccurate solve, but the point is certified: relative gap "
                    f"{cert.relative_gap:.2e} <= {tolerance:g}, violation {cert.max_violation:.2e} "
                    f"<= {violation_tolerance:g}")
            message = f"{message}; {note}" if message else note
    t2 = time.perf_counter()
    timings = dataclasses.replace(raw.timings, recover=t1 - t0, certify=t2 - t1)
    return dataclasses.replace(raw, network=net, certificate=cert, timings=timings, status=status,
                               message=message)
