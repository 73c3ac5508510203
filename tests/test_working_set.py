"""clarabel-ws: working sets of groups and cone rows must reach the optimum of the FULL program (4).

References: the plain program through CVXPY + Clarabel (``cd.solve(problem, "clarabel")``),
the explicit patch matrix (Gram blocks, objective identity), and the certificate's
full-row NNLS projection.
"""

from __future__ import annotations

import numpy as np
import pytest

import convexdual as cd
from convexdual.compressed_program import PatternGram, build_restricted, group_weights
from convexdual.result import Status
from convexdual.solvers._clarabel import map_clarabel_status
from convexdual.solvers.working_set import WorkingSetOptions, WorkingSetSolver

pytest.importorskip("clarabel")

REL = 1e-7


def _rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


@pytest.fixture(scope="module")
def ws_solution(small_problem):
    return cd.solve(small_problem, "clarabel-ws")


@pytest.fixture(scope="module")
def residual_problem(digits_small):
    noisy, clean = digits_small
    pats = cd.sample_patterns(noisy, 3, 20, seed=3)
    beta = 0.02 * cd.beta_max(noisy, clean, 3, pats, residual=True)
    return cd.build_problem(noisy, clean, 3, beta, patterns=pats, residual=True)


def test_same_optimum_as_plain_clarabel(small_problem, small_solution, ws_solution):
    assert small_solution.status is Status.OPTIMAL
    assert ws_solution.status is Status.OPTIMAL, ws_solution.message
    assert _rel(ws_solution.objective, small_solution.objective) <= REL
    cert = ws_solution.certificate
    assert cert is not None and cert.ok
    assert cert.relative_gap <= 1e-6
    assert cert.max_violation <= 1e-7
    # the recovered net reproduces the convex model
    assert cert.recovery_error <= 1e-6


def test_final_working_set_is_a_strict_subset(small_problem, ws_solution):
    info = ws_solution.info
    assert info["final_cone_rows"] < info["full_cone_rows"]
    assert info["final_groups"] <= 2 * small_problem.P
    assert info["rounds"] == len(ws_solution.history) >= 1
    last = ws_solution.history[-1]
    assert last["new_rows"] == 0 and last["new_groups"] == 0


def test_every_cone_row_of_the_full_program_holds(small_problem, ws_solution):
    # independent of the solver's own check: all P*n rows, explicit patch matrix
    X = small_problem.X
    S = 2.0 * (X @ small_problem.patterns.gates.T >= 0).T - 1.0  # explicit, from the gates
    scale = np.abs(X).sum(axis=1).max() * max(np.abs(ws_solution.W).max(), np.abs(ws_solution.Z).max())
    for V in (ws_solution.W, ws_solution.Z):
        margins = S * (V @ X.T)  # (P, n)
        assert margins.min() >= -1e-8 * scale


def test_residual_variant(residual_problem):
    ref = cd.solve(residual_problem, "clarabel")
    got = cd.solve(residual_problem, "clarabel-ws")
    assert ref.status is Status.OPTIMAL and got.status is Status.OPTIMAL, got.message
    assert _rel(got.objective, ref.objective) <= REL
    assert got.certificate.ok and got.certificate.relative_gap <= 1e-6
    assert got.network.residual


@pytest.mark.parametrize("opts", [
    WorkingSetOptions(compressed=False),
    WorkingSetOptions(init_groups=0, init_rows=0),  # every group, every row: the plain program, direct
], ids=["explicit-residual", "everything"])
def test_variants_reach_the_same_optimum(small_problem, small_solution, opts):
    got = cd.solve(small_problem, "clarabel-ws", opts)
    assert got.status is Status.OPTIMAL, got.message
    assert _rel(got.objective, small_solution.objective) <= REL
    assert got.certificate.ok


def test_tiny_working_sets_grow_to_the_same_optimum(small_problem, small_solution):
    opts = WorkingSetOptions(init_groups=2, groups_per_round=1, init_rows=1, rows_per_round=1, max_rounds=400)
    got = cd.solve(small_problem, "clarabel-ws", opts)
    assert got.status is Status.OPTIMAL, got.message
    assert got.info["rounds"] > 5  # the full checks really drove the growth
    assert _rel(got.objective, small_solution.objective) <= REL
    assert got.certificate.ok


def test_max_rounds_is_not_reported_optimal(small_problem):
    opts = WorkingSetOptions(init_groups=1, init_rows=1, max_rounds=1)
    got = cd.solve(small_problem, "clarabel-ws", opts)
    assert got.status is Status.MAX_ITERATIONS
    assert "max_rounds" in got.message


