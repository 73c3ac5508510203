"""The duality-gap certificate: valid lower bounds, exact cone projections."""

import cvxpy as cp
import numpy as np
import pytest

import convexdual as cd
from convexdual.certificate import cone_projection_norm


def test_cone_projection_against_cvxpy():
    rng = np.random.default_rng(0)
    for _ in range(5):
        A = rng.standard_normal((30, 4))
        c = rng.standard_normal(4) * 3
        w = cp.Variable(4)
        cp.Problem(cp.Minimize(cp.sum_squares(w - c)), [A @ w >= 0]).solve(solver="CLARABEL")
        assert np.isclose(cone_projection_norm(A, c), np.linalg.norm(w.value), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("seed", range(4))
def test_cone_projection_with_more_rows_than_its_pool(seed):
    """Thousands of rows, far more than the projection's pool (16 x 4 d) and its working set (4 d),
    so the loop goes through pool rounds, full passes that refill the pool, and dropped rows: the
    answer is still the exact projection (CVXPY/Clarabel on every row), and the rows reported
    active are the ones whose constraints are tight at it."""
    from convexdual.engine import cone_projection

    rng = np.random.default_rng(seed)
    d, n = 5, 4000
    # rows in a few clusters (like patch rows), most of them violated by c
    centres = rng.standard_normal((12, d))
    A = centres[rng.integers(0, 12, n)] + 0.3 * rng.standard_normal((n, d))
    c = -A.mean(0) * 4 + rng.standard_normal(d)
    assert (A @ c < 0).sum() > 16 * 4 * d  # more violated rows than the pool holds
    norm, proj, act = cone_projection(A, c, return_rows=True)
    w = cp.Variable(d)
    cp.Problem(cp.Minimize(cp.sum_squares(w - c)), [A @ w >= 0]).solve(solver="CLARABEL")
    assert norm == pytest.approx(np.linalg.norm(w.value), rel=1e-6, abs=1e-8)
    assert np.linalg.norm(proj - w.value) <= 1e-5 * max(1.0, np.linalg.norm(c))
    assert (A @ proj).min() >= -1e-9 * np.abs(A).max() * np.linalg.norm(c)
    assert act.size and np.abs(A[act] @ proj).max() <= 1e-8 * np.abs(A).max() * np.linalg.norm(c)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_projection_stopped_at_a_level_returns_a_bound_between_the_value_and_the_level(seed):
    """With ``stop`` the lazy loop may end before the exact projection; it then returns an iterate
    ``c + A_S^T lam`` whose norm lies between the exact value (CVXPY/Clarabel) and ``stop``; above the
    exact value the loop always goes to the end."""
    from convexdual.engine import _lazy_projection, _RowSet

    rng = np.random.default_rng(seed)
    d, n = 6, 3000
    e = np.ones(d) / np.sqrt(d)
    centres = rng.standard_normal((10, d)) + 3 * e  # a cone with interior
    A = centres[rng.integers(0, 10, n)] + 0.3 * rng.standard_normal((n, d))
    c = rng.standard_normal(d) - 0.5 * e  # violates 1,000-3,000 rows; projection 0.3-0.8 ||c||
    assert (A @ c < 0).sum() > 16 * 4 * d
    w = cp.Variable(d)
    cp.Problem(cp.Minimize(cp.sum_squares(w - c)), [A @ w >= 0]).solve(solver="CLARABEL")
    exact = float(np.linalg.norm(w.value))
    tol = 1e-12 * np.abs(A).max() * np.linalg.norm(c)
    stopped = 0
    for level in (1.01 * exact, 1.5 * exact, 0.5 * np.linalg.norm(c) + exact):
        proj, _, is_exact = _lazy_projection(_RowSet(A, None), c, tol, None, 200, stop=level)
        nrm = float(np.linalg.norm(proj))
        if is_exact:
            assert nrm == pytest.approx(exact, rel=1e-6)
        else:
            stopped += 1
            assert exact * (1 - 1e-6) <= nrm <= level
    assert stopped >= 1  # the early exit is taken on these instances
    proj, _, is_exact = _lazy_projection(_RowSet(A, None), c, tol, None, 200, stop=0.99 * exact)
    assert is_exact and float(np.linalg.norm(proj)) == pytest.approx(exact, rel=1e-6)


def test_dual_bound_is_below_optimum_for_any_candidate(small_problem, small_solution):
    """The bound of a candidate ``v`` equals an independent computation (CVXPY cone projections on a
    loop-built patch matrix, masks from the gates) and stays below the optimum. Candidates are the
    optimal dual point and perturbations of it, where the bound is near the optimum: a bound that
    skipped or mis-scaled the feasibility step would land above it."""
    from tests._reference import exact_dual_bound_ref, masks_ref, patch_matrix_ref

    p, opt = small_problem, small_solution.objective
    X = patch_matrix_ref(p.inputs, p.kernel_size)
    M = masks_ref(X, p.patterns.gates)
    zero = np.zeros((p.P, p.d))
    g_zero, _ = exact_dual_bound_ref(X, M, p.y, p.beta, p.y)  # the zero point's own candidate, v = y
    r_opt = p.y - p.predict(small_solution.W, small_solution.Z)  # the optimal dual point
    rng = np.random.default_rng(1)
    for eps in (0.0, 1e-3, 1e-1, 1.0):
        v = r_opt + eps * np.abs(r_opt).max() * rng.standard_normal(p.n)
        cert = cd.certify_solution(p, zero, zero, dual=v)
        g_ref, _ = exact_dual_bound_ref(X, M, p.y, p.beta, v)
        assert cert.dual_bound == pytest.approx(max(g_ref, g_zero), rel=1e-6), eps
        assert cert.dual_bound <= opt + 1e-9 * abs(opt), eps
        if eps == 0.0:  # tight at the optimal dual point
            assert cert.dual_bound >= opt * (1 - 1e-7)
        if eps == 1e-3:
            assert cert.dual_bound >= opt * (1 - 1e-2)  # near the optimum: the check above has teeth


def test_suboptimal_point_has_a_gap(small_problem, small_solution):
    W, Z = 0.8 * small_solution.W, 0.8 * small_solution.Z  # feasible (cones), not optimal
    cert = cd.certify_solution(small_problem, W, Z)
    assert cert.max_violation <= 1e-7
    assert cert.relative_gap > 1e-3 and not cert.ok
    assert cert.dual_bound <= small_solution.objective + 1e-9
    assert cert.convex_objective > small_solution.objective


def test_infeasible_point_is_flagged(small_problem, small_solution):
    W = small_solution.W.copy()
    i = int(np.argmax(np.linalg.norm(W, axis=1)))
    W[i] = -W[i]  # leaves its cone
    cert = cd.certify_solution(small_problem, W, small_solution.Z)
    assert cert.max_violation > 1e-3 and not cert.ok


def test_gated_bound_is_looser_than_exact(small_problem, small_solution):
    """At the optimum's residual the exact (cone-projection) scaling gives the certified bound, equal to
    an independent CVXPY computation; the cheap gated scaling ``beta / max_i ||X^T D_i r||`` is valid
    but looser, here too loose to certify the optimum."""
    from tests._reference import dual_value_ref, exact_dual_bound_ref, masks_ref, patch_matrix_ref

    p, opt = small_problem, small_solution.objective
    X = patch_matrix_ref(p.inputs, p.kernel_size)
    M = masks_ref(X, p.patterns.gates)
    r = p.y - p.predict(small_solution.W, small_solution.Z)
    gated = float(np.linalg.norm(M @ (X * r[:, None]), axis=1).max())
    s_gated = min(p.beta / gated, float(r @ p.y) / float(r @ r))
    g_gated = dual_value_ref(s_gated * r, p.y, "squared")
    g_exact, s_exact = exact_dual_bound_ref(X, M, p.y, p.beta, r)
    cert = cd.certify_solution(p, small_solution.W, small_solution.Z)
    assert cert.dual_bound == pytest.approx(g_exact, rel=1e-8)
    assert cert.dual_scale == pytest.approx(s_exact, rel=1e-6)
    assert s_exact >= s_gated and g_exact >= g_gated
    assert (opt - g_exact) / opt <= 1e-7 < (opt - g_gated) / opt  # only the exact bound certifies
    assert g_gated <= opt
