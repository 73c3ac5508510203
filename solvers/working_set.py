"""Exact interior-point solves of program (4) at scale: working sets of groups and cone rows.

Program (4) has ``2 P n`` cone rows for ``2 P d`` variables, but at an optimum only a
few of the ``2 P`` groups are nonzero and each nonzero group touches only about
``d - 1`` of its ``n`` cone rows. This solver (registered as ``"clarabel-ws"``)
solves a sequence of small *restricted* programs with Clarabel (called directly,
no CVXPY) and grows them until the full program's optimality conditions hold:

1. **Groups** (pattern, sign) outside the working set are fixed at zero. After each
   solve, with the residual ``v = y - yhat``, every outside group is checked against
   its dual constraint ``||Proj_{K_i}(+-X^T D_i v)|| <= beta`` (exact cone projection
   by NNLS, skipped when the cheaper ``||X^T D_i v|| <= beta`` already holds);
   violators enter the working set.
2. **Cone rows**: each working group carries only some rows of ``(2 D_i - I) X u >= 0``
   (a relaxation). After each solve *every* row of every working group is checked;
   violated rows enter.
3. **Data term**: the squared loss is written through the Gram blocks
   ``X^T D_a D_b X`` and ``X^T D_a y`` (:mod:`convexdual.compressed_program`), so a
   restricted program has ``S d + S`` variables and no ``n``-row residual.

The loop stops when a solve leaves no violated row and no violated outside group:
that point satisfies every constraint of the full program (4) and its KKT conditions
(up to the tolerances), i.e. it is the optimum of (4) itself, not of a restriction.
:func:`convexdual.solve` then certifies it with the same duality-gap certificate as
every other solver. Clarabel has no warm start, so each round is a fresh solve; the
rounds stay cheap because the programs stay small.

The rounds run on the iteration harness (:mod:`convexdual.solvers._harness`): one round is
``_step`` (restricted solve, every row and outside group checked, the working set grows);
the harness owns the loop, the history (one row per round in the shared schema:
``iteration`` is the round, ``objective`` the restricted program's value, which is (4)'s
objective at the round's point; no per-round dual bound, gap or violation: ``nan``, the
certificate measures the final point), Ctrl-C and the result. The rounds keep their own
clock (the time limit counts from the solver's start and each Clarabel solve gets what is
left), write no checkpoints, and the result reports the total Clarabel iterations.

Losses: the squared loss only. For the absolute and Huber losses the solver falls
back to the plain program (4) through CVXPY + Clarabel (``fallback=True``, the
default, says so in ``result.message``) or raises ``ValueError`` (``fallback=False``).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from convexdual._validation import check_fields
from convexdual.compressed_program import PatternGram, build_restricted, group_weights
from convexdual.errors import SolverUnavailableError
from convexdual.problem import DualProblem
from convexdual.result import SolveResult, Status
from convexdual.solvers._clarabel import KKT_METHODS, map_clarabel_status, settings_dict, solve_program, status_name
from convexdual.solvers._harness import Evaluation, IterationHooks, Outcome, Step, run_iterations
from convexdual.solvers.base import SolverBase, SolverOptions

__all__ = ["WorkingSetOptions", "WorkingSetSolver"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkingSetOptions(SolverOptions):
    """Options of the working-set interior-point solver.

    Attributes:
        tol: Clarabel's gap tolerances (absolute and relative) for every restricted solve.
        feas_tol: Clarabel's feasibility tolerance. The cone rows are scaled to unit
            norm, so this bounds their violation relative to ``||u||``; 1e-9 often
            ended AlmostSolved (the rows have zero right-hand side), while every full
            row is still checked against ``row_tol`` and the certificate's 1e-7.
        max_iter: Clarabel iteration limit per restricted solve.
        time_limit: seconds for the whole loop (checks included), or None.
        max_rounds: restricted solves before giving up (status MAX_ITERATIONS).
        init_groups: groups in the first working set (largest projected correlation
            with ``y``); ``0`` or ``>= 2P`` starts with every group.
        groups_per_round: most violating outside groups added per round.
        init_rows: cone rows per group when it enters (those nearest the cone's
            boundary along its entering direction); ``0`` imposes every row (no lazy rows).
        rows_per_round: most violated rows added per group per round.
        row_tol: a row counts as violated when ``-(2D_i - I)_j x_j^T u > row_tol *
            max_j ||x_j|| * max(||u||, 1e-6 * max_k ||u_k||)`` (the certificate's scale).
        group_tol: an outside group is violated when its dual constraint exceeds
            ``beta * (1 + group_tol)``.
        compressed: Gram-compressed data term (default) instead of the ``n``-row residual.
        clarabel_kkt: Clarabel's direct solver ("qdldl" or "faer").
        fallback: for non-squared losses, solve the plain program (True) or raise (False).
        native: extra Clarabel settings (attribute names of ``clarabel.DefaultSettings``).
    """

    tol: float = 1e-9
    feas_tol: float = 1e-8
    max_iter: int = 200
    max_rounds: int = 50
    init_groups: int = 16
    groups_per_round: int = 16
    init_rows: int = 48
    rows_per_round: int = 32
    row_tol: float = 1e-9
    group_tol: float = 1e-8
    compressed: bool = True
    clarabel_kkt: str = "faer"
    fallback: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fields(self, ("max_rounds", "groups_per_round", "rows_per_round"), ">=", 1)
        check_fields(self, ("init_groups", "init_rows"), ">=", 0, " (0 means all)")
        check_fields(self, ("feas_tol",), ">", 0.0)
        check_fields(self, ("row_tol", "group_tol"), ">=", 0.0)
        if self.clarabel_kkt not in KKT_METHODS:
            raise ValueError(f"clarabel_kkt must be 'qdldl' or 'faer', got {self.clarabel_kkt!r}")


@dataclass(frozen=True)
class _Rounds:
    """What :func:`run_iterations` reads of a solver's options, for the rounds of clarabel-ws:
    ``max_rounds`` rounds, no progress bar, no checkpoints, no harness clock (the rounds keep their
    own, see the module docstring) and no certified stop (the rounds measure no gap: the working
    set's convergence ends the run)."""

    ws: WorkingSetOptions
    max_iter: int
    progress: bool = False
    time_limit: None = None
    tol: float = 0.0
    violation_tol: float = 0.0
    checkpoint_path: None = None
    checkpoint_every: int = 1
    resume_from: None = None


class _State:
    """The growing working set (groups and their rows), the per-problem caches, and what the
    rounds found so far (``run``: Clarabel iterations, timings, the last point and its dual)."""

    def __init__(self, problem: DualProblem, options: WorkingSetOptions) -> None:
        self.t_start = time.perf_counter()
        self.zero = False  # the first working set stayed empty: zero is optimal
        self.run: dict[str, Any] = {"iterations": 0, "solve_s": 0.0, "check_s": 0.0, "W": None, "Z": None, "v": None}
        self.problem = problem
        self.options = options
        self.engine = eng = problem.engine
        eng.forget(("dual",))
        self.xnorm = eng.xnorm
        self.nonzero_rows = eng.nz
        self.xmax = eng.xmax or 1.0
        self.Xnz = eng.Xnz  # the rows that constrain anything
        self.row_scale = 1.0 / np.where(self.xnorm > 0, self.xnorm, 1.0)  # unit-norm cone rows
        self.gram = PatternGram(eng.X, problem.mask) if options.compressed else None
        self.pattern: list[int] = []
        self.sign: list[float] = []
        self.rows: list[np.ndarray] = []
        self.member = np.zeros((problem.P, 2), dtype=bool)  # [:, 0] w groups, [:, 1] z groups

    @property
    def num_projections(self) -> int:
        return self.engine.num_projections

    # ---- entering ---------------------------------------------------------------
    def add_group(self, i: int, s: float, direction: np.ndarray) -> None:
        """Group (i, s) enters, with the rows nearest the boundary of K_i along ``direction``."""
        rows = self.nonzero_rows
        k = self.options.init_rows
        if k and k < rows.size:
            margin = self.engine.group_values(i, direction) / self.xnorm[rows]
            rows = rows[np.argpartition(margin, k)[:k]]
        self.pattern.append(int(i))
        self.sign.append(float(s))
        self.rows.append(np.sort(rows))
        self.member[i, 0 if s > 0 else 1] = True

    def screen(self, v: np.ndarray, limit: int, tol: float) -> list[tuple[float, int, float, np.ndarray]]:
        """Outside groups whose dual constraint at ``v`` exceeds ``beta (1 + tol)``, worst first
        (the engine's scan, exact cone projections)."""
        res = self.engine.scan(v, threshold=self.problem.beta * (1.0 + tol), limit=limit, tag="dual",
                               exclude=[(i, s) for i in range(self.problem.P) for col, s in ((0, 1.0), (1, -1.0))
                                        if self.member[i, col]])
        return list(res.found)

    def violated_rows(self, U: np.ndarray) -> list[np.ndarray]:
        """Per working group, the most violated cone rows not yet imposed (worst first)."""
        opts = self.options
        norms = np.linalg.norm(U, axis=1)
        top = float(norms.max(initial=0.0))
        XU = self.engine.X @ U.T  # (n, S)
        out = []
        for k, (i, rows) in enumerate(zip(self.pattern, self.rows)):
            scale = opts.row_tol * self.xmax * max(norms[k], 1e-6 * top)
            viol = -(np.where(self.engine.mask(i), 1.0, -1.0) * XU[:, k])
            viol[rows] = -np.inf
            bad = np.flatnonzero(viol > scale)
            if bad.size > opts.rows_per_round:
                bad = bad[np.argpartition(-viol[bad], opts.rows_per_round)[: opts.rows_per_round]]
            out.append(bad)
        return out


class WorkingSetSolver(IterationHooks, SolverBase):
    """Program (4) exactly, via working sets of groups and cone rows, solved by Clarabel directly."""

    name: ClassVar[str] = "clarabel-ws"
    options_class: ClassVar[type[SolverOptions]] = WorkingSetOptions

    requires: ClassVar[tuple[str, ...]] = ("clarabel",)
    # losses: every loss (the squared one by working sets, the others by the plain program, see fallback)

    # ---- one restricted solve ------------------------------------------------------
    @staticmethod
    def _clarabel(prog, options: WorkingSetOptions, time_left: float | None):
        values = settings_dict(gap_tol=float(options.tol), feas_tol=float(options.feas_tol),
                               max_iter=options.max_iter, kkt=options.clarabel_kkt, time_limit=time_left)
        return solve_program(prog, values, options.native, options.verbose)

    def solve(self, problem: DualProblem, options: SolverOptions | None = None) -> SolveResult:
        options = options if options is not None else WorkingSetOptions()
        if not isinstance(options, WorkingSetOptions):
            options = WorkingSetOptions(tol=options.tol, max_iter=options.max_iter, time_limit=options.time_limit,
                                        verbose=options.verbose, native=dict(options.native))
        ok, why = self.available()
        if not ok:
            raise SolverUnavailableError(why)
        if problem.loss.name != "squared":
            return self._fallback(problem, options)
        return self._loop(problem, options)

    def _fallback(self, problem: DualProblem, options: WorkingSetOptions) -> SolveResult:
        if not options.fallback:
            raise ValueError(f"solver 'clarabel-ws' supports the squared loss only (got {problem.loss.name!r}); "
                             "use solver='clarabel', or WorkingSetOptions(fallback=True) to fall back to it")
        import dataclasses

        from convexdual._registry import get_solver

        note = (f"clarabel-ws: loss {problem.loss.name!r} is not supported by the working-set path; "
                "solved the plain program (4) with CVXPY + Clarabel")
        logger.info(note)
        plain = get_solver("clarabel")
        raw = plain.solve(problem, plain.options_class(
            tol=options.tol, max_iter=options.max_iter, time_limit=options.time_limit,
            verbose=options.verbose, clarabel_kkt=options.clarabel_kkt))
        return dataclasses.replace(raw, solver=self.name, message=f"{note}; {raw.message}",
                                   info={**raw.info, "fallback": True})

    def _loop(self, problem: DualProblem, options: WorkingSetOptions) -> SolveResult:
        return run_iterations(self, problem, _Rounds(ws=options, max_iter=options.max_rounds))

    # ---- the harness's hooks -----------------------------------------------------------
    def _setup(self, problem: DualProblem, o: _Rounds) -> _State:
        return _State(problem, o.ws)

    def _fresh(self, s: _State) -> None:
        s.zero = not self._first_working_set(s)

    def _step(self, s: _State, it: int, time_left: float | None) -> Step:
        if s.zero:  # every dual constraint holds at v = y: zero satisfies the KKT conditions
            return Step(stop=(Status.OPTIMAL, "zero is optimal: ||Proj_K(+-X^T D_i y)|| <= beta for every pattern "
                                              "(checked exactly)"))
        return self._round(s, it + 1)

    def _state(self, s: _State) -> dict[str, Any]:
        raise NotImplementedError("clarabel-ws writes no checkpoints")

    def _outcome(self, s: _State, status: Status, message: str, iterations: int,
                 history: list[dict[str, Any]]) -> Outcome:
        problem, options = s.problem, s.options
        P = problem.P
        full_rows = int(2 * P * s.nonzero_rows.size)
        if s.zero:
            W = np.zeros((P, problem.d))
            return Outcome(objective=problem.objective(W, W.copy()), W=W, Z=W.copy(), message=message,
                           dual=problem.y.copy(), iterations=0,
                           info={"rounds": 0, "final_groups": 0, "final_cone_rows": 0, "full_cone_rows": full_rows,
                                 **problem.describe()})
        if status is Status.MAX_ITERATIONS and not message:  # the harness ran out of rounds
            message = f"max_rounds = {options.max_rounds} reached with violations left; the point is not certified optimal"
        run = s.run
        W, Z = run["W"], run["Z"]
        info = {
            "rounds": len(history), "final_groups": len(s.pattern),
            "final_cone_rows": int(sum(r.size for r in s.rows)),
            "full_cone_rows": full_rows, "projections": s.num_projections,
            "gram_blocks": None if s.gram is None else s.gram.num_cached, "compressed": options.compressed,
            "check_s": run["check_s"], "clarabel_s": run["solve_s"], **problem.describe(),
        }
        return Outcome(objective=problem.objective(W, Z) if W is not None else float("nan"), W=W, Z=Z,
                       message=message, dual=run["v"], iterations=run["iterations"], info=info)

    @staticmethod
    def _first_working_set(state: _State) -> bool:
        """Fill the first working set; False when it stays empty (zero is optimal)."""
        problem, options = state.problem, state.options
        if options.init_groups == 0 or options.init_groups >= 2 * problem.P:
            C = state.engine.adjoint(problem.y)
            for i in range(problem.P):
                for s in (1.0, -1.0):
                    state.add_group(i, s, s * C[i])
            return True
        for _, i, s, proj in state.screen(problem.y, options.init_groups, 0.0):
            state.add_group(i, s, proj)
        return bool(state.pattern)

    def _round(self, state: _State, rnd: int) -> Step:
        """Restricted solve ``rnd``, then every row and outside group checked; the working set
        grows. The step stops the run when the working set has converged or Clarabel stopped
        early, and aborts it (nothing recorded) when no point came back (``state.run`` collects
        the point, the dual and the timings)."""
        problem, options, run, t_start = state.problem, state.options, state.run, state.t_start
        P, d = problem.P, problem.d
        t0 = time.perf_counter()
        prog = build_restricted(problem, np.array(state.pattern), np.array(state.sign), state.rows,
                                compressed=options.compressed, gram=state.gram, cone_scale=state.row_scale)
        t1 = time.perf_counter()
        left = None if options.time_limit is None else options.time_limit - (t1 - t_start)
        if left is not None and left <= 0:
            return Step(abort=(Status.TIME_LIMIT, f"time limit reached before round {rnd}"))
        sol = self._clarabel(prog, options, left)
        t2 = time.perf_counter()
        run["iterations"] += int(sol.iterations)
        run["solve_s"] += t2 - t1
        rstatus = map_clarabel_status(sol.status)
        if not rstatus.has_solution:
            return Step(abort=(rstatus, f"round {rnd}: Clarabel status {sol.status}"))
        U = prog.split(np.asarray(sol.x))
        W, Z = group_weights(P, d, prog.pattern, prog.sign, U)
        v = problem.y - problem.predict(W, Z)
        run.update(W=W, Z=Z, v=v)
        new_rows = state.violated_rows(U)
        n_new_rows = int(sum(r.size for r in new_rows))
        entering = state.screen(v, options.groups_per_round, options.group_tol)
        t3 = time.perf_counter()
        run["check_s"] += t3 - t2
        nan = math.nan  # measured for the final point by the certificate, not per round
        ev = Evaluation(objective=float(sol.obj_val + prog.offset), dual_bound=nan, relative_gap=nan, violation=nan,
                        extra={"groups": prog.num_groups, "cone_rows": prog.num_cone_rows,
                               "max_rows_per_group": int(max(len(r) for r in prog.rows)),
                               "clarabel_iterations": int(sol.iterations), "clarabel_status": status_name(sol.status),
                               "new_rows": n_new_rows, "new_groups": len(entering), "build_s": t1 - t0,
                               "solve_s": t2 - t1, "check_s": t3 - t2})
        logger.info("round %d: %d groups, %d cone rows, %d iterations (%s), +%d rows, +%d groups",
                    rnd, prog.num_groups, prog.num_cone_rows, sol.iterations, sol.status, n_new_rows, len(entering))
        if rstatus in (Status.TIME_LIMIT, Status.MAX_ITERATIONS):
            return Step(evaluation=ev, stop=(rstatus, f"round {rnd}: Clarabel stopped early ({sol.status})"))
        if n_new_rows == 0 and not entering:
            return Step(evaluation=ev, stop=(rstatus, (
                f"working set converged after {rnd} rounds: {prog.num_groups} of {2 * P} groups, "
                f"{prog.num_cone_rows} of {2 * P * state.nonzero_rows.size} cone rows; every row and "
                "every outside group checked")))
        for k, extra in enumerate(new_rows):
            if extra.size:
                state.rows[k] = np.union1d(state.rows[k], extra)
        for _, i, s, proj in entering:
            state.add_group(i, s, proj)
        return Step(evaluation=ev)