def test_large_beta_gives_zero(small_problem, digits_small):
    noisy, clean = digits_small
    big = cd.build_problem(noisy, clean, 3, 2.0 * cd.beta_max(noisy, clean, 3, small_problem.patterns),
                           patterns=small_problem.patterns)
    got = cd.solve(big, "clarabel-ws")  # cd.solve's zero test answers before any round
    assert got.status is Status.OPTIMAL and got.info["zero_network"]
    assert not got.W.any() and not got.Z.any() and got.certificate.ok
    assert _rel(got.objective, 0.5 * float(big.y @ big.y)) <= 1e-7
    raw = WorkingSetSolver().solve(big)  # and the solver on its own finds zero in round 0
    assert raw.status is Status.OPTIMAL and raw.info["rounds"] == 0 and not raw.W.any()


def test_zero_network_from_every_exact_solver_when_beta_is_huge(digits_small):
    # beta far above beta_max: the zero net, certified, from every exact solver (no "unbounded",
    # no solver errors); all-zero targets likewise
    noisy, clean = digits_small[0][:3], digits_small[1][:3]
    for clean_, beta in ((clean, 1e12), (np.zeros_like(clean), 1.0)):
        prob = cd.build_problem(noisy, clean_, 3, beta, num_patterns=10, seed=0)
        for name in ("clarabel", "clarabel-ws", "active_set", "ecos", "auto"):
            got = cd.solve(prob, name)
            assert got.status is Status.OPTIMAL, (name, got.message)
            assert not got.W.any() and not got.Z.any() and got.network.width == 0
            assert got.certificate.ok and got.certificate.relative_gap <= 1e-12


def test_nonsquared_loss_falls_back_to_plain_program(digits_small, small_problem):
    noisy, clean = digits_small[0][:2], digits_small[1][:2]
    pats = cd.sample_patterns(noisy, 3, 10, seed=0)
    prob = cd.build_problem(noisy, clean, 3, 0.02 * cd.beta_max(noisy, clean, 3, pats), patterns=pats, loss="huber")
    got = cd.solve(prob, "clarabel-ws")
    ref = cd.solve(prob, "clarabel")
    assert got.info.get("fallback") is True and "not supported" in got.message
    assert got.solver == "clarabel-ws"
    assert got.status is Status.OPTIMAL and _rel(got.objective, ref.objective) <= REL
    with pytest.raises(ValueError, match="squared loss only"):
        WorkingSetSolver().solve(prob, WorkingSetOptions(fallback=False))


def test_gram_blocks_and_compressed_objective(small_problem):
    prob = small_problem
    X, y = prob.X, prob.y
    M = (X @ prob.patterns.gates.T >= 0).T.astype(float)  # explicit masks from the gates
    pats = np.array([3, 0, 7, 3])
    G = PatternGram(X, M).matrix(pats)
    A = np.concatenate([M[i][:, None] * X for i in pats], axis=1)
    np.testing.assert_allclose(G, A.T @ A, rtol=1e-12, atol=1e-9)
    G_lowmem = PatternGram(X, M, max_bytes=100).matrix(pats)  # per-block path (large d)
    np.testing.assert_allclose(G_lowmem, A.T @ A, rtol=1e-12, atol=1e-9)
    # 1/2 x^T P x + q^T x + offset == value of (4) at the same weights (distinct groups)
    sign = np.array([1.0, -1.0, 1.0, -1.0])
    rows = [np.arange(5)] * 4
    rng = np.random.default_rng(0)
    for compressed in (True, False):
        prog = build_restricted(prob, pats, sign, rows, compressed=compressed)
        U = rng.normal(size=(4, prob.d))
        W, Z = group_weights(prob.P, prob.d, pats, sign, U)
        t = np.linalg.norm(U, axis=1)
        x = np.concatenate([U.ravel(), t] + ([] if compressed else [prob.predict(W, Z) - y]))
        Pfull = prog.P.toarray()
        Pfull = Pfull + np.triu(Pfull, 1).T
        val = 0.5 * x @ Pfull @ x + prog.q @ x + prog.offset
        assert _rel(val, prob.objective(W, Z)) <= 1e-10


