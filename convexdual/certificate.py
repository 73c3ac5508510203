"""Duality-gap certificates for program (4) and its recovered network (MATH.md §6).

For a candidate ``(W, Z)``:

* ``p``: value of (4);
* a dual feasible point ``s * v0`` where ``v0`` is a dual candidate (the solver's
  dual, or ``-dL/dyhat``) scaled so that for every pattern
  ``max{ +-v^T D_i X w : (2D_i - I) X w >= 0, ||w|| <= 1 } = ||Proj_{K_i}(+-X^T D_i v)|| <= beta``
  and ``v`` lies in the domain of the loss conjugate;
* ``g = -L*(-v)`` (``v^T y - ||v||^2/2`` for the squared loss), a lower bound on
  the optimum of (4) over the same patterns: ``p - g >= 0`` is the duality gap.

With exactly enumerated patterns the bound holds for the training problem (2)
itself: the certificate then proves global optimality.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.optimize import nnls

from convexdual.problem import DualProblem

__all__ = ["Certificate", "certify_solution", "cone_projection", "cone_projection_norm", "dual_lower_bound"]


@dataclass(frozen=True)
class Certificate:
    """What was checked about a solution of (4) and its recovered network.

    Attributes:
        convex_objective: value of (4) at the solution.
        network_objective: objective (2) of the recovered net, computed through torch
            on the data (None when no network was given).
        dual_bound: a certified lower bound on the optimum of (4) over the pattern set.
        gap: ``convex_objective - dual_bound`` (>= 0 up to rounding).
        relative_gap: ``gap / |convex_objective|``.
        recovery_error: ``|network_objective - convex_objective| / |convex_objective|``.
        max_violation: largest relative cone violation (see ``DualProblem.cone_violation``).
        num_neurons: nonzero groups = filters of the recovered net.
        scope: "exact" (all patterns enumerated: global optimality of (2)) or
            "sampled" (optimality of (4) over the sampled patterns only).
        tolerance, violation_tolerance: the thresholds of ``ok``.
        ok: ``relative_gap <= tolerance`` and ``max_violation <= violation_tolerance``
            (and ``recovery_error <= tolerance`` when a network was given).
    """

    convex_objective: float
    dual_bound: float
    gap: float
    relative_gap: float
    max_violation: float
    num_neurons: int
    scope: str
    tolerance: float
    violation_tolerance: float
    ok: bool
    network_objective: float | None = None
    recovery_error: float | None = None
    dual_scale: float = 1.0

    def summary(self) -> str:
        s = (f"certificate : {'OK' if self.ok else 'NOT certified'} ({self.scope} patterns) "
             f"gap {self.gap:.3e} (rel {self.relative_gap:.3e}), violation {self.max_violation:.2e}, "
             f"dual bound {self.dual_bound:.10g}")
        if self.network_objective is not None:
            s += f"\n              network objective (2) {self.network_objective:.10g} (rel. diff {self.recovery_error:.2e})"
        return s

    def to_dict(self) -> dict[str, Any]:
        return {k: (float(v) if isinstance(v, (np.floating,)) else v) for k, v in asdict(self).items()}


def cone_projection(A: np.ndarray, c: np.ndarray, *, rel_tol: float = 1e-12, rows: np.ndarray | None = None,
                    max_rounds: int = 100, return_rows: bool = False
                    ) -> tuple[float, np.ndarray] | tuple[float, np.ndarray, np.ndarray]:
    """``(||Proj_K(c)||, Proj_K(c))`` for the polyhedral cone ``K = {w : A w >= 0}``, exactly.

    Moreau: ``c = Proj_K(c) + Proj_{K°}(c)`` with ``K° = {-A^T lam : lam >= 0}``, so
    ``Proj_K(c) = c + A^T lam*`` with ``lam* = argmin_{lam >= 0} ||A^T lam + c||`` (NNLS).
    Lazy rows: NNLS on the rows most violated by ``c`` (plus ``rows``, if given), check
    every row at the result, add the violated ones, repeat. The projection onto a
    superset cone that lands in ``K`` is the projection onto ``K``, so the loop ends with
    the exact answer; most of the n rows of a cone in R^d are never touched.

    Args:
        A: ``(n, d)`` cone rows; all-zero rows are ignored (``0 >= 0`` always holds).
        c: ``(d,)`` the point to project.
        rel_tol: a row is violated when ``a_j^T w < -rel_tol * max_j ||a_j|| * ||c||``.
        rows: optional indices into ``A`` that start the first NNLS together with the
            most violated rows (e.g. the rows that ended active when projecting a nearby
            point); they only change the path, not the answer.
        max_rounds: lazy rounds before falling back to NNLS on every row at once.
        return_rows: also return the rows (indices into ``A``) with a positive multiplier.

    Returns:
        ``(norm, proj)``, or ``(norm, proj, active_rows)`` with ``return_rows=True``.
    """
    c = np.asarray(c, dtype=np.float64)
    nonzero = np.any(A != 0, axis=1)
    index = None
    if not nonzero.all():
        index = np.flatnonzero(nonzero)  # positions in A of the kept rows
        A = A[nonzero]
        if rows is not None:
            rows = np.flatnonzero(np.isin(index, rows))

    def _out(proj: np.ndarray, act: np.ndarray) -> tuple:
        if not return_rows:
            return float(np.linalg.norm(proj)), proj
        return float(np.linalg.norm(proj)), proj, act if index is None else index[act]

    tol = rel_tol * float(np.linalg.norm(A, axis=1).max(initial=0.0)) * float(np.linalg.norm(c))
    m = A @ c
    if m.min(initial=0.0) >= -tol:
        return _out(c, np.empty(0, dtype=np.intp))
    cap = 4 * A.shape[1]
    k = min(m.size, cap)
    active = np.argpartition(m, k - 1)[:k] if k < m.size else np.arange(m.size)
    if rows is not None:
        active = np.union1d(active, rows)
    for _ in range(max_rounds):
        Aa = A[active]
        lam, _ = nnls(Aa.T, -c, maxiter=50 * Aa.shape[0])
        proj = c + Aa.T @ lam
        m = A @ proj
        m[active] = np.inf
        bad = np.flatnonzero(m < -tol)
        if bad.size == 0:
            return _out(proj, active[lam > 0])
        if bad.size > cap:
            bad = bad[np.argpartition(m[bad], cap)[:cap]]
        active = np.union1d(active, bad)
    lam, _ = nnls(A.T, -c, maxiter=50 * A.shape[0])  # not converged: all rows at once
    return _out(c + A.T @ lam, np.flatnonzero(lam > 0))


def cone_projection_norm(A: np.ndarray, c: np.ndarray) -> float:
    """``||Proj_K(c)||`` for ``K = {w : A w >= 0}`` (see :func:`cone_projection`)."""
    return cone_projection(A, c)[0]


def _max_dual_constraint(problem: DualProblem, v: np.ndarray) -> float:
    """``max_i max(||Proj_Ki(X^T D_i v)||, ||Proj_Ki(-X^T D_i v)||)``."""
    X = problem.X
    M = problem.row_masks  # (P, n)
    C = M @ (X * v[:, None])  # (P, d): X^T D_i v
    cn = np.linalg.norm(C, axis=1)
    order = np.argsort(-cn)
    best = 0.0
    S = 2.0 * M - 1.0
    for i in order:
        if cn[i] <= best:  # ||Proj(c)|| <= ||c||: nothing below can beat best
            break
        A = S[i][:, None] * X
        best = max(best, cone_projection_norm(A, C[i]), cone_projection_norm(A, -C[i]))
    return best


def dual_lower_bound(problem: DualProblem, v0: np.ndarray) -> tuple[float, float]:
    """Scale a dual candidate ``v0`` to feasibility; return ``(g, s)``.

    ``g = dual_value(s v0)`` is a valid lower bound on the optimum of (4) over the
    problem's patterns, for any ``v0``.
    """
    v0 = np.asarray(v0, dtype=np.float64).reshape(-1)
    if v0.shape != (problem.n,):
        raise ValueError(f"dual candidate must have length n = {problem.n}, got {v0.shape}")
    M = _max_dual_constraint(problem, v0)
    s_max = np.inf if M == 0 else problem.beta / M
    vinf = float(np.abs(v0).max(initial=0.0))
    if np.isfinite(problem.loss.dual_bound) and vinf > 0:
        s_max = min(s_max, problem.loss.dual_bound / vinf)
    if not np.isfinite(s_max):
        s_max = 1e300
    s = problem.loss.best_dual_scale(v0, problem.y, s_max)
    return problem.loss.dual_value(s * v0, problem.y), s


def certify_solution(problem: DualProblem, W: np.ndarray, Z: np.ndarray, *, network=None,
                     dual: np.ndarray | None = None, tolerance: float = 1e-6,
                     violation_tolerance: float = 1e-7, rel_tol_groups: float = 1e-6) -> Certificate:
    """Certificate for ``(W, Z)`` (and its recovered ``network``).

    Args:
        problem: the program.
        W, Z: dual weights ``(P, d)``.
        network: the recovered :class:`~convexdual.nets.TwoLayerConvNet` (optional);
            its objective (2) is evaluated through torch on the data.
        dual: a dual candidate ``v`` (length n) from the solver. When omitted,
            ``-dL/dyhat`` at ``(W, Z)`` is used. The better of the two is kept.
        tolerance: relative gap (and recovery error) accepted by ``ok``.
        violation_tolerance: relative cone violation accepted by ``ok``.
    """
    from convexdual.nets import primal_objective
    from convexdual.recover import active_groups

    W, Z = problem.check_weights(W, Z)
    p = problem.objective(W, Z)
    r = problem.predict(W, Z) - problem.y
    g, s = dual_lower_bound(problem, problem.loss.dual_candidate(r))
    if dual is not None:
        g2, s2 = dual_lower_bound(problem, dual)
        if g2 > g:
            g, s = g2, s2
    gap = p - g
    denom = max(abs(p), 1e-300)
    viol = problem.cone_violation(W, Z, rel_tol_groups)
    aw, az = active_groups(W, Z, rel_tol_groups, problem.weight_scale)
    net_obj = rec_err = None
    if network is not None:
        net_obj = primal_objective(network, problem.inputs, problem.targets, problem.beta, problem.loss)
        rec_err = abs(net_obj - p) / denom
    ok = bool(gap / denom <= tolerance and viol <= violation_tolerance
              and (rec_err is None or rec_err <= tolerance))
    return Certificate(
        convex_objective=p, dual_bound=float(g), gap=float(gap), relative_gap=float(gap / denom),
        max_violation=float(viol), num_neurons=int(aw.sum() + az.sum()),
        scope="exact" if problem.exact else "sampled", tolerance=float(tolerance),
        violation_tolerance=float(violation_tolerance), ok=ok, network_objective=net_obj,
        recovery_error=rec_err, dual_scale=float(s),
    )
