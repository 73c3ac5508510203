"""PatternEngine's masks, signs, cone violation and dual bound (what the certificate calls),
against tests/_reference.py: explicit patch matrix and masks, the violation formula of the
docstring evaluated by hand, and the exact dual-bound scaling by CVXPY cone projections
(mutation survivors of the engine-masks target, issue 18)."""

from __future__ import annotations

import numpy as np
import pytest

from convexdual.engine import MemoryBudgetError, PatternEngine
from convexdual.losses import get_loss
from tests._reference import exact_dual_bound_ref, masks_ref, patch_matrix_ref
from tests.test_pattern_masks import _tied_images


def _engine(k=3, P=6, seed=2, **kw):
    x = _tied_images()
    X = patch_matrix_ref(x, k)
    gates = np.random.default_rng(seed).standard_normal((P, X.shape[1]))
    return PatternEngine(x, k, gates, **kw), X, masks_ref(X, gates).astype(bool), gates


def test_mask_and_masks_are_the_explicit_ones_for_any_index():
    eng, X, M, _ = _engine()
    assert (~np.any(X != 0, axis=1)).any()  # zero patches: their mask is 1
    for i in range(eng.P):
        assert np.array_equal(eng.mask(i), M[i])
    assert np.array_equal(eng.masks(), M)
    for index in ([4, 1], np.array([4, 1]), range(4, 0, -3), (i for i in (4, 1)), iter([4, 1])):
        assert np.array_equal(eng.masks(index), M[[4, 1]]), index
    # ties x.g = 0 (k=1, g = (1, -1), equal channels) are 1
    x = _tied_images()
    eng1 = PatternEngine(x, 1, np.array([[1.0, -1.0]]))
    X1 = patch_matrix_ref(x, 1)
    tied = (X1 @ np.array([1.0, -1.0]) == 0) & np.any(X1 != 0, axis=1)
    assert tied.sum() == 5 and eng1.mask(0)[tied].all() and eng1.masks()[0][tied].all()


def test_masks_memory_check_is_exactly_m_times_n_bytes():
    eng, _, M, _ = _engine()
    need = 3 * eng.n
    assert np.array_equal(eng.masks([0, 1, 2], limit_mb=need / 2**20), M[:3])
    with pytest.raises(MemoryBudgetError):
        eng.masks([0, 1, 2], limit_mb=(need - 1) / 2**20)


def test_mask_cache_is_a_bounded_lru():
    eng, _, M, _ = _engine(P=8, memory_budget_mb=1e-9)  # the smallest cache: 4 masks
    assert eng._mask_cap == 4
    for i in range(5):
        eng.mask(i)
    assert list(eng._mask_cache) == [1, 2, 3, 4]  # 0 evicted, never more than the cap
    eng.mask(1)  # a hit moves to the end ...
    eng.mask(5)  # ... so 2 is evicted, not 1
    assert list(eng._mask_cache) == [3, 4, 1, 5]
    assert all(np.array_equal(eng._mask_cache[i], M[i]) for i in eng._mask_cache)


def test_signs_are_two_d_minus_one_on_the_nonzero_rows():
    eng, X, M, _ = _engine()
    nz = np.any(X != 0, axis=1)
    assert not nz.all()
    for i in range(eng.P):
        assert np.array_equal(eng.signs(i), np.where(M[i][nz], 1.0, -1.0))
    # without zero rows: every row
    x = np.random.default_rng(1).standard_normal((1, 1, 4, 4))
    g = np.random.default_rng(2).standard_normal((3, 9))
    e = PatternEngine(x, 3, g)
    Mx = masks_ref(patch_matrix_ref(x, 3), g).astype(bool)
    assert e.nz.size == e.n and all(np.array_equal(e.signs(i), np.where(Mx[i], 1.0, -1.0)) for i in range(3))


def _violation_ref(X, M, W, Z, rel_tol=1e-6, scale=0.0):
    """The docstring's formula, by hand: max relu(-(2 D_i - I) X w_i) / (max_j ||x_j|| * s) over the
    groups with ||w_i|| > rel_tol * s, s = max(max ||w_j||, max ||z_j||, scale)."""
    s = max(np.linalg.norm(W, axis=1).max(), np.linalg.norm(Z, axis=1).max(), scale)
    xmax = np.linalg.norm(X, axis=1).max()
    worst = 0.0
    for V in (W, Z):
        for i in range(len(V)):
            if np.linalg.norm(V[i]) > rel_tol * s:
                worst = max(worst, np.maximum(-((2 * M[i] - 1) * (X @ V[i])), 0.0).max())
    return worst / (xmax * s)


