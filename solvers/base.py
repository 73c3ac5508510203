"""The solver protocol, the common options and the declared capabilities.

A solver turns a :class:`~convexdual.problem.DualProblem` into a raw
:class:`~convexdual.result.SolveResult` (status, objective, ``W``, ``Z``, timings,
iterations, optionally a dual point), nothing more. Recovering the network (eq. 5),
certifying it and the status rule are the API layer's (:mod:`convexdual.pipeline`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

from convexdual.problem import DualProblem
from convexdual.result import SolveResult

__all__ = ["Solver", "SolverBase", "SolverOptions", "EXPLICIT", "OPERATOR"]


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
    label: ClassVar[str] = ""  # the name in messages ("MOSEK"); "" is the registry name
    requires: ClassVar[tuple[str, ...]] = ()
    install: ClassVar[str] = ""
    losses: ClassVar[tuple[str, ...] | None] = None
    loss_hint: ClassVar[str] = ""
    scale: ClassVar[str] = OPERATOR
    sharded: ClassVar[bool] = False  # solves a problem whose images are sharded over ranks (convexdual.distributed)

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
        if getattr(problem, "distributed", False) and not self.sharded:
            return ValueError(f"solver {self.name!r} does not run on images sharded over {problem.comm.world} "
                              "ranks; use solver='active_set' (or 'auto') under torchrun, or one process")
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
