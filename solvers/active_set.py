"""Program (4) to high accuracy by active-set rounds, certified over every pattern.

At an optimum of (4) only a few of the ``2P`` groups are nonzero (15-25 of 200 on the
8x8-digit benchmarks). This solver (``"active_set"``) exploits that:

1. **Identify**: every group ``(i, s)`` is ranked by its exact dual-constraint value
   ``||Proj_{K_i}(s X^T D_i r)||`` at ``r = y`` (or, with ``warm_start=True``, at the
   residual of the gated-ReLU relaxation solved to a coarse gap by restarted FISTA
   through :class:`~convexdual.operators.PatternOperator`); the top groups form the
   first working set.
2. **Polish** the working set exactly: the restricted program (the other groups fixed at
   zero; only some cone rows of each working group, chosen lazily) is a small SOCP with
   a Gram-compressed data term, solved by Clarabel directly. Each group is then
   projected *exactly* onto its full cone (all ``n`` rows, NNLS with lazy rows), so the
   point is feasible for (4) to rounding.
3. **Certify over all patterns**: one adjoint pass of the operator gives
   ``X^T D_i v`` for every pattern at the residual ``v``; exact cone projections
   (visited by decreasing ``||X^T D_i v||``, pruned by that upper bound) give the
   largest dual-constraint value, hence the certified lower bound of docs/math.md §6.
   Groups whose constraint is violated enter the working set, working groups that
   stayed at zero leave it, violated cone rows enter, and the next round starts.

The run stops only when the certified relative gap is ``<= tol`` and the relative cone
violation is ``<= violation_tol`` (status OPTIMAL); otherwise it ends with
MAX_ITERATIONS / TIME_LIMIT / OPTIMAL_INACCURATE and says why. A restricted solve that
stalls (Clarabel's InsufficientProgress, seen near gaps of 1e-11 on real MNIST) still
leaves a point: the round goes on with it, since step 2 and step 3 judge it on their own;
a solve that leaves no finite point ends the run with its status. ``max_iter`` counts
rounds. ``dtype`` is the precision of the warm start; the restricted solves, the
polish and the certificate always run in float64. ``device`` is where the operator
passes run (the restricted program is solved on CPU). Squared loss only.

Limits: the restricted program's Gram matrix is dense ``(S d)^2`` for ``S`` working
groups, and each round's Clarabel solve is fresh (no warm start): fine for tens to a
few hundred groups, not for thousands.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import torch

from convexdual._validation import check_fields
from convexdual.compressed_program import build_restricted
from convexdual.operators import PatternOperator
from convexdual.problem import DualProblem
from convexdual.result import Status
from convexdual.solvers._clarabel import STATUS_MAP, map_clarabel_status, settings_dict, solve_program, status_name
from convexdual.solvers._common import TorchSolverOptions
from convexdual.solvers._harness import Evaluation, IterativeSolver, Outcome, Step

__all__ = ["ActiveSetOptions", "ActiveSetSolver"]

_NAMES = sorted(STATUS_MAP)  # Clarabel's status names, broadcast by index

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class ActiveSetOptions(TorchSolverOptions):
    """Options of :class:`ActiveSetSolver` (see :class:`TorchSolverOptions`).

    Attributes:
        max_iter: active-set rounds (restricted solve + full check each).
        warm_start: rank the groups for the first working set at the gated relaxation's
            residual (FISTA to ``warm_tol``) instead of at ``v = y``. Off by default: on the
            8x8-digit benchmarks it cost a FISTA run and saved no round (docs/first_order.md).
        warm_tol: certified relative gap of the gated warm start.
        warm_max_iter: FISTA iteration cap of the warm start.
        init_groups: groups in the first working set.
        groups_per_round: most entering groups per round.
        entering: which violators enter: "largest" (the ``groups_per_round`` worst; a scan projects
            every group whose bound exceeds the k-th found) or "first" (the first ones found in the
            order of their unconstrained norms ``||X^T D_i v||``; a scan stops once it has them, so a
            round costs a few exact projections instead of one per violated group, while the rounds'
            reported gaps stay loose until a scan is complete). The last round's scan is complete
            either way, so the certificate is the same. "first" pays off when the exact projections
            dominate (many patterns, many rows: docs/mri.md).
        init_rows: cone rows a group enters with (nearest its cone's boundary).
        rows_per_round: most violated rows added per group per round.
        drop_after: a working group that is zero in this many consecutive restricted
            solutions leaves the working set (it is still checked every round); 0 never drops.
        clarabel_tol: Clarabel's gap tolerances (absolute and relative).
        feas_tol: Clarabel's feasibility tolerance (cone rows have unit norm).
        clarabel_max_iter: Clarabel iterations per restricted solve.
        group_tol: an outside group enters when its dual constraint exceeds ``beta (1 + group_tol)``.
        row_tol: a cone row enters when violated by more than ``row_tol * max_j ||x_j|| * ||u||``.
        checkpoint_every: rounds between checkpoints.
    """

    max_iter: int = 50
    warm_start: bool = False
    warm_tol: float = 1e-3
    warm_max_iter: int = 3000
    init_groups: int = 20
    groups_per_round: int = 16
    entering: str = "largest"
    init_rows: int = 32
    rows_per_round: int = 32
    drop_after: int = 1
    clarabel_tol: float = 1e-10
    feas_tol: float = 1e-8
    clarabel_max_iter: int = 200
    group_tol: float = 1e-8
    row_tol: float = 1e-10
    checkpoint_every: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fields(self, ("init_groups", "groups_per_round", "init_rows", "rows_per_round", "warm_max_iter",
                            "clarabel_max_iter"), ">=", 1)
        check_fields(self, ("drop_after",), ">=", 0, " (0: never drop)")
        if self.entering not in ("largest", "first"):
            raise ValueError(f"entering must be 'largest' or 'first', got {self.entering!r}")
        check_fields(self, ("warm_tol", "clarabel_tol", "feas_tol"), ">", 0.0)
        check_fields(self, ("group_tol", "row_tol"), ">=", 0.0)


class _Data:
    """Per-problem float64 data and caches: patch rows, signs, Gram blocks (masks and cone
    projections come from the problem's :class:`~convexdual.engine.PatternEngine`)."""

    TAGS = ("dual", "polish")

    def __init__(self, problem: DualProblem, gram_budget_bytes: float) -> None:
        self.problem = problem
        self.engine = eng = problem.engine
        eng.forget(self.TAGS)  # this run's projection rows start empty (or from its checkpoint)
        self.X = eng.X
        self.y = np.asarray(problem.y, dtype=np.float64)
        self.d = problem.d
        self.xmax = eng.xmax or 1.0
        n, d = self.X.shape
        self.outer = (self.X[:, :, None] * self.X[:, None, :]).reshape(n, d * d) \
            if n * d * d * 8 <= gram_budget_bytes else None
        self._gram: dict[tuple[int, int], np.ndarray] = {}
        self._xty: dict[int, np.ndarray] = {}
        self.projections = 0

    def xty(self, patterns: np.ndarray) -> np.ndarray:
        """``X^T D_i y`` of each pattern, ``(S, d)`` (summed over the ranks; the missing ones in one sum)."""
        missing = sorted({int(i) for i in patterns} - set(self._xty))
        if missing:
            local = np.stack([self.X[m].T @ self.y[m] for m in map(self.engine.mask, missing)])
            for i, row in zip(missing, self.engine.reduce(local)):
                self._xty[i] = row
        return np.stack([self._xty[int(i)] for i in patterns])

    def matrix(self, patterns: np.ndarray) -> np.ndarray:
        """``[X^T D_a D_b X]`` for the given patterns, dense ``(S d, S d)`` (the ``gram`` of
        :func:`~convexdual.compressed_program.build_restricted`; each block is computed alone from
        the masks, so its bits do not depend on the order in which blocks were first needed, which
        keeps a resumed run bit-identical)."""
        uniq = sorted(set(int(p) for p in patterns))
        missing = [(a, b) for k, a in enumerate(uniq) for b in uniq[k:] if (a, b) not in self._gram]
        blocks = []
        for a, b in missing:  # one block at a time: the same bits whatever the order (resume)
            w = (self.engine.mask(a) & self.engine.mask(b)).astype(np.float64)
            if self.outer is not None:
                blocks.append((w @ self.outer).reshape(self.d, self.d))
            else:
                blocks.append(self.X.T @ (self.X * w[:, None]))
        if missing:  # this rank's rows; summed over the ranks in one reduction
            for key, blk in zip(missing, self.engine.reduce(np.stack(blocks))):
                self._gram[key] = blk
        S, d = len(patterns), self.d
        G = np.empty((S * d, S * d))
        for k, a in enumerate(patterns):
            for m in range(k, S):
                b = patterns[m]
                blk = self._gram[(a, b)] if a <= b else self._gram[(b, a)].T
                G[k * d:(k + 1) * d, m * d:(m + 1) * d] = blk
                G[m * d:(m + 1) * d, k * d:(k + 1) * d] = blk.T
        return G

    def project(self, i: int, c: np.ndarray, key: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """Exact ``Proj_{K_i}(c)`` by the engine; returns ``(proj, active rows)`` (rows of the nonzero
        patch rows). Keyed projections remember their active rows for the next one."""
        self.projections += 1
        _, proj, active = self.engine.project(i, c, key=key, rel_tol=1e-13)
        return proj, active

    def projection_rows(self) -> dict[Any, np.ndarray]:
        """The remembered active rows of this solver's keyed projections (part of a checkpoint)."""
        return {k: v for k, v in self.engine.remembered_rows().items() if k[0] in self.TAGS}

    def restore_projection_rows(self, rows: dict[Any, np.ndarray]) -> None:
        self.engine.forget(self.TAGS)
        self.engine.restore_rows(rows, clear=False)

    def boundary_rows(self, i: int, direction: np.ndarray, k: int) -> np.ndarray:
        """The ``k`` nonzero rows of pattern ``i`` nearest the cone boundary along ``direction``."""
        return self.engine.boundary_rows(i, direction, k)

    def predict(self, pattern: np.ndarray, sign: np.ndarray, U: np.ndarray) -> np.ndarray:
        yhat = np.zeros(self.X.shape[0])
        if len(pattern):
            XU = self.X @ U.T  # (n, S)
            for k, (i, s) in enumerate(zip(pattern, sign)):
                yhat += s * np.where(self.engine.mask(int(i)), XU[:, k], 0.0)
        return yhat


class ActiveSetSolver(IterativeSolver):
    """Active-set rounds: warm start, exact restricted solve + cone polish, certificate over all patterns."""

    name: ClassVar[str] = "active_set"
    options_class: ClassVar[type] = ActiveSetOptions
    option_fields: ClassVar[tuple[str, ...]] = ("tol", "time_limit", "verbose", "native")
    losses: ClassVar[tuple[str, ...]] = ("squared",)
    loss_hint: ClassVar[str] = "; use solver='clarabel' for other losses"
    progress_desc: ClassVar[str] = "active set"

    requires: ClassVar[tuple[str, ...]] = ("clarabel",)  # its restricted solves
    sharded: ClassVar[bool] = True  # every pass through the problem's engine (convexdual.distributed)

    # ------------------------------------------------------------------ pieces
    def _restricted(self, data: _Data, pattern: np.ndarray, sign: np.ndarray, rows: list[np.ndarray],
                    o: ActiveSetOptions, time_left: float | None) -> tuple[Status, np.ndarray, str, int]:
        coefs = data.engine.cone_rows_many(list(zip(pattern, rows)))  # gathered from the ranks that hold them
        coefs = [A / np.sqrt((A * A).sum(axis=1))[:, None] for A in coefs]  # unit rows: every row on one footing
        prog = build_restricted(data.problem, pattern, sign, rows, gram=data, xty=data.xty(pattern), row_coefs=coefs)
        values = settings_dict(gap_tol=float(o.clarabel_tol), feas_tol=float(o.feas_tol), max_iter=o.clarabel_max_iter,
                               kkt="faer", time_limit=time_left)
        comm = data.engine.comm
        if comm.is_root:  # several ranks: rank 0 solves the (small, identical) program and broadcasts
            sol = solve_program(prog, values, o.native, o.verbose)
            name, x, iters = status_name(sol.status), np.asarray(sol.x, dtype=np.float64), int(sol.iterations)
        else:
            name, x, iters = "", np.zeros(0), 0
        if comm.distributed:
            code = comm.broadcast(np.array([_NAMES.index(name) if name in _NAMES else -1, iters], dtype=np.int64))
            x = comm.broadcast(x)
            name, iters = (_NAMES[int(code[0])] if code[0] >= 0 else "unknown"), int(code[1])
        return map_clarabel_status(name), prog.split(x), name, iters

    @staticmethod
    def _check(data: _Data, op: PatternOperator, v: np.ndarray, member: set[tuple[int, float]], threshold: float,
               limit: int, first: bool = False) -> tuple[float, list[tuple[float, int, float, np.ndarray]]]:
        """Dual constraints at ``v`` over every pattern, by the engine's scan.

        Returns ``(M, found)``: ``M >= max_{i,s} ||Proj_{K_i}(s X^T D_i v)||`` and up to ``limit``
        groups outside ``member`` whose value exceeds ``threshold`` (the largest first, each with
        its projection; with ``first`` the first ones found, see ``ActiveSetOptions.entering``). ``X^T D_i v`` comes from the solver's operator (its device and backend).
        """
        C = op.adjoint(torch.as_tensor(v, dtype=op.dtype, device=op.device)).double().cpu().numpy()
        C = data.engine.reduce(C)  # this rank's rows -> all rows
        res = data.engine.scan(C=C, threshold=threshold, exclude=member, limit=limit, first=first, tag="dual")
        data.projections += res.projections
        return res.max_value, list(res.found)

    # ------------------------------------------------------------------ the harness's hooks
    def _setup(self, problem: DualProblem, o: ActiveSetOptions) -> SimpleNamespace:
        op = PatternOperator.from_problem(problem, device=o.device, dtype=torch.float64,
                                          memory_budget_mb=o.memory_budget_mb, backend=o.backend)
        data = _Data(problem, o.memory_budget_mb * 2**20 / 4)
        return SimpleNamespace(problem=problem, o=o, op=op, data=data, beta=float(problem.beta), P=problem.P,
                               d=problem.d, pattern=[], sign=[], rows=[], zero_count=[], warm_info={},
                               best={"objective": np.inf, "W": None, "Z": None, "dual": None}, last=None,
                               gap=float("nan"), viol=float("nan"))

    def _fresh(self, s: SimpleNamespace) -> None:
        v_rank, s.warm_info = self._identify(s.problem, s.o, s.data)
        # "largest": the init_groups largest values; "first": the first groups found above beta (a
        # threshold of 0 would let groups with values ~0 in)
        first = s.o.entering == "first"
        _, entering = self._check(s.data, s.op, v_rank, set(), s.beta * (1.0 + s.o.group_tol) if first else 0.0,
                                  s.o.init_groups, first)
        for _, i, sg, proj in entering[: s.o.init_groups]:
            self._enter(s, i, sg, proj)

    def _restore(self, s: SimpleNamespace, st: dict[str, Any]) -> None:
        s.pattern, s.sign = list(st["pattern"]), list(st["sign"])
        s.rows = [np.asarray(r, dtype=np.intp) for r in st["rows"]]
        s.zero_count, s.warm_info = list(st["zero_count"]), dict(st["warm"])
        s.data.restore_projection_rows(st["projection_rows"])

    def _state(self, s: SimpleNamespace) -> dict[str, Any]:
        return {"pattern": list(s.pattern), "sign": list(s.sign), "rows": [np.asarray(rr) for rr in s.rows],
                "zero_count": list(s.zero_count), "warm": s.warm_info,
                "projection_rows": s.data.projection_rows()}

    @staticmethod
    def _enter(s: SimpleNamespace, i: int, sg: float, proj: np.ndarray) -> None:
        s.pattern.append(i)
        s.sign.append(sg)
        s.rows.append(s.data.boundary_rows(i, proj, s.o.init_rows))
        s.zero_count.append(0)

    def _step(self, s: SimpleNamespace, rnd: int, time_left: float | None) -> Step:
        """One round: restricted solve, exact polish, certificate over every pattern, working-set update."""
        o, data, problem, beta = s.o, s.data, s.problem, s.beta
        pat, sgn = np.asarray(s.pattern, dtype=np.intp), np.asarray(s.sign, dtype=np.float64)
        ta = time.perf_counter()
        if len(pat):
            rstatus, U, cstatus, citer = self._restricted(data, pat, sgn, s.rows, o, time_left)
        else:
            rstatus, U, cstatus, citer = Status.OPTIMAL, np.zeros((0, s.d)), "empty", 0
        tb = time.perf_counter()
        if rstatus is Status.NUMERICAL_ERROR and len(pat) and U.size and np.isfinite(U).all():
            # Clarabel stalled (InsufficientProgress: its residuals crept up at a gap ~1e-11). Its last
            # iterate is still a point: the exact polish below makes it feasible and the certificate
            # over every pattern judges it on its own, so the round goes on with it
            logger.warning("round %d: Clarabel ended with %s; going on with its last iterate (the certificate "
                           "decides)", rnd + 1, cstatus)
        elif not rstatus.has_solution:
            return Step(abort=(rstatus, f"round {rnd + 1}: Clarabel ended with {cstatus}"))
        # exact polish: every group onto its full cone
        Up = U.copy()
        norms = np.linalg.norm(U, axis=1)
        for k in np.flatnonzero(norms > 0):
            Up[k], _ = data.project(int(pat[k]), U[k], key=("polish", int(pat[k]), sgn[k]))
        r = data.predict(pat, sgn, Up) - data.y
        pobj = 0.5 * data.engine.reduce(float(r @ r)) + beta * float(np.linalg.norm(Up, axis=1).sum())
        # certificate over every pattern (+ entering groups)
        v0 = -r
        M, entering = self._check(data, s.op, v0, set(zip(s.pattern, s.sign)), beta * (1.0 + o.group_tol),
                                  o.groups_per_round, o.entering == "first")
        db = data.engine.dual_bound(problem.loss, data.y, beta, v0, max_constraint=M)
        s.gap = (pobj - db.value) / max(abs(pobj), 1e-300)
        W, Z = np.zeros((s.P, s.d)), np.zeros((s.P, s.d))
        for k, (i, sg) in enumerate(zip(s.pattern, s.sign)):
            (W if sg > 0 else Z)[i] = Up[k]
        s.viol = problem.cone_violation(W, Z)
        s.last = {"objective": pobj, "W": W, "Z": Z, "dual": db.scale * v0}
        if pobj < s.best["objective"]:
            s.best = s.last
        tc = time.perf_counter()
        n_in = len(s.pattern)
        new_rows, kept = self._update_working_set(s, U, norms, entering)
        ev = Evaluation(pobj, db.value, s.gap, s.viol, {
            "groups": n_in, "cone_rows": int(sum(len(rr) for rr in s.rows)), "entering": len(entering),
            "new_rows": new_rows, "clarabel_status": cstatus, "clarabel_iterations": citer,
            "restricted_s": tb - ta, "check_s": tc - tb})
        logger.info("round %d: %d groups, objective %.10g, gap %.2e, violation %.1e, +%d groups, +%d rows",
                    rnd + 1, n_in, pobj, s.gap, s.viol, len(entering), new_rows)
        if not entering and new_rows == 0 and kept == n_in:
            return Step(ev, stop=(Status.OPTIMAL_INACCURATE, (
                f"working set settled but the certificate is short of the tolerances (relative gap {s.gap:.2e}, "
                f"violation {s.viol:.2e}); tighten clarabel_tol / feas_tol")))
        return Step(ev)

    def _update_working_set(self, s: SimpleNamespace, U: np.ndarray, norms: np.ndarray,
                            entering: list[tuple[float, int, float, np.ndarray]]) -> tuple[int, int]:
        """Violated rows enter their groups, groups zero for ``drop_after`` rounds leave, the worst
        violators enter; returns ``(rows added, working groups kept)``."""
        o, data = s.o, s.data
        top = float(norms.max(initial=0.0))
        new_rows = 0
        for k in range(len(s.pattern)):
            if norms[k] <= 0:
                continue
            # rows violated by more than row_tol (relative): (2 D_i - I) x_j^T u < -row_tol * xmax * ||u||
            bad = data.engine.most_violated(s.pattern[k], U[k], o.rows_per_round,
                                            -o.row_tol * data.xmax * max(norms[k], 1e-6 * top), s.rows[k])
            if bad.size:
                s.rows[k] = np.union1d(s.rows[k], bad)
                new_rows += int(bad.size)
        for k in range(len(s.pattern)):
            s.zero_count[k] = s.zero_count[k] + 1 if norms[k] <= 1e-9 * max(top, 1e-300) else 0
        keep = [k for k in range(len(s.pattern)) if o.drop_after == 0 or s.zero_count[k] < o.drop_after]
        s.pattern = [s.pattern[k] for k in keep]
        s.sign = [s.sign[k] for k in keep]
        s.rows = [s.rows[k] for k in keep]
        s.zero_count = [s.zero_count[k] for k in keep]
        for _, i, sg, proj in entering[: o.groups_per_round]:
            self._enter(s, i, sg, proj)
        return new_rows, len(keep)

    def _on_stop(self, s: SimpleNamespace, status: Status) -> None:
        if status is Status.OPTIMAL:
            s.best = s.last  # the certified point

    def _outcome(self, s: SimpleNamespace, status: Status, message: str, iterations: int,
                 history: list[dict[str, Any]]) -> Outcome:
        best, problem = s.best, s.problem
        if best["W"] is None:
            best = {**best, "W": np.zeros((s.P, s.d)), "Z": np.zeros((s.P, s.d))}
        if not message:
            message = f"certified relative gap {s.gap:.2e}, violation {s.viol:.2e} after {iterations} rounds"
        info = {"projections": s.data.projections, "warm_start": s.warm_info,
                "yy": s.data.engine.reduce(float(s.data.y @ s.data.y)),
                "final_groups": len(s.pattern), **problem.describe()}
        return Outcome(float(problem.objective(best["W"], best["Z"])), best["W"], best["Z"], message, info,
                       dual=best["dual"])

    @staticmethod
    def _identify(problem: DualProblem, o: ActiveSetOptions, data: _Data) -> tuple[np.ndarray, dict[str, Any]]:
        """The vector that ranks the groups: the gated relaxation's residual (warm start) or ``y``."""
        if not o.warm_start:
            return data.y.copy(), {"used": False}
        if data.engine.comm.distributed:
            raise ValueError("warm_start=True (a FISTA run) is not available on sharded images; "
                             "run active_set without it (the default)")
        from convexdual._registry import get_solver  # the gated relaxation's solver, by name

        t = time.perf_counter()
        fista = get_solver("fista")
        res = fista.solve(problem, fista.options_class(
            tol=o.warm_tol, max_iter=o.warm_max_iter, device=o.device, dtype=o.dtype, seed=o.seed,
            check_every=o.warm_max_iter + 1, memory_budget_mb=o.memory_budget_mb, backend=o.backend))
        yhat = data.predict(np.arange(problem.P), np.ones(problem.P), res.W - res.Z)
        return data.y - yhat, {"used": True, "iterations": res.iterations, "seconds": time.perf_counter() - t,
                               "status": res.status.value, "gated_objective": res.objective}