def test_cone_violation_is_the_documented_relative_number():
    eng, X, M, _ = _engine()
    rng = np.random.default_rng(9)
    W = rng.standard_normal((eng.P, eng.d))
    Z = 0.5 * rng.standard_normal((eng.P, eng.d))
    v = eng.cone_violation(W, Z)
    assert v > 0 and v == pytest.approx(_violation_ref(X, M, W, Z), rel=1e-12)
    # a relative number: the same for weights in other units (here all groups smaller than 1)
    assert eng.cone_violation(1e-3 * W, 1e-3 * Z) == pytest.approx(v, rel=1e-12)
    # only z violates: the z side counts
    Wf = np.zeros_like(W)
    vz = eng.cone_violation(Wf, Z)
    assert vz > 0 and vz == pytest.approx(_violation_ref(X, M, Wf, Z), rel=1e-12)
    # a group at or below rel_tol * s is not a neuron: its violation does not count
    top = float(np.linalg.norm(W, axis=1).max())
    Wt = W.copy()
    Wt[1] *= 1e-7 * top / np.linalg.norm(W[1])
    Zt = np.zeros_like(Z)
    only_small = np.zeros_like(W)
    only_small[1], only_small[0] = Wt[1], eng.project(0, W[0])[1]  # a feasible neuron and a tiny group
    assert eng.cone_violation(only_small, Zt) == pytest.approx(0.0, abs=1e-15)  # the tiny one is ignored
    assert eng.cone_violation(only_small, Zt, rel_tol=1e-8) > 1e-9  # unless it is above the threshold
    for rel in (1e-6, 1e-8):
        assert eng.cone_violation(Wt, Zt, rel_tol=rel) == pytest.approx(
            _violation_ref(X, M, Wt, Zt, rel_tol=rel), rel=1e-12, abs=0)
    # the scale: the natural size of a group's weights, when larger than the groups
    assert eng.cone_violation(W, Z, scale=10 * top) == pytest.approx(
        _violation_ref(X, M, W, Z, scale=10 * top), rel=1e-12)
    # feasible points: 0; nothing at all: 0
    Wp = np.zeros_like(W)
    Wp[2] = eng.project(2, W[2])[1]
    assert eng.cone_violation(Wp, np.zeros_like(Z)) <= 1e-15
    assert eng.cone_violation(np.zeros_like(W), np.zeros_like(Z)) == 0.0
    z = PatternEngine(np.zeros((1, 1, 3, 3)), 3, np.ones((2, 9)))
    assert z.cone_violation(np.ones((2, 9)), np.ones((2, 9))) == 0.0  # no data: xmax = 0


@pytest.mark.parametrize("loss", ["squared", "absolute", "huber"])
def test_dual_bound_is_the_exact_best_scaling(loss):
    eng, X, M, _ = _engine(P=4)
    rng = np.random.default_rng(11)
    y = rng.uniform(0.0, 1.0, eng.n)
    L = get_loss(loss, delta=0.3) if loss == "huber" else get_loss(loss)
    for v0 in (y - 0.2, 3.0 * rng.standard_normal(eng.n), -(y + 0.1)):
        for beta in (0.05, 5.0):
            b = eng.dual_bound(L, y, beta, v0)
            g, s = exact_dual_bound_ref(X, M.astype(float), y, beta, v0, loss, 0.3)
            assert b.scale == pytest.approx(s, rel=1e-6, abs=1e-12), (v0[:2], beta)
            assert b.value == pytest.approx(g, rel=1e-6, abs=1e-12)
            # the same with the constraint given
            b2 = eng.dual_bound(L, y, beta, v0, max_constraint=b.max_constraint)
            assert (b2.value, b2.scale) == (b.value, b.scale)


def test_dual_bound_without_a_binding_cone():
    """max_constraint = 0 (no pattern limits s): the loss alone bounds the scale."""
    eng, _, _, _ = _engine(P=2)
    rng = np.random.default_rng(12)
    y = rng.uniform(0.0, 1.0, eng.n)
    v0 = y + 0.1 * rng.standard_normal(eng.n)
    sq = eng.dual_bound(get_loss("squared"), y, 1.0, v0, max_constraint=0.0)
    s = float(v0 @ y) / float(v0 @ v0)  # unconstrained best scale of v.y - |v|^2/2
    assert sq.scale == pytest.approx(s, rel=1e-12)
    assert sq.value == pytest.approx(s * (v0 @ y) - 0.5 * s * s * (v0 @ v0), rel=1e-12)
    ab = eng.dual_bound(get_loss("absolute"), y, 1.0, v0, max_constraint=0.0)
    assert ab.scale == pytest.approx(1.0 / np.abs(v0).max(), rel=1e-12)  # |s v0| <= 1
    assert ab.value == pytest.approx(ab.scale * float(v0 @ y), rel=1e-12)
    # a limiting cone: s <= beta / M
    ab2 = eng.dual_bound(get_loss("absolute"), y, 1.0, v0, max_constraint=4.0 * np.abs(v0).max())
    assert ab2.scale == pytest.approx(0.25 / np.abs(v0).max(), rel=1e-12)
    # the zero candidate: the zero bound, for a loss with a bounded domain too
    for name in ("squared", "absolute", "huber"):
        zb = eng.dual_bound(get_loss(name), y, 1.0, np.zeros(eng.n))
        assert zb.value == 0.0 and zb.max_constraint == 0.0
    with pytest.raises(ValueError, match="length n"):
        eng.dual_bound(get_loss("squared"), y, 1.0, v0[:-1])
