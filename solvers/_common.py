"""Shared pieces of the torch solvers: options, checkpoints, progress bar, certified bounds.

Checkpoints (:mod:`convexdual.checkpoint`: npz + JSON, loaded without unpickling, checked
against a sha256 problem fingerprint) hold everything a run needs to continue
bit-for-bit on CPU (iterates, momentum, optimiser state, RNG state, iteration counter,
history); ``resume_from`` loads one and the solve continues the same run.
The certified bounds here are the exact ones of docs/math.md §6 (cone
projections by NNLS), computed through :class:`~convexdual.operators.PatternOperator`
so they never need the explicit patch matrix of all patterns.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from convexdual._threads import torch_threads
from convexdual._validation import check_fields
from convexdual.errors import SolverUnavailableError
from convexdual.problem import DualProblem
from convexdual.solvers.base import SolverBase, SolverOptions

__all__ = ["TorchSolverOptions", "torch_dtype", "save_checkpoint", "load_checkpoint",
           "checkpoint_finished", "progress_bar",
           "certified_bound", "BASE_OPTION_FIELDS", "coerce_options",
           "run_solver", "TorchSolver"]

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class TorchSolverOptions(SolverOptions):
    """Options common to the torch solvers.

    Attributes:
        tol: certified relative duality gap at which the solver stops with OPTIMAL.
        violation_tol: relative cone violation required together with ``tol``.
        max_iter: iteration limit (status MAX_ITERATIONS when reached).
        time_limit: seconds (status TIME_LIMIT), or None.
        device: "cpu", "cuda", ... (no code change needed between them).
        dtype: "float64" or "float32".
        seed: seeds every random choice of the solver (runs are deterministic).
        check_every: iterations between certificate evaluations.
        checkpoint_path: where to write checkpoints (None: never).
        checkpoint_every: iterations between checkpoints.
        resume_from: a checkpoint written by the same solver on the same problem.
        progress: show a tqdm bar with objective, gap and violation.
        memory_budget_mb: working memory of the pattern operator.
        backend: operator backend, "auto", "torch" or "numba".
        num_threads: torch intra-op threads during the solve (restored afterwards);
            None leaves torch's setting alone. 1 is much faster on a loaded machine.
    """

    tol: float = 1e-6
    violation_tol: float = 1e-7
    max_iter: int = 10_000
    device: str = "cpu"
    dtype: str = "float64"
    seed: int = 0
    check_every: int = 50
    checkpoint_path: str | None = None
    checkpoint_every: int = 100
    resume_from: str | None = None
    progress: bool = False
    memory_budget_mb: float = 512.0
    backend: str = "auto"
    num_threads: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if not (self.violation_tol > 0):
            raise ValueError(f"violation_tol must be > 0, got {self.violation_tol}")
        check_fields(self, ("check_every", "checkpoint_every"), ">=", 1)
        if self.resume_from is not None and not Path(self.resume_from).is_file():
            raise ValueError(f"resume_from={self.resume_from!r} is not a file; give a checkpoint written by "
                             "checkpoint_path")


BASE_OPTION_FIELDS = ("tol", "max_iter", "time_limit", "verbose", "native")


def coerce_options(options: Any, cls: type, fields: tuple[str, ...] = BASE_OPTION_FIELDS) -> Any:
    """``options`` if it is a ``cls`` already; else a ``cls`` taking ``fields`` from it (None: defaults).

    Lets every torch solver accept the generic :class:`SolverOptions` that ``cd.solve`` may pass.
    """
    if isinstance(options, cls):
        return options
    return cls(**({} if options is None else {k: getattr(options, k) for k in fields}))


def run_solver(solver: Any, problem: DualProblem, options: Any, *,
               fields: tuple[str, ...] = BASE_OPTION_FIELDS) -> Any:
    """The ``solve`` of a torch solver: coerce the options to ``solver.options_class``, check
    ``solver.available()`` and ``solver.check_problem(problem)`` (its declared losses), then
    ``solver._solve(problem, o)`` with ``o.num_threads`` torch threads.

    Raises:
        SolverUnavailableError: the solver's backend is not installed.
        ValueError: bad options, or a loss the solver does not declare.
    """
    o = coerce_options(options, solver.options_class, fields)
    ok, why = solver.available()
    if not ok:
        raise SolverUnavailableError(why)
    solver.check_problem(problem)
    with torch_threads(o.num_threads):
        return solver._solve(problem, o)


class TorchSolver(SolverBase):
    """Base of the torch solvers: capabilities of :class:`~convexdual.solvers.base.SolverBase`
    (nothing to install by default) and ``solve()`` by :func:`run_solver`.

    A subclass sets ``name``, ``options_class`` (and ``losses``, ``requires`` where they apply)
    and implements ``_solve(problem, options)``; ``option_fields`` are the generic fields taken
    from a plain :class:`SolverOptions`.
    """

    name: ClassVar[str]
    options_class: ClassVar[type]
    option_fields: ClassVar[tuple[str, ...]] = BASE_OPTION_FIELDS

    def solve(self, problem: DualProblem, options: Any = None) -> Any:
        return run_solver(self, problem, options, fields=self.option_fields)

    def _solve(self, problem: DualProblem, o: Any) -> Any:
        raise NotImplementedError


def torch_dtype(name: str) -> torch.dtype:
    return _DTYPES[name]


def save_checkpoint(path: str | os.PathLike, solver: str, problem: DualProblem, state: dict[str, Any], *,
                    finished: bool = False) -> None:
    """Atomically write ``state`` (tensors moved to CPU) with the problem fingerprint.

    ``finished=True``: ``state`` is the final state of a run that ended (see
    :func:`checkpoint_finished`). Format: :mod:`convexdual.checkpoint` (npz + JSON, no pickle).
    """
    from convexdual import checkpoint as _ck

    _ck.save_checkpoint(path, solver, problem, state, finished=finished)
    logger.debug("checkpoint written to %s", path)


def load_checkpoint(path: str | os.PathLike, solver: str, problem: DualProblem) -> dict[str, Any]:
    """Load a checkpoint's state dict, verified before use (nothing is unpickled or executed).

    Raises:
        convexdual.errors.CheckpointError: (a ValueError) missing, empty, truncated or corrupt file,
            another format version, another solver, or another problem.
    """
    from convexdual import checkpoint as _ck

    return _ck.load_checkpoint(path, solver, problem).state


def checkpoint_finished(path: str | os.PathLike) -> bool:
    """True when the checkpoint at ``path`` was saved with ``finished=True`` (the run had ended):
    a solver resuming from it returns the recorded final state instead of running another round."""
    from convexdual import checkpoint as _ck

    return _ck.checkpoint_finished(path)


def _fingerprint(problem: DualProblem) -> str:
    """sha256 of the problem's inputs, targets, gates, kernel, beta, loss and residual setting."""
    from convexdual.checkpoint import problem_fingerprint

    return problem_fingerprint(problem)


def progress_bar(total: int, enabled: bool, desc: str, initial: int = 0) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc=desc, leave=False, dynamic_ncols=True)


def certified_bound(problem: DualProblem, yhat: np.ndarray) -> tuple[float, np.ndarray]:
    """Certified lower bound ``g`` on (4) from the residual at ``yhat``; returns ``(g, v)``:
    ``v0 = -dL/dyhat`` scaled to dual feasibility by the problem's engine
    (:meth:`convexdual.engine.PatternEngine.dual_bound`)."""
    v0 = problem.loss.dual_candidate(np.asarray(yhat, dtype=np.float64) - problem.y)
    b = problem.engine.dual_bound(problem.loss, problem.y, problem.beta, v0)
    return b.value, b.scale * v0
