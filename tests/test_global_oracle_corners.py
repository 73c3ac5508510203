"""The corner bound of the global oracle (issue 16): sound on every region, same on both paths.

A region is a box in a face chart of the cube with a sign; its bound must be above the
maximum of ``sign * f`` over the cone of the box intersected with the unit ball.  The
independent reference is the maximum over many sampled points of that set (a lower estimate
of the true maximum, so ``bound >= sampled`` must hold everywhere).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

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


def _bounder(Xh, rh, device="cpu", **kw):
    return _Bounder(Xh, rh, device, 8, "slack", None, 8, **kw)


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
def test_numba_and_torch_corner_bounds_agree(device):
    """The torch path (on ``device``: CPU always, CUDA when present) reproduces the numba
    kernel's bounds, Frank-Wolfe lambdas included."""
    rng = np.random.default_rng(11)
    X = rng.standard_normal((300, 9))
    r = rng.standard_normal(300)
    Xh, rh = _prepare(X, r)
    lo, hi, face, fs, sg = _boxes(rng, 9, 200, rng.uniform(0.02, 0.4, 200))
    torch_path = _bounder(Xh, rh, device=device, corners=True, corners_numba=False)
    assert not torch_path.corners_numba
    a = torch_path(lo, hi, face, fs, sg, 0.0)[0]
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


def _corner_lp(Xh, R, lo, hi, i):
    """Independent reference: ``min_lambda max_corners`` of the corner bound with the box
    centre's q, as a linear program (HiGHS), and the corner data it was built from."""
    from scipy.optimize import linprog

    d = Xh.shape[1]
    cols = [j for j in range(d) if j != i]
    nv = 2 ** (d - 1)
    bits = (np.arange(nv)[:, None] >> np.arange(d - 1)[None, :]) & 1
    V = np.tile(lo, (nv, 1))
    V[:, cols] = np.where(bits == 1, hi[cols], lo[cols])
    cen, half = (lo + hi) / 2, (hi - lo) / 2
    L = Xh @ cen - np.abs(Xh) @ half
    H = Xh @ cen + np.abs(Xh) @ half
    neg = (L < 0) & (H > 0) & (R < 0)
    q = cen / np.linalg.norm(cen)
    qw = V @ q
    A = Xh @ V.T
    hfix = (R[~neg, None] * np.maximum(A[~neg], 0.0)).sum(0) / qw
    G = (np.abs(R[neg])[:, None] * A[neg] / qw[None, :]).T                 # (nv, K)
    K = int(neg.sum())
    lp = linprog(np.r_[np.zeros(K), 1.0], A_ub=np.hstack([-G, -np.ones((nv, 1))]), b_ub=-hfix,
                 bounds=[(0, 1)] * K + [(None, None)], method="highs")
    assert lp.status == 0
    return max(lp.fun, 0.0), float(qw.min())


@pytest.mark.parametrize("use_numba", [False, True])
def test_frank_wolfe_lambdas_reach_the_linear_program(use_numba):
    """The corner bound's lambdas (Frank-Wolfe, ``corner_iters``) come within 3% of the
    exact ``min_lambda max_corners`` (an LP solved by HiGHS), and the refinement lowers the
    bound of the box centre's lambdas (``corner_iters=0``)."""
    if use_numba and not numba_available():
        pytest.skip("numba not installed")
    rng = np.random.default_rng(5)
    lowered = checked = 0
    for trial in range(3):
        d = (5, 7, 9)[trial]
        X = rng.standard_normal((150, d))
        r = rng.standard_normal(150)
        Xh, rh = _prepare(X, r)
        B = 12
        lo, hi, face, fs, sg = _boxes(rng, d, B, rng.uniform(0.1, 0.3, B))
        kw = dict(corners=True, corners_numba=use_numba)
        # thr = -inf: nothing is pruned, so every region runs all its iterations
        fw = _bounder(Xh, rh, corner_iters=64, **kw)
        c0 = _bounder(Xh, rh, corner_iters=0, **kw)
        R_all = rh[:, None] * sg[None, :]
        for b in range(B):
            R = R_all[:, b]
            cen = 0.5 * (lo[b] + hi[b])
            und = (np.abs(Xh) @ (0.5 * (hi[b] - lo[b])) > np.abs(Xh @ cen))
            if not (np.any(und & (R > 0)) and np.any(und & (R < 0))):
                continue
            lpv, qmin = _corner_lp(Xh, R, lo[b], hi[b], int(face[b]))
            if qmin < 0.6:
                continue
            Xh_t = torch.as_tensor(Xh)
            v_fw = _corner_value(fw, Xh_t, R, lo[b], hi[b], face[b])
            v_0 = _corner_value(c0, Xh_t, R, lo[b], hi[b], face[b])
            scale = float(np.abs(R).sum())
            assert v_fw <= lpv * 1.03 + 1e-9 * scale, (trial, b, v_fw, lpv)
            lowered += int(v_fw < v_0 * (1 - 1e-6))
            checked += 1
    assert checked >= 15
    assert lowered >= checked // 2


