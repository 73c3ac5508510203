"""FISTA with adaptive restarts for the gated-ReLU relaxation of (4) (docs/math.md §4).

Dropping the cone constraints leaves a group lasso in ``v_i = w_i - z_i``:

    min_V  1/2 || sum_i D_i X v_i - y ||^2 + beta sum_i ||v_i||

solved by accelerated proximal gradient (group soft-thresholding), momentum reset
whenever it points uphill (O'Donoghue & Candes' gradient restart). Each iteration
is one fused pass of :class:`~convexdual.operators.PatternOperator` (forward,
residual, adjoint), so it runs at the paper's MNIST scale.

The same pass gives a certified lower bound for free: the residual scaled so that
``max_i ||X^T D_i v|| <= beta`` (the gated dual constraint, stronger than the cone
one) is dual feasible for the relaxation *and* for (4). The solver stops when the
relative gap to that bound is below ``tol``. The result splits each ``v_i`` into
``w_i`` or ``z_i`` (whichever sign violates its cone less). Status:

* OPTIMAL: relaxation solved to ``tol`` *and* the split point satisfies (4)'s cones to
  ``violation_tol``: then it is certified optimal for (4) too;
* OPTIMAL_INACCURATE: the relaxation is solved but the point violates (4)'s cones;
  use it as a warm start or lower bound (``info["lower_bound"]``), not as a network;
* NUMERICAL_ERROR: the relaxation's own gap came out clearly negative (its bound is broken);
* MAX_ITERATIONS / TIME_LIMIT otherwise.

What the result means (the message says it too): ``objective`` is the value of the *gated
relaxation* at the returned point; it is a value of (4) only when the point lies in (4)'s
cones. What is certified is a lower bound: ``info["lower_bound"]`` (the relaxation's dual
bound, valid for the relaxation and for (4)) and ``info["lower_bound_of_4"]`` (the better of
it and (4)'s own cone-projected bound at the same residual); ``info["relaxation_relative_gap"]``
(>= 0) is the gap of the relaxation. When the point violates the cones, the attached
certificate compares (4)'s bound with the formula of (4) at a point that is not in (4): its
``gap`` can be negative and is then not a gap of (4) (the message says so).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from convexdual.operators import PatternOperator
from convexdual.problem import DualProblem
from convexdual.result import Status
from convexdual.solvers._common import TorchSolverOptions, torch_dtype
from convexdual.solvers._harness import Evaluation, IterativeSolver, Outcome, Step
from convexdual.solvers._primitives import group_soft_threshold, power_lipschitz

__all__ = ["FistaOptions", "FistaSolver", "group_soft_threshold", "power_lipschitz", "split_gated"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FistaOptions(TorchSolverOptions):
    """Options of :class:`FistaSolver` (see :class:`TorchSolverOptions`).

    Attributes:
        restart: adaptive gradient restart of the momentum.
        power_iterations: iterations of the power method for the Lipschitz constant.
        check_every: iterations between violation checks (the gap is free every iteration).
    """

    restart: bool = True
    power_iterations: int = 30
    check_every: int = 10


def split_gated(op: PatternOperator, V: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split ``v_i`` into ``w_i = v_i`` or ``z_i = -v_i`` by which cone it violates less."""
    W, Z = np.zeros_like(V), np.zeros_like(V)
    idx = np.flatnonzero(np.linalg.norm(V, axis=1) > 0)
    if len(idx):
        vals = op.group_values(idx, V[idx]).double().cpu().numpy()  # (n, m)
        pos = np.maximum(-vals, 0).max(axis=0)
        neg = np.maximum(vals, 0).max(axis=0)
        for j, i in enumerate(idx):
            if pos[j] <= neg[j]:
                W[i] = V[i]
            else:
                Z[i] = -V[i]
    return W, Z


class _State:
    """FISTA's data and iterates (``V``, ``Vprev``, momentum ``tk``, the best bound so far)."""

    def __init__(self, problem: DualProblem, o: FistaOptions) -> None:
        self.problem, self.o = problem, o
        self.op = PatternOperator.from_problem(problem, device=o.device, dtype=torch_dtype(o.dtype),
                                               memory_budget_mb=o.memory_budget_mb, backend=o.backend)
        self.y = torch.as_tensor(problem.y, dtype=self.op.dtype, device=self.op.device)
        self.beta = float(problem.beta)
        self.yy = float((self.y.double() @ self.y.double()))
        # rounding, not a broken bound
        self.neg_tol = max(float(o.tol), 1e3 * float(torch.finfo(self.op.dtype).eps))


