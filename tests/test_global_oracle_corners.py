"""The corner bound of the global oracle (issue 16): sound on every region, same on both paths.

A region is a box in a face chart of the cube with a sign; its bound must be above the
maximum of ``sign * f`` over the cone of the box intersected with the unit ball.  The
independent reference is the maximum over many sampled points of that set (a lower estimate
of the true maximum, so ``bound >= sampled`` must hold everywhere).
"""

from __future__ import annotations

import numpy as np
import pytest

from convexdual._fused_kernels import numba_available
from convexdual.global_oracle import _Bounder, _prepare, global_max_correlation

from test_global_oracle import INSTANCES, REFERENCE, _check_bracket


def _boxes(rng, d, B, w):
    face = rng.integers(d, size=B)
    fs = rng.choice([-1.0, 1.0], B)
    sg = rng.choice([-1.0, 1.0], B)
    c = rng.uniform(-1, 1, (B, d))
    lo = np.clip(c - w[:, None], -1, 1)
    hi = np.clip(c + w[:, None], -1, 1)
    lo[np.arange(B), face] = fs
    hi[np.arange(B), face] = fs
    return lo, hi, face, fs, sg


def _sampled_max(Xh, rh, lo, hi, sg, rng, k=4000):
    W = lo + rng.random((k, lo.shape[0])) * (hi - lo)
    W /= np.linalg.norm(W, axis=1, keepdims=True)
    return float((sg * (np.maximum(Xh @ W.T, 0.0).T @ rh)).max())


def _bounder(Xh, rh, **kw):
    return _Bounder(Xh, rh, "cpu", 8, "slack", None, 8, **kw)


@pytest.mark.parametrize("use_numba", [False, True])
def test_corner_bound_is_above_sampled_maxima(use_numba):
    if use_numba and not numba_available():
        pytest.skip("numba not installed")
    rng = np.random.default_rng(3)
    lowered = 0
    for trial in range(4):
        d = (3, 5, 9, 9)[trial]
        X = rng.standard_normal((120, d))
        r = rng.standard_normal(120)
        Xh, rh = _prepare(X, r)
        B = 48
        lo, hi, face, fs, sg = _boxes(rng, d, B, rng.uniform(0.02, 0.5, B))
        plain = _bounder(Xh, rh)(lo, hi, face, fs, sg, 0.0)[0]
        bd = _bounder(Xh, rh, corners=True, corners_numba=use_numba)
        assert bd.corners_numba == use_numba
        ub = bd(lo, hi, face, fs, sg, 0.0)[0]
        assert np.all(ub <= plain)
        lowered += int(np.sum(ub < plain * (1 - 1e-6)))
        for b in range(B):
            s = _sampled_max(Xh, rh, lo[b], hi[b], sg[b], rng)
            assert ub[b] >= s - 1e-12 * max(1.0, abs(s)), (trial, b, ub[b], s)
    # the corner bound is not a no-op: it is strictly tighter on many of these boxes
    assert lowered >= 40


@pytest.mark.skipif(not numba_available(), reason="numba not installed")
def test_numba_and_torch_corner_bounds_agree():
    rng = np.random.default_rng(11)
    X = rng.standard_normal((300, 9))
    r = rng.standard_normal(300)
    Xh, rh = _prepare(X, r)
    lo, hi, face, fs, sg = _boxes(rng, 9, 200, rng.uniform(0.02, 0.4, 200))
    a = _bounder(Xh, rh, corners=True, corners_numba=False)(lo, hi, face, fs, sg, 0.0)[0]
    b = _bounder(Xh, rh, corners=True, corners_numba=True)(lo, hi, face, fs, sg, 0.0)[0]
    big = np.abs(a) > 1e-6
    assert big.sum() > 50
    np.testing.assert_allclose(b[big], a[big], rtol=1e-10)


@pytest.mark.parametrize("corners", [False, True])
def test_search_with_and_without_corners_agrees_with_brute_force(corners):
    used = 0
    for (X, r), ref in list(zip(INSTANCES, REFERENCE))[:30]:
        res = global_max_correlation(X, r, eps=1e-8, corners=corners)
        _check_bracket(X, r, ref, res)
        assert res.status == "proved"
        used += res.stats["corner_regions"]
    assert (used > 0) == corners


def test_corners_option_validation():
    X, r = INSTANCES[0]
    with pytest.raises(ValueError, match="corners"):
        global_max_correlation(X, r, corners="yes")
    with pytest.raises(ValueError, match="corners=True"):
        global_max_correlation(np.ones((3, 20)), np.ones(3), corners=True)
