"""Plain result objects: solver status, timings and the result of a solve."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from convexdual.errors import SolverFailedError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from convexdual.certificate import Certificate

__all__ = ["Status", "Timings", "SolveResult"]


class Status(str, enum.Enum):
    """Outcome of a solve. Compare with the enum or with its string value."""

    OPTIMAL = "optimal"
    OPTIMAL_INACCURATE = "optimal_inaccurate"
    MAX_ITERATIONS = "max_iterations"
    TIME_LIMIT = "time_limit"
    INFEASIBLE = "infeasible"
    UNBOUNDED = "unbounded"
    NUMERICAL_ERROR = "numerical_error"
    SOLVER_ERROR = "solver_error"
    INTERRUPTED = "interrupted"

    def __str__(self) -> str:  # "optimal", not "Status.OPTIMAL"
        return self.value

    @property
    def is_optimal(self) -> bool:
        return self is Status.OPTIMAL

    @property
    def has_solution(self) -> bool:
        """Whether the solver returned iterates worth looking at."""
        return self in (
            Status.OPTIMAL,
            Status.OPTIMAL_INACCURATE,
            Status.MAX_ITERATIONS,
            Status.TIME_LIMIT,
            Status.INTERRUPTED,
        )


@dataclass(frozen=True)
class Timings:
    """Wall-clock seconds of each stage of a solve."""

    build: float = 0.0
    solve: float = 0.0
    recover: float = 0.0
    certify: float = 0.0

    @property
    def total(self) -> float:
        return self.build + self.solve + self.recover + self.certify

    def to_dict(self) -> dict[str, float]:
        d = dataclasses.asdict(self)
        d["total"] = self.total
        return d


@dataclass(frozen=True)
class SolveResult:
    """What a solver found for a :class:`~convexdual.problem.DualProblem`.

    Attributes:
        status: The mapped solver status. Only ``Status.OPTIMAL`` means the
            solver claims its optimality tolerance was met; the certificate
            says independently how good the point is.
        objective: Value of program (4) at ``(W, Z)``: the exact sum of the loss
            over all patch rows plus ``beta * sum(||w_i|| + ||z_i||)`` (not averaged).
            ``nan`` when the solver returned no point.
        W, Z: Dual weights, shape ``(P, d)`` with ``d = C*k*k``.
        network: The recovered primal CNN (eq. 5), or None.
        certificate: Duality gap and feasibility check, or None.
        solver: Registry name of the solver.
        iterations: Iterations the solver reported (-1 if unknown).
        timings: Seconds per stage.
        message: Human-readable note from the solver (native status, fallbacks).
        dual: A dual candidate ``v`` (length n) from the solver when it has one.
        history: Per-iteration log (first-order solvers), list of dicts.
        info: Extra solver-specific facts (native status, sizes, ...).
    """

    status: Status
    objective: float
    W: np.ndarray | None
    Z: np.ndarray | None
    solver: str
    network: "torch.nn.Module | None" = None
    certificate: "Certificate | None" = None
    iterations: int = -1
    timings: Timings = field(default_factory=Timings)
    message: str = ""
    dual: np.ndarray | None = None
    history: tuple[dict[str, float], ...] = ()
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_groups(self) -> int:
        """Number of nonzero groups (w_i or z_i) = number of recovered neurons."""
        return 0 if self.network is None else int(getattr(self.network, "width", 0))

    def raise_for_status(self) -> "SolveResult":
        """Raise :class:`SolverFailedError` unless the status is OPTIMAL; return self."""
        if self.status is not Status.OPTIMAL:
            raise SolverFailedError(
                f"solver {self.solver!r} ended with status {self.status.value!r}"
                + (f": {self.message}" if self.message else ""),
                status=self.status,
            )
        return self

    def summary(self) -> str:
        lines = [
            f"solver      : {self.solver}",
            f"status      : {self.status.value}",
            f"objective   : {self.objective:.10g}",
            f"iterations  : {self.iterations}",
            f"time [s]    : build {self.timings.build:.2f}, solve {self.timings.solve:.2f}, "
            f"recover {self.timings.recover:.2f}, certify {self.timings.certify:.2f}",
        ]
        if self.network is not None:
            lines.append(f"neurons     : {self.num_groups}")
        if self.certificate is not None:
            lines.append(self.certificate.summary())
        if self.message:
            lines.append(f"message     : {self.message}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no arrays, no network)."""
        return {
            "solver": self.solver,
            "status": self.status.value,
            "objective": float(self.objective),
            "iterations": int(self.iterations),
            "timings": self.timings.to_dict(),
            "num_neurons": self.num_groups,
            "message": self.message,
            "certificate": None if self.certificate is None else self.certificate.to_dict(),
            "info": _jsonable(self.info),
        }


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)
