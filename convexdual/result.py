"""Plain result objects: solver status, timings and the result of a solve."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from convexdual._io import to_jsonable
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

    @property
    def scope(self) -> str:
        """Over what the status holds: "exact" (every sign pattern enumerated on the data, so an
        optimal point is a global optimum of (2)), "sampled" (optimal over the sampled patterns
        only: a restriction of (2)) or "unknown" (the problem's facts are not in ``info``)."""
        if self.certificate is not None and getattr(self.certificate, "scope", None) in ("exact", "sampled"):
            return str(self.certificate.scope)
        exact = self.info.get("exact_patterns")
        return "unknown" if exact is None else ("exact" if exact else "sampled")

    def optimality(self) -> str:
        """One phrase saying what was shown, e.g. "optimal over the 100 sampled patterns" or
        "globally optimal (exact enumeration of all 512 sign patterns)"."""
        P = self.info.get("P")
        if self.status is not Status.OPTIMAL:
            return f"{self.status.value} (not certified optimal)"
        if self.scope == "exact":
            return "globally optimal (exact enumeration" + (f" of all {P} sign patterns)" if P else ")")
        if self.scope == "sampled":
            return (f"optimal over the {P} sampled patterns" if P else "optimal over the sampled patterns") + \
                " only (not a global claim)"
        return "optimal over the problem's sign patterns"

    def __repr__(self) -> str:
        """A few lines (never arrays): status, objective, gap, neurons."""
        gap = "n/a" if self.certificate is None else f"{self.certificate.relative_gap:.2e} (relative)"
        ok = "" if self.certificate is None else (", certified" if self.certificate.ok else ", NOT certified")
        return (f"SolveResult(solver={self.solver!r}, status={self.status.value!r}, scope={self.scope!r},\n"
                f"            objective={self.objective:.10g}, gap={gap}{ok}, neurons={self.num_groups})")

    def summary(self) -> str:
        lines = [
            f"solver      : {self.solver}",
            f"status      : {self.status.value}: {self.optimality()}",
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
            "scope": self.scope,
            "optimality": self.optimality(),
            "message": self.message,
            "certificate": None if self.certificate is None else self.certificate.to_dict(),
            "info": to_jsonable(self.info),
        }
