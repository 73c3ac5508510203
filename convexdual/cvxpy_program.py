"""Program (4) as a CVXPY problem. Builds; never solves.

    min  L(yhat - y) + beta * sum_i (||w_i|| + ||z_i||)
    s.t. yhat = sum_i D_i X (w_i - z_i)
         (2 D_i - I) X w_i >= 0,  (2 D_i - I) X z_i >= 0

``yhat`` is an explicit variable so that the dual of its defining equality is
the dual point ``v`` of docs/math.md §6 (used by the certificate for every loss).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from convexdual.problem import DualProblem

__all__ = ["CvxpyProgram", "to_cvxpy", "data_matrix", "cone_matrix"]


@dataclass(frozen=True, eq=False)
class CvxpyProgram:
    """The CVXPY problem and the handles needed to read a solution back.

    Attributes:
        problem: the ``cvxpy.Problem``.
        w, z: variables of length ``P*d`` (group i is ``[i*d:(i+1)*d]``).
        yhat: the prediction variable (length n).
        fit: the equality constraint ``yhat == A (w - z)``; its dual value is ``v``.
    """

    problem: object
    w: object
    z: object
    yhat: object
    fit: object
    P: int
    d: int
    weight_unit: float = 1.0  # w = weight_unit * w' (the program's variables are normalised)
    dual_unit: float = 1.0  # v = dual_unit * (the fit constraint's dual value)

    def weights(self) -> tuple[np.ndarray, np.ndarray] | None:
        if self.w.value is None or self.z.value is None:
            return None
        return (self.weight_unit * np.asarray(self.w.value, dtype=np.float64).reshape(self.P, self.d),
                self.weight_unit * np.asarray(self.z.value, dtype=np.float64).reshape(self.P, self.d))

    def dual_point(self) -> np.ndarray | None:
        """``v`` with the sign of docs/math.md §6 (``v = y - yhat`` for the squared loss)."""
        val = self.fit.dual_value
        return None if val is None else self.dual_unit * np.asarray(val, dtype=np.float64).reshape(-1)


def check_size(problem: DualProblem) -> None:
    """Raise :class:`~convexdual.engine.MemoryBudgetError` when the explicit SOCP (4) would not fit."""
    from convexdual.engine import check_memory

    # the dense data matrix, the cone matrix's entries and CVXPY's copies of both
    check_memory(8.0 * 4 * problem.n * problem.P * problem.d, problem.memory_limit_mb,
                 f"the explicit SOCP (4) (n = {problem.n:,}, P = {problem.P:,}, d = {problem.d})",
                 "use solver='auto' (active_set / clarabel-ws work from the gates), or fewer patterns")


def data_matrix(problem: DualProblem) -> np.ndarray:
    """``A = [D_1 X, ..., D_P X]``, dense ``(n, P*d)`` (small problems only; memory-checked)."""
    check_size(problem)
    X, M = problem.X, problem.masks()
    return (M[:, :, None] * X[None]).transpose(1, 0, 2).reshape(problem.n, problem.P * problem.d)


def cone_matrix(problem: DualProblem) -> sp.csr_matrix:
    """Block-diagonal ``blkdiag((2D_i - I) X)``, sparse ``(P*n', P*d)``; zero patch rows dropped."""
    X = problem.X
    keep = np.any(X != 0, axis=1)
    Xk = X[keep]
    check_size(problem)
    S = np.where(problem.masks()[:, keep], 1.0, -1.0)  # (P, n')
    P, nk, d = problem.P, Xk.shape[0], problem.d
    data = (S[:, :, None] * Xk[None]).reshape(-1)
    rows = np.repeat(np.arange(P * nk), d)
    cols = (np.arange(P)[:, None, None] * d + np.arange(d)[None, None, :]).repeat(nk, axis=1).reshape(-1)
    return sp.csr_matrix((data, (rows, cols)), shape=(P * nk, P * d))


def to_cvxpy(problem: DualProblem) -> CvxpyProgram:
    """Emit the SOCP (4) for ``problem`` as a ``cvxpy.Problem`` (not solved), in normalised units.

    With ``a = max_j ||x_j||``, ``b = max|y|`` and ``c = L(-y)`` (the zero net's objective) the
    variables are ``w' = (a/b) w``, ``z' = (a/b) z``, ``yhat' = yhat / b`` and the objective is
    divided by ``c``: the same minimisers, O(1) data whatever the units. Interior-point backends
    stop on partly absolute criteria (Clarabel: ``gap_abs <= tol_gap_abs`` or the ``max(1, ...)``
    in its feasibility norms), which in the data's own units loosen as the data shrink: at data
    in units of 10^-1.5 a Clarabel point was 2.5e-6 (relative) above the optimum at tol=1e-8,
    and its dual 1.8e-6 infeasible. :meth:`CvxpyProgram.weights` and
    :meth:`~CvxpyProgram.dual_point` return the data's units.
    """
    import cvxpy as cp

    P, d, n = problem.P, problem.d, problem.n
    a = float(problem.engine.xmax) or 1.0
    b = float(np.abs(problem.y).max(initial=0.0)) or 1.0
    c = float(problem.loss.value(-problem.y)) or 1.0
    loss, factor = _loss_in_units(problem.loss, b)  # L(b r) = factor * loss(r)
    if loss is None:  # a loss we cannot rescale: the weights and the objective are normalised
        loss, factor, b = problem.loss, 1.0, 1.0
    A = sp.csr_matrix(data_matrix(problem) / a)
    B = cone_matrix(problem) / a
    w = cp.Variable(P * d, name="w")
    z = cp.Variable(P * d, name="z")
    yhat = cp.Variable(n, name="yhat")
    fit = yhat == A @ w - A @ z
    reg = cp.sum(cp.norm(cp.reshape(w, (P, d), order="C"), 2, axis=1)) + cp.sum(
        cp.norm(cp.reshape(z, (P, d), order="C"), 2, axis=1))
    objective = (factor / c) * loss.cvxpy(yhat - problem.y / b) + (problem.beta * b / (a * c)) * reg
    prob = cp.Problem(cp.Minimize(objective), [fit, B @ w >= 0, B @ z >= 0])
    return CvxpyProgram(problem=prob, w=w, z=z, yhat=yhat, fit=fit, P=P, d=d, weight_unit=b / a, dual_unit=c / b)


def _loss_in_units(loss, b: float):
    """``(loss', f)`` with ``L(b r) = f * loss'(r)`` for the project's losses; ``(None, 1)`` otherwise."""
    from convexdual.losses import AbsoluteLoss, HuberLoss, SquaredLoss

    if type(loss) is SquaredLoss:
        return loss, b * b
    if type(loss) is AbsoluteLoss:
        return loss, b
    if type(loss) is HuberLoss:  # b^2 huber_{delta/b}(r) = huber_delta(b r)
        return HuberLoss(delta=loss.delta / b), b * b
    return None, 1.0
