"""cd.solve above the backends: the auto choice, options by dict/keyword, units, memory limits,
and the engine against explicit references (patch matrix + masks built here)."""

import numpy as np
import pytest

import convexdual as cd
from convexdual.engine import MemoryBudgetError, PatternEngine
from convexdual.patches import patch_matrix
from convexdual.result import Status


@pytest.fixture(scope="module")
def tiny():
    rng = np.random.default_rng(11)
    noisy = rng.standard_normal((3, 6, 6))
    clean = noisy + 0.3 * rng.standard_normal((3, 6, 6))
    pats = cd.sample_patterns(noisy, 3, 12, seed=2)
    beta = 0.05 * cd.beta_max(noisy, clean, 3, pats)
    return noisy, clean, pats, beta


def test_auto_picks_active_set_for_squared_and_clarabel_or_mosek_otherwise(tiny):
    noisy, clean, pats, beta = tiny
    sq = cd.build_problem(noisy, clean, 3, beta, patterns=pats)
    ab = cd.build_problem(noisy, clean, 3, beta, patterns=pats, loss="absolute")
    assert cd.api.choose_solver(sq)[0].name == "active_set"
    assert cd.api.choose_solver(ab)[0].name in ("mosek", "clarabel")
    ref = cd.solve(sq, "clarabel")
    got = cd.solve(sq)
    assert got.solver == "active_set" and got.status is Status.OPTIMAL
    assert got.objective == pytest.approx(ref.objective, rel=1e-7)


def test_options_as_dict_and_keywords(tiny):
    noisy, clean, pats, beta = tiny
    prob = cd.build_problem(noisy, clean, 3, beta, patterns=pats)
    a = cd.solve(prob, "active_set", {"max_iter": 1})
    b = cd.solve(prob, "active_set", max_iter=1)
    assert a.iterations == b.iterations == 1
    assert a.objective == b.objective
    with pytest.raises(TypeError, match="no option.*'max_iters'.*its options are"):
        cd.solve(prob, "active_set", max_iters=3)
    with pytest.raises(TypeError, match="must be ActiveSetOptions, a dict or None"):
        cd.solve(prob, "active_set", options=3)


@pytest.mark.parametrize("scale", [1e-8, 1e-4, 1e4, 1e8])
def test_results_do_not_depend_on_the_data_units(tiny, scale):
    # x -> s x, y -> s y, beta -> s^2 beta: the same program in other units, objective * s^2
    noisy, clean, pats, beta = tiny
    ref = cd.solve(cd.build_problem(noisy, clean, 3, beta, patterns=pats), "clarabel")
    for name in ("clarabel", "active_set", "clarabel-ws"):
        prob = cd.build_problem(scale * noisy, scale * clean, 3, beta * scale**2, patterns=pats)
        got = cd.solve(prob, name)
        assert got.status is Status.OPTIMAL, (name, scale, got.message)
        assert got.objective == pytest.approx(ref.objective * scale**2, rel=1e-6), (name, scale)
        assert got.certificate.ok
        assert got.network.width == ref.network.width


def test_memory_limit_refuses_before_allocating(tiny):
    noisy, clean, pats, beta = tiny
    with pytest.raises(MemoryBudgetError, match="needs about .* GiB but the memory limit"):
        cd.sample_patterns(noisy, 3, 10**9)  # 10^9 gates of d = 9: refused, not a 67 GiB allocation
    with pytest.raises(MemoryBudgetError, match="the problem .*fewer"):
        cd.build_problem(noisy, clean, 3, beta, num_patterns=100, memory_limit_mb=0.001)
    prob = cd.build_problem(noisy, clean, 3, beta, patterns=pats, memory_limit_mb=0.1)
    with pytest.raises(MemoryBudgetError, match="explicit SOCP"):
        cd.solve(prob, "clarabel")


def test_engine_matches_explicit_references(tiny):
    # masks, adjoint, scan maximum, violation against a patch matrix and masks built here
    noisy, clean, pats, beta = tiny
    x = noisy[:, None]
    X = patch_matrix(x, 3)
    M = (X @ pats.gates.T >= 0).T  # (P, n)
    eng = PatternEngine(x, 3, pats.gates)
    np.testing.assert_array_equal(eng.masks(), M)
    v = np.random.default_rng(0).standard_normal(X.shape[0])
    C = (M * v) @ X
    np.testing.assert_allclose(eng.adjoint(v), C, rtol=1e-10, atol=1e-10)
    # exact maximum by projecting every pattern, both signs, with a dense NNLS written here
    from scipy.optimize import nnls

    exact = {}
    for i in range(len(M)):
        A = np.where(M[i], 1.0, -1.0)[:, None] * X
        for s, c in ((1.0, C[i]), (-1.0, -C[i])):
            lam, _ = nnls(A.T, -c, maxiter=5000)
            exact[(i, s)] = float(np.linalg.norm(c + A.T @ lam))
    best = max(exact.values())
    res = eng.scan(v)
    assert res.max_value == pytest.approx(best, rel=1e-9)
    assert res.pruned > 0 or res.projections == 2 * len(M)
    # a scan with a threshold reports every group above it, and only those
    thr = 0.5 * best
    found = eng.scan(v, threshold=thr).found
    above = {g for g, val in exact.items() if val > thr * (1 + 1e-9)}
    assert above and above <= {(i, s) for _, i, s, _ in found}
    assert all(f[0] > thr for f in found)
    # first=True stops at `limit` groups above the threshold (any of them, exact values), and its
    # max_value still bounds the maximum; with a limit it cannot reach, the scan is complete
    for limit in (1, 3):
        res = eng.scan(v, threshold=thr, limit=limit, first=True)
        assert len(res.found) == min(limit, len(above))
        for val, i, s, _ in res.found:
            assert val == pytest.approx(exact[(i, s)], rel=1e-9) and val > thr
        assert res.max_value >= best * (1 - 1e-9)
    res = eng.scan(v, threshold=thr, limit=10**6, first=True)
    assert {(i, s) for _, i, s, _ in res.found} >= above
    assert res.max_value >= best * (1 - 1e-9)
    with pytest.raises(ValueError, match="threshold and a limit"):
        eng.scan(v, first=True)


