"""Tests of the certified descent-neuron oracle (convexdual.global_oracle, issue 16).

The reference, :func:`brute_force_max_correlation`, enumerates every cell of the
arrangement and solves each cell exactly (NNLS on the polar cone); it shares no code with
the branch and bound.  One test also checks the reference's per-cell maxima against an
SOCP solved by cvxpy + Clarabel.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convexdual.global_oracle import (OracleResult, brute_force_max_correlation,
                                      evaluate_correlation, global_max_correlation)

REL = 1e-7


def _instance(rng, t):
    d = int(rng.integers(2, 5))
    n = int(rng.integers(3, 13))
    X = rng.standard_normal((n, d))
    r = rng.standard_normal(n)
    if t % 3 == 0:
        X[rng.integers(n)] = 0.0                       # a zero row
    if t % 4 == 0:
        X[1] = X[0]                                    # an exact duplicate
    if t % 5 == 0 and n > 4:
        X[3] = 2.5 * X[2]                              # a positive multiple
    if t % 7 == 0 and n > 5:
        X[5] = -X[4]                                   # the opposite row (same hyperplane)
    if t % 11 == 0 and d > 2:
        X[:, -1] = X[:, 0] - X[:, 1]                   # rank-deficient X
    return X, r


def _instances(count, seed):
    rng = np.random.default_rng(seed)
    return [_instance(rng, t) for t in range(count)]


INSTANCES = _instances(100, 20240)
REFERENCE = [brute_force_max_correlation(X, r) for X, r in INSTANCES]


def _check_bracket(X, r, ref, res):
    scale = max(ref, 1e-12)
    assert res.lower <= ref + REL * scale, (res.lower, ref)
    assert res.upper >= ref - REL * scale, (res.upper, ref)
    # the attained value is really attained by the returned unit vector
    assert abs(np.linalg.norm(res.argmax) - 1.0) < 1e-12
    val = res.sign * evaluate_correlation(X, r, res.argmax)
    assert abs(val - res.lower) <= 1e-12 * (1 + abs(val))


def test_brackets_brute_force_on_100_instances():
    proved = 0
    for (X, r), ref in zip(INSTANCES, REFERENCE):
        res = global_max_correlation(X, r, eps=1e-8)
        assert isinstance(res, OracleResult)
        _check_bracket(X, r, ref, res)
        assert res.status == "proved"
        assert res.upper <= res.lower * (1 + 1e-8) + 2 * res.margin
        proved += 1
    assert proved == 100


def test_verdicts_both_directions_on_100_instances():
    seen = {"feasible": 0, "descent": 0}
    for (X, r), ref in zip(INSTANCES, REFERENCE):
        if ref <= 1e-9:
            continue
        above = global_max_correlation(X, r, beta=ref * (1 + 1e-3), eps=1e-6)
        assert above.status == "proved" and above.verdict == "feasible", (ref, above)
        assert above.upper <= ref * (1 + 1e-3) * (1 + 1e-6) + 2 * above.margin
        assert above.upper >= ref * (1 - REL)
        below = global_max_correlation(X, r, beta=ref * (1 - 1e-3), eps=1e-6)
        assert below.status == "descent" and below.verdict == "descent", (ref, below)
        assert below.lower > ref * (1 - 1e-3)
        assert below.lower <= ref * (1 + REL)
        seen["feasible"] += 1
        seen["descent"] += 1
    assert seen["feasible"] >= 95


def test_reference_cells_against_socp():
    cp = pytest.importorskip("cvxpy")
    rng = np.random.default_rng(5)
    for _ in range(3):
        d, n = 3, 6
        X = rng.standard_normal((n, d))
        r = rng.standard_normal(n)
        ref, cells = brute_force_max_correlation(X, r, return_cells=True)
        best = 0.0
        for s in cells:
            c = X.T @ (r * (s > 0))
            for cs in (c, -c):
                u = cp.Variable(d)
                prob = cp.Problem(cp.Maximize(cs @ u),
                                  [cp.multiply(s, X @ u) >= 0, cp.norm(u, 2) <= 1])
                prob.solve(solver=cp.CLARABEL)
                best = max(best, float(prob.value))
        assert abs(best - ref) <= 1e-6 * (1 + ref)
        # number of cells of a generic central arrangement: 2 sum_{k<d} C(n-1, k)
        assert len(cells) == 2 * (1 + (n - 1) + (n - 1) * (n - 2) // 2)


def test_reference_is_not_trivially_satisfied():
    # the brute force value is attained (sampling can only find less) and a wrong bound
    # would be caught: random directions never beat it, and some come close.
    rng = np.random.default_rng(3)
    X, r = rng.standard_normal((8, 3)), rng.standard_normal(8)
    ref = brute_force_max_correlation(X, r)
    U = rng.standard_normal((3, 20000))
    U /= np.linalg.norm(U, axis=0)
    vals = np.abs(evaluate_correlation(X, r, U))
    assert vals.max() <= ref * (1 + 1e-12)
    assert vals.max() >= 0.97 * ref


def test_degenerate_inputs():
    X = np.zeros((4, 3))
    r = np.ones(4)
    res = global_max_correlation(X, r)
    assert res.status == "proved" and res.lower == 0.0 and res.upper <= 1e-12
    # cancelling duplicates: f == 0
    X = np.array([[1.0, 2.0], [1.0, 2.0], [2.0, 4.0]])
    r = np.array([1.0, 1.0, -1.0])
    res = global_max_correlation(X, r, beta=0.0)
    assert res.verdict == "feasible"
    # d = 1
    X = np.array([[1.0], [-2.0], [3.0]])
    r = np.array([1.0, 1.0, -1.0])
    res = global_max_correlation(X, r, eps=1e-12)
    ref = max(abs(1.0 - 3.0), abs(2.0))
    assert abs(res.lower - ref) < 1e-12 and res.upper <= ref * (1 + 1e-12) + 2 * res.margin
    with pytest.raises(ValueError):
        global_max_correlation(np.ones((3, 2)), np.ones(2))


def test_budget_gives_certified_partial_answer():
    rng = np.random.default_rng(11)
    X = rng.standard_normal((60, 5))
    r = rng.standard_normal(60)
    res = global_max_correlation(X, r, eps=1e-12, max_nodes=200)
    assert res.status == "budget"
    assert res.upper >= res.lower
    U = rng.standard_normal((5, 20000))
    U /= np.linalg.norm(U, axis=0)
    assert np.abs(evaluate_correlation(X, r, U)).max() <= res.upper
    assert len(res.history) >= 1 and res.history[-1][2] == res.upper


def test_torch_device_path(device):
    X, r = INSTANCES[8]
    res = global_max_correlation(X, r, eps=1e-8, device=device)
    _check_bracket(X, r, REFERENCE[8], res)


@pytest.mark.slow
def test_larger_sweep_against_brute_force():
    rng = np.random.default_rng(99)
    for t in range(60):
        d = int(rng.integers(3, 5))
        n = int(rng.integers(10, 18))
        X = rng.standard_normal((n, d))
        r = rng.standard_normal(n)
        ref = brute_force_max_correlation(X, r)
        res = global_max_correlation(X, r, eps=1e-8)
        _check_bracket(X, r, ref, res)
        assert res.status == "proved"
