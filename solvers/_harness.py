"""The iteration harness: one loop owner for the iterative torch solvers (sigpy's ``Alg`` / ``App``).

A solver supplies its mathematics: ``_setup`` (data and operators), ``_fresh`` / ``_restore``
(the first iterate, or the one a checkpoint holds), ``_step`` (one iteration, returning what
it measured), ``_state`` (what a checkpoint must hold to continue bit-for-bit), ``_on_stop``
and ``_outcome`` (the point it reports). :func:`run_iterations` owns everything else:

* the progress bar (objective, gap and violation of each evaluated iteration);
* the history, one schema for every solver (:class:`Iteration`: ``iteration, time,
  objective, dual_bound, relative_gap, violation`` and the solver's extra columns);
* checkpoints every ``checkpoint_every`` iterations and ``resume_from`` (the iteration
  counter, history and elapsed time are the harness's part of the state);
* the certified stop: an evaluated iteration with ``relative_gap <= tol`` and
  ``violation <= violation_tol`` (the solvers measure both through the problem's certificate
  engine) ends the run OPTIMAL; a step may also stop or abort the run with its own status;
* a run that ended OPTIMAL / OPTIMAL_INACCURATE leaves a *finished* checkpoint holding its
  answer; resuming from it returns that answer and runs nothing;
* the time limit (checked before each step, whose ``time_left`` it passes, and after it),
  Ctrl-C (INTERRUPTED), and building the :class:`~convexdual.result.SolveResult`.

Used by ``fista``, ``augmented_lagrangian``, ``adam_hinge`` and ``active_set``
(:class:`IterativeSolver`), and by the rounds of ``clarabel-ws``, which implements the same
hooks (:class:`IterationHooks`) on a non-torch solver, keeps its own clock (each Clarabel solve
gets what is left of the time limit), no checkpoints, and reports its Clarabel iterations
(:attr:`Outcome.iterations`). Not (yet) by the rounds of pattern generation
(docs/ARCHITECTURE.md says so).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from convexdual.problem import DualProblem
from convexdual.result import SolveResult, Status, Timings
from convexdual.solvers._common import (
    TorchSolver,
    checkpoint_finished,
    load_checkpoint,
    progress_bar,
    save_checkpoint,
)

__all__ = ["Evaluation", "Iteration", "Step", "Outcome", "IterationHooks", "IterativeSolver", "run_iterations"]


@dataclass(frozen=True)
class Evaluation:
    """What a step measured at its point: objective, certified dual bound, relative gap and
    relative cone violation (``extra``: the solver's own columns)."""

    objective: float
    dual_bound: float
    relative_gap: float
    violation: float
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Iteration:
    """One row of every solver's history (``as_dict`` is what ``SolveResult.history`` holds)."""

    iteration: int
    time: float
    evaluation: Evaluation

    def as_dict(self) -> dict[str, Any]:
        e = self.evaluation
        return {"iteration": self.iteration, "time": self.time, "objective": e.objective,
                "dual_bound": e.dual_bound, "relative_gap": e.relative_gap, "violation": e.violation, **e.extra}


@dataclass(frozen=True)
class Step:
    """A step's report. ``evaluation``: None when the step measured nothing. ``stop``: end the
    run after this iteration (after its checkpoint) with this status and message; ``abort``: end
    it now (nothing recorded or saved)."""

    evaluation: Evaluation | None = None
    stop: tuple[Status, str] | None = None
    abort: tuple[Status, str] | None = None


@dataclass(frozen=True)
class Outcome:
    """The point a solver reports when the loop has ended."""

    objective: float
    W: Any
    Z: Any
    message: str
    info: dict[str, Any]
    dual: Any = None
    iterations: int | None = None  # what the result reports; None: the completed steps


class IterationHooks:
    """The hooks :func:`run_iterations` calls; a solver implements them (its mathematics)."""

    progress_desc: ClassVar[str] = ""

    def _setup(self, problem: DualProblem, o: Any) -> Any:
        """The solver's state object: data, operators, and (after ``_fresh``/``_restore``) iterates."""
        raise NotImplementedError

    def _fresh(self, s: Any) -> None:
        """The first iterate (no checkpoint)."""

    def _restore(self, s: Any, st: dict[str, Any]) -> None:
        """The iterate of a checkpoint's state ``st`` (written from :meth:`_state`)."""
        raise NotImplementedError

    def _step(self, s: Any, it: int, time_left: float | None) -> Step:
        """Iteration ``it`` (0-based); ``time_left``: seconds left of ``time_limit`` (None: no limit)."""
        raise NotImplementedError

    def _state(self, s: Any) -> dict[str, Any]:
        """What a checkpoint holds besides the harness's counter, history and elapsed time."""
        raise NotImplementedError

    def _on_stop(self, s: Any, status: Status) -> None:
        """Called when the certified stop (``status`` OPTIMAL) or a step's ``stop`` ends the run
        (not on limits, aborts or interrupts)."""

    def _outcome(self, s: Any, status: Status, message: str, iterations: int,
                 history: list[dict[str, Any]]) -> Outcome:
        raise NotImplementedError


class IterativeSolver(IterationHooks, TorchSolver):
    """A torch solver whose loop is :func:`run_iterations`; subclasses implement the hooks."""

    def _solve(self, problem: DualProblem, o: Any) -> SolveResult:
        return run_iterations(self, problem, o)


def run_iterations(solver: IterationHooks, problem: DualProblem, o: Any) -> SolveResult:
    """Run ``solver``'s steps under the harness (see the module docstring); returns the raw result.

    One loop for every harness solver, so it is longer than the house's ~60 lines."""
    t0 = time.perf_counter()
    s = solver._setup(problem, o)
    it0, history, elapsed0 = 0, [], 0.0
    if o.resume_from is not None:
        st = load_checkpoint(o.resume_from, solver.name, problem)
        if "final" in st and checkpoint_finished(o.resume_from):
            return _finished(solver, problem, st, o.resume_from)
        solver._restore(s, st)
        it0, history, elapsed0 = _counter(st), list(st["history"]), float(st["elapsed"])
    else:
        solver._fresh(s)
    t1 = time.perf_counter()
    status, message = Status.MAX_ITERATIONS, ""
    bar = progress_bar(o.max_iter, o.progress, solver.progress_desc or solver.name, it0)
    tstart = time.perf_counter() - elapsed0
    done = it0  # iterations completed
    try:
        for it in range(it0, o.max_iter):
            left = None if o.time_limit is None else o.time_limit - _elapsed(problem, tstart)
            if left is not None and left <= 0:
                status = Status.TIME_LIMIT
                break
            step = solver._step(s, it, left)
            elapsed = _elapsed(problem, tstart)
            done = it + 1
            if step.abort is not None:
                status, message = step.abort
                break
            ev = step.evaluation
            stop = step.stop
            if ev is not None:
                history.append(Iteration(it + 1, elapsed, ev).as_dict())
                bar.set_postfix(obj=f"{ev.objective:.8g}", gap=f"{ev.relative_gap:.1e}", viol=f"{ev.violation:.1e}")
                if ev.relative_gap <= o.tol and ev.violation <= o.violation_tol:
                    stop = (Status.OPTIMAL, "")  # the certified stop
            bar.update(1)
            if o.checkpoint_path is not None and (it + 1) % o.checkpoint_every == 0:
                save_checkpoint(o.checkpoint_path, solver.name, problem,
                                {**solver._state(s), "iteration": it + 1, "history": history, "elapsed": elapsed})
            if stop is not None:
                status, message = stop
                solver._on_stop(s, status)
                break
            if o.time_limit is not None and elapsed >= o.time_limit:
                status = Status.TIME_LIMIT
                break
    except KeyboardInterrupt:
        status, message = Status.INTERRUPTED, "interrupted by the user"
    finally:
        bar.close()
    t2 = time.perf_counter()
    out = solver._outcome(s, status, message, done, history)
    if o.checkpoint_path is not None and status in (Status.OPTIMAL, Status.OPTIMAL_INACCURATE):
        final = {"status": status.value, "objective": float(out.objective), "W": out.W, "Z": out.Z,
                 "dual": out.dual, "message": out.message}
        save_checkpoint(o.checkpoint_path, solver.name, problem,
                        {**solver._state(s), "iteration": done, "history": history,
                         "elapsed": time.perf_counter() - tstart, "final": final}, finished=True)
    return SolveResult(status=status, objective=float(out.objective), W=out.W, Z=out.Z, solver=solver.name,
                       iterations=done if out.iterations is None else out.iterations, timings=Timings(build=t1 - t0, solve=t2 - t1), message=out.message,
                       dual=out.dual, history=tuple(history), info=out.info)


def _elapsed(problem: DualProblem, tstart: float) -> float:
    """Seconds since ``tstart``; on images sharded over ranks, rank 0's clock (every rank then takes
    the same time-limit decisions)."""
    t = time.perf_counter() - tstart
    comm = getattr(problem, "comm", None)
    if comm is not None and comm.world > 1:
        t = float(comm.broadcast(np.array([t]))[0])
    return t


def _counter(st: dict[str, Any]) -> int:
    """Iterations done, from a checkpoint (older files: "epoch" of adam_hinge, "round" of active_set)."""
    for key in ("iteration", "epoch", "round"):
        if key in st:
            return int(st[key])
    raise KeyError("the checkpoint holds no iteration counter")


def _finished(solver: IterationHooks, problem: DualProblem, st: dict[str, Any], path: Any) -> SolveResult:
    """The answer a finished checkpoint recorded (nothing is run)."""
    import numpy as np

    f = st["final"]
    return SolveResult(status=Status(f["status"]), objective=float(f["objective"]), W=np.asarray(f["W"]),
                       Z=np.asarray(f["Z"]), solver=solver.name, iterations=_counter(st), timings=Timings(),
                       message=f"{f['message']}; resumed from the finished run in {path} (nothing re-run)",
                       dual=None if f["dual"] is None else np.asarray(f["dual"]), history=tuple(st["history"]),
                       info={"resumed_finished": True, **problem.describe()})