def _corner_value(bd, X, R, lo, hi, face):
    """``_Bounder._corner_bound`` of one region (its rounding allowance is ~1e-13 here)."""
    Rt = torch.as_tensor(R[:, None])
    lo_t, hi_t = torch.as_tensor(lo[None]), torch.as_tensor(hi[None])
    cen = 0.5 * (lo_t + hi_t)
    mid = X @ cen.T
    rad = X.abs() @ (0.5 * (hi_t - lo_t)).T
    L, H = mid - rad, mid + rad
    pos = L >= 0
    und = (~pos) & (H > 0)
    zero = torch.zeros((), dtype=torch.float64)
    v = bd._corner_bound(X, Rt, torch.where(pos, Rt, zero), und & (Rt > 0), und & (Rt < 0),
                         lo_t, hi_t, torch.as_tensor([int(face)]), cen, -np.inf)
    return float(v[0])


def test_corners_option_validation():
    X, r = INSTANCES[0]
    with pytest.raises(ValueError, match="corners"):
        global_max_correlation(X, r, corners="yes")
    for bad in (-1, 2.5, True, "many"):
        with pytest.raises(ValueError, match="corner_iters"):
            global_max_correlation(X, r, corner_iters=bad)
    with pytest.raises(ValueError, match="corners=True"):
        global_max_correlation(np.ones((3, 20)), np.ones(3), corners=True)


@pytest.mark.skipif(not numba_available(), reason="numba not installed")
def test_corner_kernel_is_cached_across_processes(tmp_path):
    """A second process loads the compiled corner kernel from numba's disk cache instead of
    compiling it again (a kernel calling closure-local jitted functions got a new cache
    entry, and ~10 s of compilation, in every process)."""
    import os
    import subprocess
    import sys

    code = ("import numpy as np\n"
            "from convexdual._oracle_kernels import corner_bound\n"
            "X = np.eye(3); P = np.zeros((1, 1), np.int64); cnt = np.ones(1, np.int64)\n"
            "R = np.ones((1, 1)); lo = np.array([[1.0, -0.5, -0.5]]); hi = np.array([[1.0, 0.5, 0.5]])\n"
            "v = corner_bound(X, P, cnt, R, P, cnt * 0, R * 0, lo, hi, np.zeros(1, np.int64),\n"
            "                 np.zeros((1, 3)), np.array([[1.0, 0.0, 0.0]]))[0]\n"
            "assert np.isfinite(v[0]) and v[0] >= 1.0 - 1e-12, v\n")
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    for _ in range(2):
        subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=300)
    entries = [p.name for p in tmp_path.rglob("*corner_bound*.nbc")]
    assert len(entries) == 1, entries


def _kink_instance(r1):
    """``f(u) = relu(u_1) + r1 relu(u_2) - relu(u_3)``: ``u* = e_1`` lies on the hyperplanes of
    rows 2 and 3.  With ``r1 > 0`` ``f`` rises in the cell ``u_2 > 0`` to its maximum
    ``sqrt(1 + r1^2)`` at ``(1, r1, 0)``; with ``r1 < 0`` ``u*`` is the maximum, ``f = 1``."""
    X = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    return X, np.array([1.0, r1, -1.0])


