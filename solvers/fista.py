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
import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from convexdual.operators import PatternOperator
from convexdual.problem import DualProblem
from convexdual.result import SolveResult, Status, Timings
from convexdual.solvers._common import (
    TorchSolver,
    TorchSolverOptions,
    load_checkpoint,
    progress_bar,
    save_checkpoint,
    torch_dtype,
)
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


class FistaSolver(TorchSolver):
    """Gated-ReLU relaxation by restarted FISTA; certified by the gated dual bound."""

    name: ClassVar[str] = "fista"
    options_class: ClassVar[type] = FistaOptions
    losses: ClassVar[tuple[str, ...]] = ("squared",)

    def _solve(self, problem: DualProblem, o: FistaOptions) -> SolveResult:
        t0 = time.perf_counter()
        op = PatternOperator.from_problem(problem, device=o.device, dtype=torch_dtype(o.dtype),
                                          memory_budget_mb=o.memory_budget_mb, backend=o.backend)
        y = torch.as_tensor(problem.y, dtype=op.dtype, device=op.device)
        beta = float(problem.beta)
        yy = float((y.double() @ y.double()))
        if o.resume_from is not None:
            st = load_checkpoint(o.resume_from, self.name, problem)
            V, Vprev = st["V"].to(op.device, op.dtype), st["Vprev"].to(op.device, op.dtype)
            tk, L, it0 = float(st["t"]), float(st["L"]), int(st["iteration"])
            history, elapsed0 = list(st["history"]), float(st["elapsed"])
            lower0 = float(st["lower"])
        else:
            lower0 = -np.inf
            L = 1.05 * power_lipschitz(op, o.power_iterations, o.seed)
            V = torch.zeros(op.P, op.d, device=op.device, dtype=op.dtype)
            Vprev, tk, it0, history, elapsed0 = V.clone(), 1.0, 0, [], 0.0
        t1 = time.perf_counter()
        step = 1.0 / L
        status, message = Status.MAX_ITERATIONS, ""
        best = {"lower": lower0}
        bar = progress_bar(o.max_iter, o.progress, "fista (gated)", it0)
        tstart = time.perf_counter() - elapsed0
        it = it0
        rel_gap = viol = float("nan")
        neg_tol = max(float(o.tol), 1e3 * float(torch.finfo(op.dtype).eps))  # rounding, not a broken bound
        try:
            for it in range(it0, o.max_iter):
                tnext = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * tk * tk))
                Yk = V + ((tk - 1.0) / tnext) * (V - Vprev)
                # the bound and objective are evaluated at the extrapolated point Yk (free)
                yhat, grad = op.gradient_sq(Yk, y)
                r = yhat - y
                Vnew = group_soft_threshold(Yk - step * grad, step * beta)
                if o.restart and float(((Yk - Vnew) * (Vnew - V)).sum()) > 0:
                    tnext = 1.0  # momentum points uphill: restart
                Vprev, V, tk = V, Vnew, tnext
                # certified bound at Yk: v = -r scaled to max_i ||X^T D_i v|| <= beta
                rr = float(r.double() @ r.double())
                pobj = 0.5 * rr + beta * float(Yk.norm(dim=1).sum())
                cmax = float(grad.norm(dim=1).max())
                vy = -float(r.double() @ y.double())
                s = min(vy / rr if rr > 0 else 0.0, beta / cmax if cmax > 0 else np.inf)
                s = max(s, 0.0)
                lower = s * vy - 0.5 * s * s * rr
                best["lower"] = max(best["lower"], lower)
                rel_gap = (pobj - best["lower"]) / max(abs(pobj), 1e-300)
                elapsed = time.perf_counter() - tstart
                if rel_gap < -neg_tol:
                    # weak duality makes the relaxation's gap >= 0: a clearly negative one is a broken bound
                    status = Status.NUMERICAL_ERROR
                    message = (f"the gated relaxation's duality gap came out negative ({rel_gap:.2e} relative: "
                               f"objective {pobj:.10g} below its 'lower bound' {best['lower']:.10g}); the bound "
                               f"is broken (rounding in {o.dtype}? try dtype='float64'), nothing is certified")
                    break
                done_relax = rel_gap <= o.tol
                if done_relax or (it + 1) % o.check_every == 0 or it + 1 == o.max_iter:
                    Yn = Yk.double().cpu().numpy()
                    Wc, Zc = split_gated(op, Yn)
                    viol = problem.cone_violation(Wc, Zc)
                    history.append({"iteration": it + 1, "time": elapsed, "objective": pobj,
                                    "dual_bound": best["lower"], "relative_gap": rel_gap, "violation": viol})
                    bar.set_postfix(obj=f"{pobj:.6g}", gap=f"{rel_gap:.1e}", viol=f"{viol:.1e}")
                bar.update(1)
                if o.checkpoint_path is not None and (it + 1) % o.checkpoint_every == 0:
                    save_checkpoint(o.checkpoint_path, self.name, problem,
                                    {"V": V, "Vprev": Vprev, "t": tk, "L": L, "iteration": it + 1,
                                     "history": history, "elapsed": elapsed,
                                     "lower": best["lower"]})
                if done_relax:
                    V = Yk  # the certified point
                    status = Status.OPTIMAL if viol <= o.violation_tol else Status.OPTIMAL_INACCURATE
                    if status is Status.OPTIMAL_INACCURATE:
                        message = (f"gated relaxation solved (its certified relative gap {rel_gap:.2e}) but the "
                                   f"point violates the cones of (4) by {viol:.2e}: a lower bound / warm start, "
                                   "not a solution of (4)")
                    break
                if o.time_limit is not None and elapsed >= o.time_limit:
                    status = Status.TIME_LIMIT
                    break
        except KeyboardInterrupt:
            status, message = Status.INTERRUPTED, "interrupted by the user"
        finally:
            bar.close()
        t2 = time.perf_counter()
        Vn = V.double().cpu().numpy()
        W, Z = split_gated(op, Vn)
        resid = (op.forward(V) - y).double()
        objective = history[-1]["objective"] if (history and status.is_optimal) else float(
            0.5 * float((resid ** 2).sum()) + beta * np.linalg.norm(Vn, axis=1).sum())
        lower = float(best["lower"])
        viol_final = problem.cone_violation(W, Z)
        relax_gap = (objective - lower) / max(abs(objective), 1e-300) if np.isfinite(lower) else float("inf")
        in_cones = viol_final <= o.violation_tol
        lower4 = lower
        if status is not Status.NUMERICAL_ERROR and not in_cones:
            # (4)'s own bound at the same residual (the one the certificate uses): often stronger
            from convexdual.certificate import dual_lower_bound

            g4, _ = dual_lower_bound(problem, problem.loss.dual_candidate(resid.cpu().numpy()))
            lower4 = max(lower, float(g4))
        if status is not Status.NUMERICAL_ERROR:
            what = (f"objective {objective:.10g} is the gated relaxation's value (relaxation gap {relax_gap:.2e} to "
                    f"its certified bound); certified: the optimum of (4) over these patterns is >= {lower4:.10g}")
            if in_cones:
                what += (f"; the point lies in (4)'s cones (violation {viol_final:.2e}), so the objective is also "
                         "the value of a point of (4)")
            else:
                what += (f"; the point is NOT a point of (4) (cone violation {viol_final:.2e}): the objective is "
                         "not a value of (4), and a gap of (4) measured at this point")
                if objective < lower4:
                    what += (f" is negative ({(objective - lower4) / max(abs(objective), 1e-300):.2e} relative): "
                             "it only says the point is outside (4), not that (4) is solved")
                else:
                    what += " is not a duality gap of (4)"
            message = f"{message}; {what}" if message else what
        return SolveResult(status=status, objective=float(objective), W=W, Z=Z, solver=self.name,
                           iterations=it + 1, timings=Timings(build=t1 - t0, solve=t2 - t1), message=message,
                           history=tuple(history),
                           info={"problem": "gated_relaxation", "objective_of": (
                                     "program (4)" if in_cones else "gated relaxation (not a point of (4))"),
                                 "lower_bound": lower, "lower_bound_of_4": lower4,
                                 "relaxation_objective": float(objective), "relaxation_lower_bound": lower,
                                 "relaxation_relative_gap": float(relax_gap), "violation": float(viol_final),
                                 "lipschitz": L, "operator": op.describe(), **problem.describe(), "yy": yy})
