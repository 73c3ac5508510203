"""Shared pieces of the torch solvers: options, checkpoints, progress bar, certified bounds.

Checkpoints are ``torch.save`` dictionaries holding everything a run needs to
continue bit-for-bit on CPU (iterates, momentum, optimiser state, RNG state,
iteration counter, history); ``resume_from`` loads one and the solve continues the
same run. The certified bounds here are the exact ones of MATH.md §6 (cone
projections by NNLS), computed through :class:`~convexdual.operators.PatternOperator`
so they never need the explicit patch matrix of all patterns.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator

import numpy as np
import torch

from convexdual.certificate import cone_projection_norm
from convexdual.errors import SolverUnavailableError
from convexdual.operators import PatternOperator
from convexdual.problem import DualProblem
from convexdual.solvers.base import SolverOptions

__all__ = ["TorchSolverOptions", "torch_dtype", "torch_threads", "save_checkpoint", "load_checkpoint", "progress_bar",
           "exact_dual_constraint", "certified_bound", "relative_violation", "BASE_OPTION_FIELDS", "coerce_options",
           "require_squared_loss", "run_solver", "TorchSolver"]

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
        for name in ("check_every", "checkpoint_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.resume_from is not None and not Path(self.resume_from).is_file():
            raise ValueError(f"resume_from={self.resume_from!r} is not a file; give a checkpoint written by "
                             "checkpoint_path")


@contextlib.contextmanager
def torch_threads(num: int | None) -> Iterator[None]:
    """Use ``num`` torch threads inside the block and restore the previous number."""
    if num is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(int(num))
    try:
        yield
    finally:
        torch.set_num_threads(old)


BASE_OPTION_FIELDS = ("tol", "max_iter", "time_limit", "verbose", "native")


def coerce_options(options: Any, cls: type, fields: tuple[str, ...] = BASE_OPTION_FIELDS) -> Any:
    """``options`` if it is a ``cls`` already; else a ``cls`` taking ``fields`` from it (None: defaults).

    Lets every torch solver accept the generic :class:`SolverOptions` that ``cd.solve`` may pass.
    """
    if isinstance(options, cls):
        return options
    return cls(**({} if options is None else {k: getattr(options, k) for k in fields}))


def require_squared_loss(problem: DualProblem, solver: str, hint: str = "") -> None:
    """Raise ``ValueError`` unless ``problem`` uses the squared loss (``hint`` is appended to the message)."""
    if problem.loss.name != "squared":
        raise ValueError(f"solver {solver!r} supports the squared loss only (got {problem.loss.name!r}){hint}")


def run_solver(solver: Any, problem: DualProblem, options: Any, *, fields: tuple[str, ...] = BASE_OPTION_FIELDS,
               squared_only: bool = False, loss_hint: str = "") -> Any:
    """The ``solve`` of a torch solver: coerce the options to ``solver.options_class``, check
    ``solver.available()`` (and the loss, with ``squared_only``), then ``solver._solve(problem, o)``
    with ``o.num_threads`` torch threads.

    Raises:
        SolverUnavailableError: the solver's backend is not installed.
        ValueError: bad options, or a non-squared loss with ``squared_only``.
    """
    o = coerce_options(options, solver.options_class, fields)
    ok, why = solver.available()
    if not ok:
        raise SolverUnavailableError(why)
    if squared_only:
        require_squared_loss(problem, solver.name, loss_hint)
    with torch_threads(o.num_threads):
        return solver._solve(problem, o)


class TorchSolver:
    """Base of the torch solvers: ``available()`` (nothing to install) and ``solve()`` by :func:`run_solver`.

    A subclass sets ``name``, ``options_class`` and implements ``_solve(problem, options)``;
    ``option_fields`` (generic fields taken from a plain :class:`SolverOptions`),
    ``squared_only`` and ``loss_hint`` tune :func:`run_solver`.
    """

    name: ClassVar[str]
    options_class: ClassVar[type]
    option_fields: ClassVar[tuple[str, ...]] = BASE_OPTION_FIELDS
    squared_only: ClassVar[bool] = False
    loss_hint: ClassVar[str] = ""

    def available(self) -> tuple[bool, str]:
        return True, ""

    def solve(self, problem: DualProblem, options: Any = None) -> Any:
        return run_solver(self, problem, options, fields=self.option_fields, squared_only=self.squared_only,
                          loss_hint=self.loss_hint)

    def _solve(self, problem: DualProblem, o: Any) -> Any:
        raise NotImplementedError


def torch_dtype(name: str) -> torch.dtype:
    return _DTYPES[name]


def save_checkpoint(path: str | os.PathLike, solver: str, problem: DualProblem, state: dict[str, Any]) -> None:
    """Atomically write ``state`` (tensors moved to CPU) with a problem fingerprint."""
    blob = {"solver": solver, "fingerprint": _fingerprint(problem),
            "state": {k: (v.detach().cpu() if torch.is_tensor(v) else v) for k, v in state.items()}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)
    logger.debug("checkpoint written to %s", path)


def load_checkpoint(path: str | os.PathLike, solver: str, problem: DualProblem) -> dict[str, Any]:
    """Load a checkpoint; refuse one from another solver or another problem."""
    blob = torch.load(path, map_location="cpu", weights_only=False)
    if blob.get("solver") != solver:
        raise ValueError(f"checkpoint {path} was written by solver {blob.get('solver')!r}, not {solver!r}")
    if blob.get("fingerprint") != _fingerprint(problem):
        raise ValueError(f"checkpoint {path} belongs to a different problem (sizes/beta/patterns differ)")
    return blob["state"]


def _fingerprint(problem: DualProblem) -> dict[str, Any]:
    g = problem.patterns.gates
    return {"n": problem.n, "d": problem.d, "P": problem.P, "beta": float(problem.beta),
            "loss": problem.loss.name, "gates": float(np.abs(g).sum()), "y": float(np.abs(problem.y).sum())}


def progress_bar(total: int, enabled: bool, desc: str, initial: int = 0) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc=desc, leave=False, dynamic_ncols=True)


def cone_rows(op: PatternOperator, i: int) -> np.ndarray:
    """``(2 D_i - I) X`` as an ``(n, d)`` float64 numpy matrix (one pattern)."""
    rows = []
    g = op.gates[i:i + 1]
    for s, e in op.batches():
        Xb = op.patches(s, e)
        sgn = torch.where(Xb @ g.T >= 0, 1.0, -1.0).to(op.dtype)
        rows.append((sgn * Xb).double().cpu().numpy())
    return np.concatenate(rows)


def exact_dual_constraint(op: PatternOperator, C: np.ndarray, *, stop_below: float = 0.0,
                          cache: dict[int, np.ndarray] | None = None) -> tuple[float, np.ndarray]:
    """``max_i max(||Proj_Ki(c_i)||, ||Proj_Ki(-c_i)||)`` for ``C = (X^T D_i v)_i``.

    Groups are visited by decreasing ``||c_i||`` (an upper bound of both projections)
    and the scan stops once ``||c_i||`` is below the best so far and ``stop_below``.

    Returns:
        ``(max, values (2P,))``: values ``[+c_i projections, -c_i projections]`` (NaN
        where skipped: those are at most ``max(best, stop_below)``).
    """
    cn = np.linalg.norm(C, axis=1)
    vals = np.full(2 * len(C), np.nan)
    best = 0.0
    for i in np.argsort(-cn):
        if cn[i] <= max(best, stop_below):
            break
        A = cache.get(int(i)) if cache is not None else None
        if A is None:
            A = cone_rows(op, int(i))
            if cache is not None:
                cache[int(i)] = A
        vals[i] = cone_projection_norm(A, C[i])
        vals[len(C) + i] = cone_projection_norm(A, -C[i])
        best = max(best, vals[i], vals[len(C) + i])
    return best, vals


def certified_bound(problem: DualProblem, op: PatternOperator, yhat: np.ndarray,
                    cache: dict[int, np.ndarray] | None = None) -> tuple[float, np.ndarray]:
    """Certified lower bound ``g`` on (4) from the residual at ``yhat``; returns ``(g, v)``.

    ``v0 = -dL/dyhat`` is scaled to dual feasibility exactly as
    :func:`convexdual.certificate.dual_lower_bound` does, using the operator.
    """
    v0 = problem.loss.dual_candidate(np.asarray(yhat, dtype=np.float64) - problem.y)
    C = op.adjoint(torch.as_tensor(v0, dtype=op.dtype, device=op.device)).double().cpu().numpy()
    M, _ = exact_dual_constraint(op, C, cache=cache)
    s_max = np.inf if M == 0 else problem.beta / M
    vinf = float(np.abs(v0).max(initial=0.0))
    if np.isfinite(problem.loss.dual_bound) and vinf > 0:
        s_max = min(s_max, problem.loss.dual_bound / vinf)
    s = problem.loss.best_dual_scale(v0, problem.y, 1e300 if not np.isfinite(s_max) else s_max)
    return problem.loss.dual_value(s * v0, problem.y), s * v0


def relative_violation(op: PatternOperator, W: np.ndarray, Z: np.ndarray, xmax: float,
                       rel_tol: float = 1e-6, scale: float = 0.0) -> float:
    """Largest relative cone violation, defined as in ``DualProblem.cone_violation``.

    ``max relu(-(2D_i - I) X w_i) / (xmax * s)`` over groups with ``||w_i|| > rel_tol * s``,
    ``s = max(max_j ||w_j||, scale)`` (``scale``: ``DualProblem.weight_scale`` when known).
    """
    nw, nz = np.linalg.norm(W, axis=1), np.linalg.norm(Z, axis=1)
    top = max(nw.max(initial=0.0), nz.max(initial=0.0), float(scale))
    if top == 0.0:
        return 0.0
    worst = 0.0
    for V, norms in ((W, nw), (Z, nz)):
        idx = np.flatnonzero(norms > rel_tol * top)
        if len(idx) == 0:
            continue
        vals = op.group_values(idx, V[idx]).double().cpu().numpy()  # (n, m)
        worst = max(worst, float(np.maximum(-vals, 0.0).max()) / (xmax * top))
    return worst