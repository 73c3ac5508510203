"""Duality-gap certificates for program (4) and its recovered network (docs/math.md §6).

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

from convexdual.engine import cone_projection, cone_projection_norm
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

    def __repr__(self) -> str:
        over = "all sign patterns (exact enumeration)" if self.scope == "exact" else "the sampled patterns"
        return (f"Certificate({'ok' if self.ok else 'NOT ok'} over {over}: objective {self.convex_objective:.10g}, "
                f"dual bound {self.dual_bound:.10g}, relative gap {self.relative_gap:.2e}, "
                f"violation {self.max_violation:.2e}, neurons {self.num_neurons})")


def dual_lower_bound(problem: DualProblem, v0: np.ndarray, *, progress: bool = False) -> tuple[float, float]:
    """Scale a dual candidate ``v0`` to feasibility; return ``(g, s)``.

    ``g = dual_value(s v0)`` is a valid lower bound on the optimum of (4) over the problem's
    patterns, for any ``v0`` (:meth:`convexdual.engine.PatternEngine.dual_bound`).
    """
    v0 = np.asarray(v0, dtype=np.float64).reshape(-1)
    if v0.shape != (problem.n,):
        raise ValueError(f"dual candidate must have length n = {problem.n}, got {v0.shape}")
    b = problem.engine.dual_bound(problem.loss, problem.y, problem.beta, v0, progress=progress)
    return b.value, b.scale


def _parallel(a: np.ndarray, b: np.ndarray, comm: Any = None) -> bool:
    """True when ``a = t b`` for some ``t > 0`` (to rounding); with ``comm``, over the rows of every rank."""
    from convexdual.distributed import SINGLE

    comm = SINGLE if comm is None else comm
    if comm.min(float(a.shape == b.shape)) < 1:
        return False
    ab, nb, na = comm.sum(np.array([float(a @ b), float(b @ b), float(a @ a)]))
    if nb == 0.0:
        return na == 0.0
    t = ab / nb
    d = a - t * b
    return t > 0 and float(np.sqrt(comm.sum(float(d @ d)))) <= 1e-12 * max(float(np.sqrt(na)), 1e-300)


def _completed_dual(problem: DualProblem, W: np.ndarray, Z: np.ndarray, r: np.ndarray,
                    start: np.ndarray, rel_tol_groups: float, max_entries: float = 4e6) -> np.ndarray | None:
    """A dual candidate for a non-smooth loss (the absolute loss), tight at an optimal point.

    The subgradient ``v = -sign(r)`` fixes ``v_j`` only on rows with ``r_j != 0``; on the rows
    an optimal point fits exactly (``r_j ~ 0``) any ``v_j`` in ``[-1, 1]`` is a subgradient, and
    ``sign`` picks 0 there, far from the optimal dual. A solver's dual fills them in, but only to
    its own (absolute) feasibility tolerance, and scaling it to feasibility then costs the whole
    bound that relative excess (1.8e-6 at data in units of 10^-1.5). The optimal dual is pinned
    by the primal point's optimality conditions: ``v_j = -sign(r_j)`` on the rows with
    ``|r_j| > tau = 1e-6 max(||y||_inf, ||r||_inf)``, and, for every group that becomes a neuron,
    ``Proj_{K_i}(X^T D_i v) = beta u_i`` with ``u_i = w_i / ||w_i||`` (``-z_i / ||z_i||`` for
    ``z_i``), i.e. ``X^T D_i v = beta u_i - A_i^T lam_i`` (``-beta u_i + A_i^T lam_i`` for
    ``z_i``) with ``lam_i >= 0`` on the cone rows ``A_i = (2 D_i - I) X`` that ``u_i`` meets
    (``A_i u_i ~ 0``). The free rows and the
    multipliers are the minimum-norm least-squares solution from ``start``, ``v`` is clipped to
    the loss's domain (a multiplier that comes out negative only makes the candidate less tight;
    on 25 random absolute-loss instances none did). Any vector is a valid candidate (``dual_lower_bound`` scales it to feasibility); this
    one is only used when it gives a better bound. None when the loss is smooth (``-dL/dyhat`` is
    then the dual), no row is fitted or no group is a neuron, or the system has more than
    ``max_entries`` entries.
    """
    from scipy.linalg import block_diag

    from convexdual.recover import active_groups

    if problem.loss.smooth:
        return None
    bound = float(problem.loss.dual_bound)
    scale_r = max(float(np.abs(problem.y).max(initial=0.0)), float(np.abs(r).max(initial=0.0)))
    free = np.abs(r) <= 1e-6 * scale_r
    aw, az = active_groups(W, Z, rel_tol_groups, problem.weight_scale)
    groups = [(int(i), W[i], 1.0) for i in np.flatnonzero(aw)] + [(int(i), Z[i], -1.0) for i in np.flatnonzero(az)]
    nf = int(free.sum())
    if nf == 0 or not groups:
        return None
    X = problem.X
    xn = np.linalg.norm(X, axis=1)
    faces = []
    for i, w, sign in groups:
        m = problem.mask(i)
        u = w / np.linalg.norm(w)
        # the cone rows u meets (X^T D_i v may leave K_i along them, by a multiplier lam >= 0)
        meets = np.flatnonzero((xn > 0) & (np.where(m, 1.0, -1.0) * (X @ u) <= 1e-6 * xn))
        faces.append((m, u, sign, meets))
    if (nf + sum(f[3].size for f in faces)) * problem.d * len(groups) > max_entries:
        return None
    v = np.where(free, np.clip(np.ravel(np.asarray(start, dtype=np.float64)), -bound, bound),
                 problem.loss.dual_candidate(r))
    Xf = X[free]
    blocks, rhs, touching = [], [], []
    for m, u, sign, meets in faces:
        blocks.append((Xf * m[free][:, None]).T)  # X_F^T D_i,F  (d, nf)
        touching.append(sign * (np.where(m[meets], 1.0, -1.0)[:, None] * X[meets]).T)  # +-A_i^T lam_i
        rhs.append(sign * problem.beta * u - X.T @ (m * v))
    b = np.concatenate(rhs)
    G = np.hstack([np.vstack(blocks), block_diag(*touching)])
    x = np.linalg.lstsq(G, b, rcond=None)[0]
    v[free] = np.clip(v[free] + x[:nf], -bound, bound)
    return v


def certify_solution(problem: DualProblem, W: np.ndarray, Z: np.ndarray, *, network=None,
                     dual: np.ndarray | None = None, tolerance: float = 1e-6,
                     violation_tolerance: float = 1e-7, rel_tol_groups: float = 1e-6,
                     progress: bool = False) -> Certificate:
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
    r = problem.predict(W, Z) - problem.y  # one prediction serves the objective and the dual candidate
    p = float(problem.engine.reduce(problem.loss.value(r))
              + problem.beta * (np.linalg.norm(W, axis=1).sum() + np.linalg.norm(Z, axis=1).sum()))
    cand = problem.loss.dual_candidate(r)
    g, s = dual_lower_bound(problem, cand, progress=progress)
    if dual is not None and _parallel(np.asarray(dual, dtype=np.float64).reshape(-1), cand, problem.engine.comm):
        dual = None  # a positive multiple of the candidate: the same scaled point, no second scan
    if dual is not None:
        g2, s2 = dual_lower_bound(problem, dual, progress=progress)
        if g2 > g:
            g, s = g2, s2
    completed = None if problem.distributed else _completed_dual(problem, W, Z, r, cand if dual is None else dual, rel_tol_groups)
    if completed is not None:
        g3, s3 = dual_lower_bound(problem, completed, progress=progress)
        if g3 > g:
            g, s = g3, s3
    gap = p - g
    denom = max(abs(p), 1e-300)
    viol = problem.cone_violation(W, Z, rel_tol_groups)
    aw, az = active_groups(W, Z, rel_tol_groups, problem.weight_scale)
    net_obj = rec_err = None
    if network is not None:
        net_obj = primal_objective(network, problem.inputs, problem.targets, problem.beta, problem.loss,
                                   comm=problem.engine.comm)
        rec_err = abs(net_obj - p) / denom
    # a clearly negative gap is no certificate: the point is not a point of (4) or a bound is broken
    ok = bool(-tolerance <= gap / denom <= tolerance and viol <= violation_tolerance
              and (rec_err is None or rec_err <= tolerance))
    return Certificate(
        convex_objective=p, dual_bound=float(g), gap=float(gap), relative_gap=float(gap / denom),
        max_violation=float(viol), num_neurons=int(aw.sum() + az.sum()),
        scope="exact" if problem.exact else "sampled", tolerance=float(tolerance),
        violation_tolerance=float(violation_tolerance), ok=ok, network_objective=net_obj,
        recovery_error=rec_err, dual_scale=float(s),
    )