def test_tip_search_finds_the_rise_in_a_neighbouring_cell():
    from convexdual.global_oracle import _tip_search, brute_force_max_correlation

    X, r = _kink_instance(0.5)
    v, u, sg = _tip_search(X, r, np.array([[1.0, 0.0, 0.0]]))
    assert sg == 1 and abs(v - np.sqrt(1.25)) <= 1e-9, v
    assert abs(brute_force_max_correlation(X, r) - v) <= 1e-9
    np.testing.assert_allclose(u, np.array([1.0, 0.5, 0.0]) / np.sqrt(1.25), atol=1e-8)
    # the candidates' evaluation in column chunks (3 rows x 1 column each) gives the same point
    v2, u2, _ = _tip_search(X, r, np.array([[1.0, 0.0, 0.0]]), chunk_elems=3)
    assert abs(v2 - v) <= 1e-14 and np.allclose(u2, u, atol=1e-12)
    X, r = _kink_instance(-0.5)
    v, u, sg = _tip_search(X, r, np.array([[1.0, 0.0, 0.0]]))
    assert abs(v - 1.0) <= 1e-12
    # seeds reach the oracle: a certified descent neuron without any branch and bound
    X, r = _kink_instance(0.5)
    res = global_max_correlation(X, r, beta=1.05, seeds=[[2.0, 0.0, 0.0]], max_nodes=0)
    assert res.verdict == "descent" and res.lower >= np.sqrt(1.25) - 1e-9
    with pytest.raises(ValueError, match="seeds"):
        global_max_correlation(X, r, seeds=np.ones((2, 4)))
    with pytest.raises(ValueError, match="fan_rows"):
        global_max_correlation(X, r, fan_rows=-1)


@pytest.mark.skipif(not numba_available(), reason="numba not installed")
def test_fan_bound_is_exact_at_a_tip_and_sound_elsewhere():
    """Around a maximiser on a kink (``r1 < 0``) the fan bound equals ``f(u*)`` on boxes of
    any width, where the other bounds keep an excess that shrinks only with the width; on
    random boxes of random instances it stays above the sampled maximum of the region."""
    # u* = e_1 on the hyperplanes of an r > 0 row (e_2) and two r < 0 rows: f = u_1 near u*
    # for sign +1 (the maximum there is 1); rows of both signs, so neither the corner bound
    # nor the relaxation is exact around it
    s2 = np.sqrt(0.5)
    X = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, s2, s2], [0, s2, -s2]])
    r = np.array([1.0, 0.5, -1.5, -1.5])
    Xh, rh = _prepare(X, r)
    for w in (1e-1, 1e-2, 1e-3):
        lo = np.array([[1.0, -w, -w]])
        hi = np.array([[1.0, w, w]])
        args = (lo, hi, np.array([0]), np.array([1.0]), np.array([1.0]), -np.inf)
        plain = _bounder(Xh, rh, corners=True)(*args)[0][0]
        fan = _bounder(Xh, rh, corners=True, fan_rows=4)(*args)[0][0]
        assert 1.0 <= fan <= 1.0 + 1e-12, (w, fan)
        assert plain > 1.0 + 0.1 * w, (w, plain)
    rng = np.random.default_rng(8)
    checked = 0
    for trial in range(4):
        d = (3, 4, 5, 5)[trial]
        X = rng.standard_normal((25, d))
        r = rng.standard_normal(25)
        Xh, rh = _prepare(X, r)
        lo, hi, face, fs, sg = _boxes(rng, d, 64, rng.uniform(0.02, 0.3, 64))
        bd = _bounder(Xh, rh, corners=True, fan_rows=8)
        ub = bd(lo, hi, face, fs, sg, -np.inf)[0]
        checked += bd.fan_stats[0]
        for b in range(64):
            s = _sampled_max(Xh, rh, lo[b], hi[b], sg[b], rng, k=2000)
            assert ub[b] >= s - 1e-12 * max(1.0, abs(s)), (trial, b, ub[b], s)
    assert checked >= 20
