"""Sign patterns: sampling, deduplication, and exact enumeration against brute force."""

import numpy as np
import pytest

import convexdual as cd
from convexdual.patches import patch_matrix
from convexdual.patterns import arrangement_upper_bound


def _mask_set(p, x, k):
    """The distinct masks 1[X g >= 0] of a pattern set, from an explicit patch matrix."""
    return {m.tobytes() for m in (patch_matrix(x, k) @ p.gates.T >= 0).T}


def test_sampled_masks_match_gates_and_are_unique():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 1, 6, 6))
    p = cd.sample_patterns(x, 3, 200, seed=3)
    X = patch_matrix(x, 3)
    np.testing.assert_array_equal(p.masks_on(x, 3).reshape(len(p), -1), (X @ p.gates.T >= 0).T)
    assert len(_mask_set(p, x, 3)) == len(p) <= 200
    assert p.num_requested == 200 and not p.exact
    q = cd.sample_patterns(x, 3, 200, seed=3)
    np.testing.assert_array_equal(p.gates, q.gates)  # seeded


def test_duplicates_removed_when_data_are_degenerate():
    x = np.ones((1, 1, 3, 3))  # all patches are multiples of few vectors -> few patterns
    p = cd.sample_patterns(x, 1, 500, seed=0)  # d = 1: only "all >= 0" or "all < 0"
    assert len(p) == 2


def test_enumeration_d2_closed_form():
    # d = 2 (two channels, k = 1): h distinct lines through 0 cut the plane into 2h cells
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 2, 2, 3))
    p = cd.enumerate_patterns(x, 1)
    assert p.exact and len(p) == 2 * 12
    X = patch_matrix(x, 1)
    # brute force: a fine sweep of directions finds exactly the same set
    ang = np.linspace(0, 2 * np.pi, 200_001)
    G = np.stack([np.cos(ang), np.sin(ang)], 1)
    brute = {m.tobytes() for m in np.unique((X @ G.T >= 0).T, axis=0)}
    cells = _mask_set(p, x, 1)
    assert cells <= brute  # every enumerated cell is real
    # brute force also hits the (measure-zero) boundary rays: remove those not interior
    assert len(brute) >= len(cells)


def test_enumeration_general_position_counts_and_contains_samples():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 1, 3, 3))
    p = cd.enumerate_patterns(x, 3)
    # 9 rows of rank 9 in general position: every sign vector is a cell
    assert len(p) == 512 == arrangement_upper_bound(9, 9)
    s = cd.sample_patterns(x, 3, 20_000, seed=0)
    assert _mask_set(s, x, 3) <= _mask_set(p, x, 3)
    # each gate is strictly inside its cell
    X = patch_matrix(x, 3)
    assert np.all(np.abs(X @ p.gates.T) > 1e-9)


def test_enumeration_matches_dense_sampling_on_low_rank_data():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 2, 2, 2))  # d = 2 with k = 1
    p = cd.enumerate_patterns(x, 1)
    s = cd.sample_patterns(x, 1, 50_000, seed=1)
    assert _mask_set(s, x, 1) == _mask_set(p, x, 1)


def test_enumeration_refuses_large_problems():
    x = np.random.default_rng(0).standard_normal((4, 1, 8, 8))
    with pytest.raises(ValueError, match="exact enumeration refused.*sample_patterns"):
        cd.enumerate_patterns(x, 3)


def test_zero_patterns_refused():
    x = np.zeros((1, 1, 4, 4))
    with pytest.raises(ValueError, match="num_patterns must be an int >= 1"):
        cd.sample_patterns(x, 3, 0)


def test_sampling_streams_and_matches_explicit_dedup():
    # the streaming hash dedup keeps exactly the first gate of each distinct explicit mask
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 1, 5, 5))
    gates = rng.standard_normal((300, 9))
    gates[100:150] = gates[:50] * 2.0  # same patterns as the first 50
    M = (patch_matrix(x, 3) @ gates.T >= 0).T
    _, first = np.unique(M, axis=0, return_index=True)
    keep = cd.patterns.unique_gates(x, 3, gates, chunk_mb=0.001)  # many small chunks
    np.testing.assert_array_equal(keep, np.sort(first))


def test_patterns_from_other_images_get_this_datas_masks():
    # gates sampled on other images are re-deduplicated on the problem's own data, and an
    # enumeration of other data is never accepted as exact
    rng = np.random.default_rng(6)
    a, b = rng.standard_normal((1, 1, 3, 3)), rng.standard_normal((1, 1, 3, 3))
    y = rng.standard_normal((1, 3, 3))
    ea = cd.enumerate_patterns(a, 3)
    with pytest.raises(ValueError, match="enumerated on other images"):
        cd.build_problem(b, y, 3, 0.1, patterns=ea)
    sa = cd.sample_patterns(a, 3, 400, seed=0)
    prob = cd.build_problem(b, y, 3, 0.1, patterns=sa)
    assert not prob.exact
    Mb = (patch_matrix(b, 3) @ prob.patterns.gates.T >= 0).T
    assert len({m.tobytes() for m in Mb}) == prob.P  # distinct on b, whatever they were on a
    np.testing.assert_array_equal(prob.masks(), Mb)
