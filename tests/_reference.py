"""Independent references for program (4), written from docs/math.md sections 2-6 only.

Nothing here imports convexdual: the patch matrix is built with explicit index loops, the
sign patterns are recomputed from the gates, and program (4) is modelled in CVXPY directly
(its own Huber model, not ``cvxpy.huber`` nor the project's losses). Tests compare the
project's builder, solvers and certificates against these.

Conventions (docs/math.md §2): zero padding ``k // 2``, stride 1; rows of ``X`` in (N, H, W)
C-order; columns in (c, dy, dx) C-order; ``D_i = diag(1[X g_i >= 0])``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["images4", "patch_matrix_ref", "masks_ref", "loss_ref", "dual_value_ref", "zero_dual_candidate",
           "solve_program4_ref", "cone_projection_norm_ref", "exact_dual_bound_ref", "net_objective_ref",
           "regression_target"]


def images4(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x[:, None] if x.ndim == 3 else x


def regression_target(noisy, clean, residual: bool, residual_channel: int = 0) -> np.ndarray:
    """``y`` of (4), length n: the clean centre pixels, minus the skip channel for residual nets."""
    x = images4(noisy)
    y = np.asarray(clean, dtype=np.float64).reshape(x.shape[0], x.shape[2], x.shape[3])
    if residual:
        y = y - x[:, residual_channel]
    return y.reshape(-1)


def patch_matrix_ref(x, k: int) -> np.ndarray:
    """Explicit ``X`` (n, C*k*k) by index loops: row (n, h, w), column (c, dy, dx)."""
    x = images4(x)
    N, C, H, W = x.shape
    p = k // 2
    X = np.zeros((N * H * W, C * k * k))
    for n in range(N):
        for h in range(H):
            for w in range(W):
                row = n * H * W + h * W + w
                for c in range(C):
                    for dy in range(k):
                        for dx in range(k):
                            hh, ww = h + dy - p, w + dx - p
                            if 0 <= hh < H and 0 <= ww < W:
                                X[row, c * k * k + dy * k + dx] = x[n, c, hh, ww]
    return X


def masks_ref(X: np.ndarray, gates: np.ndarray) -> np.ndarray:
    """``(P, n)`` float 0/1: ``1[X g_i >= 0]``."""
    return (X @ np.asarray(gates, dtype=np.float64).T >= 0).T.astype(np.float64)


def loss_ref(r: np.ndarray, loss: str, delta: float = 1.0) -> float:
    """Sum over rows: squared ``r^2/2``, absolute ``|r|``, Huber ``r^2/2`` if ``|r| <= delta``
    else ``delta (|r| - delta/2)``."""
    r = np.asarray(r, dtype=np.float64)
    if loss == "squared":
        return float(0.5 * r @ r)
    if loss == "absolute":
        return float(np.abs(r).sum())
    if loss == "huber":
        a = np.abs(r)
        return float(np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta)).sum())
    raise ValueError(loss)


def zero_dual_candidate(y: np.ndarray, loss: str, delta: float = 1.0) -> np.ndarray:
    """``-dL/dyhat`` at ``yhat = 0``: ``y``, ``sign(y)``, ``clip(y, -delta, delta)``."""
    if loss == "squared":
        return y.copy()
    if loss == "absolute":
        return np.sign(y)
    return np.clip(y, -delta, delta)


def dual_value_ref(v: np.ndarray, y: np.ndarray, loss: str, delta: float = 1.0) -> float:
    """``-L*(-v)``: squared ``v.y - |v|^2/2``; absolute ``v.y`` on ``|v| <= 1``; Huber
    ``v.y - |v|^2/2`` on ``|v| <= delta``; ``-inf`` outside the domain."""
    if loss == "absolute":
        return float(v @ y) if np.abs(v).max(initial=0) <= 1 + 1e-12 else -np.inf
    if loss == "huber" and np.abs(v).max(initial=0) > delta * (1 + 1e-12):
        return -np.inf
    return float(v @ y - 0.5 * v @ v)


def _cvxpy_solve(prob, solvers=("CLARABEL", "ECOS")) -> str:
    import cvxpy as cp

    last = None
    for name in solvers:
        if name not in cp.installed_solvers():
            continue
        try:
            if name == "CLARABEL":
                prob.solve(solver=name, tol_gap_abs=1e-9, tol_gap_rel=1e-9, tol_feas=1e-9, max_iter=400)
            else:
                prob.solve(solver=name, abstol=1e-9, reltol=1e-9, feastol=1e-9, max_iters=400)
        except cp.error.SolverError as exc:  # try the next backend
            last = exc
            continue
        if prob.status == "optimal":
            return name
    raise RuntimeError(f"reference solve failed: status {prob.status!r} ({last})")


def _program4(X, M, y, beta, loss, delta):
    import cvxpy as cp

    P, d = M.shape[0], X.shape[1]
    W, Z = cp.Variable((P, d)), cp.Variable((P, d))
    yhat = 0
    cons = []
    for i in range(P):
        DX = M[i][:, None] * X
        S = (2 * M[i] - 1)[:, None] * X
        yhat = yhat + DX @ (W[i] - Z[i])
        cons += [S @ W[i] >= 0, S @ Z[i] >= 0]
    r = yhat - y
    if loss == "squared":
        fit = 0.5 * cp.sum_squares(r)
    elif loss == "absolute":
        fit = cp.norm1(r)
    elif loss == "huber":  # huber_delta(r) = min_a a^2/2 + delta |r - a|
        a = cp.Variable(len(y))
        fit = 0.5 * cp.sum_squares(a) + delta * cp.norm1(r - a)
    else:
        raise ValueError(loss)
    reg = cp.sum(cp.norm(W, 2, axis=1)) + cp.sum(cp.norm(Z, 2, axis=1))
    return cp.Problem(cp.Minimize(fit + beta * reg), cons), W, Z


def solve_program4_ref(X: np.ndarray, M: np.ndarray, y: np.ndarray, beta: float, loss: str,
                       delta: float = 1.0) -> tuple[float, np.ndarray, np.ndarray]:
    """Optimum of (4) and a solution ``(W, Z)``, solved on normalised data and scaled back.

    With ``a = max|X|``, ``b = max|y|``: ``X = a X'``, ``y = b y'``, ``w = (b/a) w'``; squared and
    Huber losses scale by ``b^2`` (``beta = a b beta'``, ``delta = b delta'``), the absolute loss by
    ``b`` (``beta = a beta'``). So the solver sees O(1) data whatever the units.
    """
    a = float(np.abs(X).max()) or 1.0
    b = float(np.abs(y).max()) or 1.0
    if loss == "absolute":
        beta_n, c = beta / a, b
    else:
        beta_n, c = beta / (a * b), b * b
    prob, W, Z = _program4(X / a, M, y / b, beta_n, loss, delta / b)
    _cvxpy_solve(prob)
    return float(prob.value) * c, W.value * (b / a), Z.value * (b / a)


def program4_objective_ref(X: np.ndarray, M: np.ndarray, y: np.ndarray, beta: float, loss: str,
                           W: np.ndarray, Z: np.ndarray, delta: float = 1.0) -> float:
    """The objective of (4) at ``(W, Z)``, evaluated here (the solvers' own reported values carry
    their tolerances): ``L(sum_i D_i X (w_i - z_i) - y) + beta sum_i (||w_i|| + ||z_i||)``."""
    yhat = sum(M[i] * (X @ (W[i] - Z[i])) for i in range(M.shape[0]))
    reg = np.linalg.norm(W, axis=1).sum() + np.linalg.norm(Z, axis=1).sum()
    return loss_ref(yhat - y, loss, delta) + beta * float(reg)


def cone_projection_norm_ref(A: np.ndarray, c: np.ndarray) -> float:
    """``||Proj_K(c)||`` for ``K = {w : A w >= 0}`` = ``max{c.w : A w >= 0, ||w|| <= 1}`` (CVXPY)."""
    import cvxpy as cp

    s = float(np.linalg.norm(c))
    if s == 0.0:
        return 0.0
    w = cp.Variable(A.shape[1])
    An = A / np.maximum(np.linalg.norm(A, axis=1, keepdims=True), 1e-300)
    prob = cp.Problem(cp.Maximize((c / s) @ w), [An @ w >= 0, cp.norm(w, 2) <= 1])
    _cvxpy_solve(prob)
    return max(float(prob.value), 0.0) * s


def exact_dual_bound_ref(X, M, y, beta, v0, loss="squared", delta=1.0) -> tuple[float, float]:
    """``(g, s)``: the best ``g = -L*(-s v0)`` over ``0 <= s <= s_max``, ``s_max`` the largest scale that
    keeps ``||Proj_Ki(+-X^T D_i s v0)|| <= beta`` for every pattern (and ``|s v0| <=`` the loss's bound)."""
    worst = 0.0
    for i in range(M.shape[0]):
        A = (2 * M[i] - 1)[:, None] * X
        c = X.T @ (M[i] * v0)
        worst = max(worst, cone_projection_norm_ref(A, c), cone_projection_norm_ref(A, -c))
    s_max = np.inf if worst == 0 else beta / worst
    vinf = float(np.abs(v0).max(initial=0))
    if loss in ("absolute", "huber") and vinf > 0:
        s_max = min(s_max, (1.0 if loss == "absolute" else delta) / vinf)
    vv, vy = float(v0 @ v0), float(v0 @ y)
    if loss == "absolute":
        s = s_max if vy > 0 else 0.0
    else:
        s = 0.0 if vv == 0 else float(np.clip(vy / vv, 0.0, s_max))
    return dual_value_ref(s * v0, y, loss, delta), s


def net_objective_ref(U: np.ndarray, v: np.ndarray, noisy, clean, k: int, beta: float, loss: str,
                      delta: float = 1.0, residual: bool = False, residual_channel: int = 0) -> float:
    """Objective (2) of ``f(x) = [x_skip +] sum_j v_j relu(X u_j)``, from the explicit patch matrix."""
    X = patch_matrix_ref(noisy, k)
    y = np.asarray(clean, dtype=np.float64).reshape(-1)
    f = np.maximum(X @ np.asarray(U).T, 0.0) @ np.asarray(v) if len(v) else np.zeros(len(y))
    if residual:
        f = f + images4(noisy)[:, residual_channel].reshape(-1)
    return loss_ref(f - y, loss, delta) + 0.5 * beta * float((np.asarray(U) ** 2).sum() + (np.asarray(v) ** 2).sum())
