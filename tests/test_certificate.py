"""The duality-gap certificate: valid lower bounds, exact cone projections."""

import cvxpy as cp
import numpy as np

import convexdual as cd
from convexdual.certificate import cone_projection_norm, dual_lower_bound


def test_cone_projection_against_cvxpy():
    rng = np.random.default_rng(0)
    for _ in range(5):
        A = rng.standard_normal((30, 4))
        c = rng.standard_normal(4) * 3
        w = cp.Variable(4)
        cp.Problem(cp.Minimize(cp.sum_squares(w - c)), [A @ w >= 0]).solve(solver="CLARABEL")
        assert np.isclose(cone_projection_norm(A, c), np.linalg.norm(w.value), rtol=1e-6, atol=1e-8)


def test_dual_bound_is_below_optimum_for_any_candidate(small_problem, small_solution):
    rng = np.random.default_rng(1)
    for _ in range(5):
        g, _ = dual_lower_bound(small_problem, rng.standard_normal(small_problem.n))
        assert g <= small_solution.objective + 1e-9


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
    r = small_problem.y - small_problem.predict(small_solution.W, small_solution.Z)
    C = small_problem.row_masks @ (small_problem.X * r[:, None])
    gated = np.linalg.norm(C, axis=1).max()
    g_exact, s = dual_lower_bound(small_problem, r)
    # the exact cone projection never exceeds the gated norm, so the exact scaling is >= gated scaling
    assert s >= min(1.0, small_problem.beta / gated) - 1e-12