class FistaSolver(IterativeSolver):
    """Gated-ReLU relaxation by restarted FISTA; certified by the gated dual bound."""

    name: ClassVar[str] = "fista"
    options_class: ClassVar[type] = FistaOptions
    losses: ClassVar[tuple[str, ...]] = ("squared",)
    progress_desc: ClassVar[str] = "fista (gated)"

    def _setup(self, problem: DualProblem, o: FistaOptions) -> _State:
        return _State(problem, o)

    def _fresh(self, s: _State) -> None:
        s.lower = -np.inf
        s.L = 1.05 * power_lipschitz(s.op, s.o.power_iterations, s.o.seed)
        s.V = torch.zeros(s.op.P, s.op.d, device=s.op.device, dtype=s.op.dtype)
        s.Vprev, s.tk = s.V.clone(), 1.0

    def _restore(self, s: _State, st: dict[str, Any]) -> None:
        s.V, s.Vprev = st["V"].to(s.op.device, s.op.dtype), st["Vprev"].to(s.op.device, s.op.dtype)
        s.tk, s.L, s.lower = float(st["t"]), float(st["L"]), float(st["lower"])

    def _state(self, s: _State) -> dict[str, Any]:
        return {"V": s.V, "Vprev": s.Vprev, "t": s.tk, "L": s.L, "lower": s.lower}

    def _step(self, s: _State, it: int, time_left: float | None) -> Step:
        o, op, y, beta = s.o, s.op, s.y, s.beta
        step = 1.0 / s.L
        tnext = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * s.tk * s.tk))
        Yk = s.V + ((s.tk - 1.0) / tnext) * (s.V - s.Vprev)
        # the bound and objective are evaluated at the extrapolated point Yk (free)
        yhat, grad = op.gradient_sq(Yk, y)
        r = yhat - y
        Vnew = group_soft_threshold(Yk - step * grad, step * beta)
        if o.restart and float(((Yk - Vnew) * (Vnew - s.V)).sum()) > 0:
            tnext = 1.0  # momentum points uphill: restart
        s.Vprev, s.V, s.tk, s.Yk = s.V, Vnew, tnext, Yk
        # certified bound at Yk: v = -r scaled to max_i ||X^T D_i v|| <= beta
        rr = float(r.double() @ r.double())
        pobj = 0.5 * rr + beta * float(Yk.norm(dim=1).sum())
        cmax = float(grad.norm(dim=1).max())
        vy = -float(r.double() @ y.double())
        sc = max(min(vy / rr if rr > 0 else 0.0, beta / cmax if cmax > 0 else np.inf), 0.0)
        s.lower = max(s.lower, sc * vy - 0.5 * sc * sc * rr)
        rel_gap = (pobj - s.lower) / max(abs(pobj), 1e-300)
        if rel_gap < -s.neg_tol:
            # weak duality makes the relaxation's gap >= 0: a clearly negative one is a broken bound
            return Step(abort=(Status.NUMERICAL_ERROR, (
                f"the gated relaxation's duality gap came out negative ({rel_gap:.2e} relative: objective "
                f"{pobj:.10g} below its 'lower bound' {s.lower:.10g}); the bound is broken (rounding in "
                f"{o.dtype}? try dtype='float64'), nothing is certified")))
        done_relax = rel_gap <= o.tol
        if not (done_relax or (it + 1) % o.check_every == 0 or it + 1 == o.max_iter):
            return Step()
        Wc, Zc = split_gated(op, Yk.double().cpu().numpy())
        viol = s.problem.cone_violation(Wc, Zc)
        ev = Evaluation(pobj, s.lower, rel_gap, viol)
        if done_relax and not (viol <= o.violation_tol):
            return Step(ev, stop=(Status.OPTIMAL_INACCURATE, (
                f"gated relaxation solved (its certified relative gap {rel_gap:.2e}) but the point violates "
                f"the cones of (4) by {viol:.2e}: a lower bound / warm start, not a solution of (4)")))
        return Step(ev)

    def _on_stop(self, s: _State, status: Status) -> None:
        s.V = s.Yk  # the certified point

    def _outcome(self, s: _State, status: Status, message: str, iterations: int,
                 history: list[dict[str, Any]]) -> Outcome:
        op, problem = s.op, s.problem
        Vn = s.V.double().cpu().numpy()
        W, Z = split_gated(op, Vn)
        resid = (op.forward(s.V) - s.y).double()
        objective = history[-1]["objective"] if (history and status.is_optimal) else float(
            0.5 * float((resid ** 2).sum()) + s.beta * np.linalg.norm(Vn, axis=1).sum())
        lower = float(s.lower)
        viol_final = problem.cone_violation(W, Z)
        relax_gap = (objective - lower) / max(abs(objective), 1e-300) if np.isfinite(lower) else float("inf")
        in_cones = viol_final <= s.o.violation_tol
        lower4 = lower
        if status is not Status.NUMERICAL_ERROR and not in_cones:
            # (4)'s own bound at the same residual (the one the certificate uses): often stronger
            from convexdual.certificate import dual_lower_bound

            g4, _ = dual_lower_bound(problem, problem.loss.dual_candidate(resid.cpu().numpy()))
            lower4 = max(lower, float(g4))
        if status is not Status.NUMERICAL_ERROR:
            what = _what_is_reported(objective, relax_gap, lower4, viol_final, in_cones)
            message = f"{message}; {what}" if message else what
        info = {"problem": "gated_relaxation",
                "objective_of": "program (4)" if in_cones else "gated relaxation (not a point of (4))",
                "lower_bound": lower, "lower_bound_of_4": lower4, "relaxation_objective": float(objective),
                "relaxation_lower_bound": lower, "relaxation_relative_gap": float(relax_gap),
                "violation": float(viol_final), "lipschitz": s.L, "operator": op.describe(), **problem.describe(),
                "yy": s.yy}
        return Outcome(objective, W, Z, message, info)


def _what_is_reported(objective: float, relax_gap: float, lower4: float, viol: float, in_cones: bool) -> str:
    """The message's account of what the objective is and what is certified (module docstring)."""
    what = (f"objective {objective:.10g} is the gated relaxation's value (relaxation gap {relax_gap:.2e} to "
            f"its certified bound); certified: the optimum of (4) over these patterns is >= {lower4:.10g}")
    if in_cones:
        return what + (f"; the point lies in (4)'s cones (violation {viol:.2e}), so the objective is also "
                       "the value of a point of (4)")
    what += (f"; the point is NOT a point of (4) (cone violation {viol:.2e}): the objective is "
             "not a value of (4), and a gap of (4) measured at this point")
    if objective < lower4:
        return what + (f" is negative ({(objective - lower4) / max(abs(objective), 1e-300):.2e} relative): "
                       "it only says the point is outside (4), not that (4) is solved")
    return what + " is not a duality gap of (4)"