@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_cone_violation_dense_and_sparse_paths_match_the_patch_matrix(backend):
    # 100 patterns: with every group live the engine takes one operator pass; with three, one group at a time
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 1, 7, 7))
    gates = rng.standard_normal((100, 9))
    X = patch_matrix(x, 3)
    S = np.where(X @ gates.T >= 0, 1.0, -1.0)
    eng = PatternEngine(x, 3, gates, backend=backend)
    xmax = np.linalg.norm(X, axis=1).max()
    for live in (100, 3):
        W, Z = rng.standard_normal((100, 9)), rng.standard_normal((100, 9))
        W[live:], Z[live:] = 0.0, 0.0
        Z[1] = 0.0
        for a, b in ((1.0, 1.0), (10.0, 1.0), (1.0, 10.0)):  # either side's violation the largest
            Wa, Zb = a * W, b * Z
            top = max(np.linalg.norm(Wa, axis=1).max(), np.linalg.norm(Zb, axis=1).max())
            ref = max(np.maximum(-(S * (X @ Wa.T)), 0).max(), np.maximum(-(S * (X @ Zb.T)), 0).max()) / (xmax * top)
            assert ref > 0
            assert eng.cone_violation(Wa, Zb) == pytest.approx(ref, rel=1e-12)
        # the groups inside their cones (their projections) give 0
        Wp = np.array([eng.project(i, W[i])[1] if np.any(W[i]) else W[i] for i in range(100)])
        Zp = np.array([eng.project(i, Z[i])[1] if np.any(Z[i]) else Z[i] for i in range(100)])
        assert eng.cone_violation(Wp, Zp) <= 1e-12


def test_unit_scales_survive_residual_networks(tiny):
    noisy, clean, pats, beta = tiny
    ref = cd.solve(cd.build_problem(noisy, clean, 3, beta, patterns=pats, residual=True), "clarabel")
    s = 1e6
    got = cd.solve(cd.build_problem(s * noisy, s * clean, 3, beta * s * s, patterns=pats, residual=True))
    assert got.status is Status.OPTIMAL
    assert got.objective == pytest.approx(ref.objective * s * s, rel=1e-6)
    assert got.certificate.network_objective == pytest.approx(got.objective, rel=1e-6)


def test_short_reprs_never_dump_arrays(tiny):
    noisy, clean, pats, beta = tiny
    prob = cd.build_problem(noisy, clean, 3, beta, patterns=pats)
    res = cd.solve(prob)
    for obj in (prob, prob.patterns, res, res.certificate):
        text = repr(obj)
        assert len(text) < 400 and "array(" not in text and "[[" not in text, type(obj).__name__
    assert "sampled" in repr(res.certificate) and f"P={prob.P}" in repr(prob)


def test_scan_projections_with_passes_over_every_row_match_dense_nnls(monkeypatch):
    # n well above the projection pool (16 x 4 d rows), so projections make passes over every row:
    # every exact value equals dense NNLS on all the cone's rows
    from scipy.optimize import nnls
    from sklearn.datasets import load_digits

    import convexdual.engine as E

    x = load_digits().images[:30, None] / 16.0  # n = 1,920 rows, d = 9
    X = patch_matrix(x, 3)
    gates = np.random.default_rng(1).standard_normal((24, 9))
    eng = PatternEngine(x, 3, gates)
    v = np.random.default_rng(2).standard_normal(X.shape[0])
    C = eng.adjoint(v)
    passes = []
    real = E._RowSet.matvec

    def counting(self, w):
        passes.append(1)
        return real(self, w)

    monkeypatch.setattr(E._RowSet, "matvec", counting)
    exact = {}
    for i in range(len(gates)):
        A = np.where((X @ gates[i] >= 0)[:, None], X, -X)
        for s in (1.0, -1.0):
            lam, _ = nnls(A.T, -s * C[i], maxiter=20000)
            exact[(i, s)] = float(np.linalg.norm(s * C[i] + A.T @ lam))
    thr = 1e-3 * max(exact.values())
    res = eng.scan(C=C, threshold=thr, limit=10**6, tag="t")  # every group above thr, exactly
    assert passes, "no projection needed a pass over every row"
    got = {(i, s): val for val, i, s, _ in res.found}
    assert set(got) == {g for g, val in exact.items() if val > thr}
    for g, val in got.items():
        assert val == pytest.approx(exact[g], rel=1e-8, abs=1e-10)
    assert res.max_value == pytest.approx(max(exact.values()), rel=1e-8)