def test_lazy_projection_matches_full_nnls(small_problem):
    """The engine's lazy-row projections (what clarabel-ws screens with), cold and warm-started from
    remembered rows, against two references written here: a CVXPY model of max{c.w : w in K_i, |w| <= 1}
    and a full-row NNLS (Moreau) on a loop-built patch matrix with masks from the gates."""
    from scipy.optimize import nnls

    from tests._reference import cone_projection_norm_ref, masks_ref, patch_matrix_ref

    prob = small_problem
    X = patch_matrix_ref(prob.inputs, prob.kernel_size)
    M = masks_ref(X, prob.patterns.gates)
    C = M @ (X * prob.y[:, None])
    eng = prob.engine
    for i in range(5):
        A = (2 * M[i] - 1)[:, None] * X
        for s in (1.0, -1.0):
            c = s * C[i]
            lam, _ = nnls(A.T, -c, maxiter=50 * A.shape[0])
            full = np.linalg.norm(c + A.T @ lam)
            ref = cone_projection_norm_ref(A, c)
            assert abs(full - ref) <= 1e-6 * max(ref, 1.0)  # the two references agree
            for attempt in ("cold", "warm"):  # warm: starts from the rows remembered under the key
                val, proj, _ = eng.project(i, c, key=("test", i, s))
                assert abs(val - full) <= 1e-9 * max(full, 1.0), (i, s, attempt)
                assert abs(np.linalg.norm(proj) - val) <= 1e-12 * max(val, 1.0)
                scale = np.linalg.norm(c) * np.linalg.norm(X, axis=1).max()
                assert (A @ proj).min() >= -1e-9 * scale  # in the cone
            floor = 1e-9 * np.linalg.norm(c)  # projections of ~0 are rounding noise
            assert eng.relaxed_norm(i, c, ("test", i, s)) >= full - floor  # an upper bound
            assert eng.relaxed_norm(i, 1.1 * c, ("test", i, s)) >= 1.1 * full - floor


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="max_rounds"):
        WorkingSetOptions(max_rounds=0)
    with pytest.raises(ValueError, match="init_rows"):
        WorkingSetOptions(init_rows=-1)
    with pytest.raises(ValueError, match="clarabel_kkt"):
        WorkingSetOptions(clarabel_kkt="mkl")
    with pytest.raises(ValueError, match="feas_tol"):
        WorkingSetOptions(feas_tol=0.0)
    with pytest.raises(ValueError, match="row_tol"):
        WorkingSetOptions(row_tol=-1.0)


def test_status_map_never_invents_optimal():
    assert map_clarabel_status("SolverStatus.Solved") is Status.OPTIMAL
    assert map_clarabel_status("AlmostSolved") is Status.OPTIMAL_INACCURATE
    assert map_clarabel_status("SomethingNew") is Status.SOLVER_ERROR


def test_agrees_with_plain_clarabel_on_another_instance():
    from convexdual.data import add_noise, load_digits_dataset

    clean = load_digits_dataset(3, 0, seed=1).train
    noisy = add_noise(clean, "gaussian", 0.5, seed=2)
    pats = cd.sample_patterns(noisy, 3, 40, seed=1)
    prob = cd.build_problem(noisy, clean, 3, 0.02 * cd.beta_max(noisy, clean, 3, pats), patterns=pats)
    ref = cd.solve(prob, "clarabel")
    got = cd.solve(prob, "clarabel-ws")
    assert ref.status is Status.OPTIMAL and got.status is Status.OPTIMAL, got.message
    assert _rel(got.objective, ref.objective) <= REL
    assert got.certificate.ok and got.certificate.relative_gap <= 1e-6


def test_rounds_run_on_the_iteration_harness(small_problem, monkeypatch):
    """clarabel-ws's rounds are harness steps: the shared history schema (iteration = round, objective =
    the restricted value; no per-round gap: nan), Ctrl-C -> INTERRUPTED with the point reached so far."""
    schema = ["iteration", "time", "objective", "dual_bound", "relative_gap", "violation"]
    r = WorkingSetSolver().solve(small_problem, WorkingSetOptions(init_groups=2, init_rows=4))
    assert r.status is Status.OPTIMAL and len(r.history) >= 2
    assert all(list(row)[:len(schema)] == schema for row in r.history)
    assert [row["iteration"] for row in r.history] == list(range(1, len(r.history) + 1))
    assert all(np.isnan(row["relative_gap"]) and row["clarabel_iterations"] >= 1 for row in r.history)
    assert r.iterations == sum(row["clarabel_iterations"] for row in r.history)  # Clarabel's, not rounds
    real = WorkingSetSolver._round

    def interrupted(self, state, rnd):
        if rnd == 2:
            raise KeyboardInterrupt
        return real(self, state, rnd)

    monkeypatch.setattr(WorkingSetSolver, "_round", interrupted)
    r2 = WorkingSetSolver().solve(small_problem, WorkingSetOptions(init_groups=2, init_rows=4))
    assert r2.status is Status.INTERRUPTED and r2.message == "interrupted by the user"
    assert len(r2.history) == 1 and r2.W is not None and np.isfinite(r2.objective)
