"""The masks ``1[X g >= 0]`` and their deduplication (convexdual/patterns.py), against the
explicit patch matrix and masks of tests/_reference.py: ties (``x.g = 0``, zero patches) count
as 1, the memory checks are exact, hashing streams in chunks of the documented size and keeps
the first gate of each distinct mask (mutation survivors, issue 18)."""

from __future__ import annotations

import numpy as np
import pytest

import convexdual as cd
from convexdual.engine import MemoryBudgetError
from convexdual.patterns import compute_masks, pattern_hashes, patterns_from_gates, unique_gates
from tests._reference import masks_ref, patch_matrix_ref


def _tied_images():
    """2 images, 2 channels, 4x5: a zero block (all-zero 3x3 patches at k=3 around (0..1, 0..1)
    of image 0) and pixels whose two channels are equal (x.g = 0 exactly for g = (1, -1), k=1)."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 2, 4, 5))
    x[0, :, :3, :3] = 0.0
    x[1, 1, 2, :] = x[1, 0, 2, :]  # channel 1 = channel 0 on a row
    return x


def test_masks_are_the_explicit_ones_with_ties_counted_as_one():
    x = _tied_images()
    for k in (1, 3):
        X = patch_matrix_ref(x, k)
        rng = np.random.default_rng(k)
        gates = rng.standard_normal((7, X.shape[1]))  # P = 7 != d
        if k == 1:
            gates[0] = [1.0, -1.0]  # x.g = 0 exactly where the channels agree
        M = compute_masks(x, k, gates)
        assert M.shape == (7, 2, 4, 5) and M.dtype == bool
        assert np.array_equal(M.reshape(7, -1), masks_ref(X, gates).astype(bool))
        zero_rows = ~np.any(X != 0, axis=1)
        assert zero_rows.any() and M.reshape(7, -1)[:, zero_rows].all()  # 1[0 >= 0] = 1
        if k == 1:
            tied = (X @ gates[0] == 0) & ~zero_rows
            assert tied.sum() == 5 and M[0].reshape(-1)[tied].all()
        # the pattern set's own masks_on is the same thing
        pats = cd.SignPatterns(gates=gates, source="gates")
        assert np.array_equal(pats.masks_on(x, k), M)


def test_compute_masks_memory_check_is_exactly_p_times_n_bytes():
    x = _tied_images()
    gates = np.random.default_rng(0).standard_normal((7, 18))
    need = 7 * 2 * 4 * 5  # P * N * H * W bools
    compute_masks(x, 3, gates, memory_limit_mb=need / 2**20)
    with pytest.raises(MemoryBudgetError):
        compute_masks(x, 3, gates, memory_limit_mb=(need - 1) / 2**20)


def test_hashes_are_128_bit_and_equal_exactly_for_equal_masks():
    x = _tied_images()
    X = patch_matrix_ref(x, 3)
    rng = np.random.default_rng(3)
    g = rng.standard_normal((4, 18))
    # positive multiples give the same mask; a negation and fresh gates give others
    gates = np.vstack([g[0], 2.5 * g[0], g[1], 0.1 * g[0], -g[0], 3.0 * g[1], g[2], g[3]])
    h = pattern_hashes(x, 3, gates)
    assert all(isinstance(d, bytes) and len(d) == 16 for d in h)
    M = masks_ref(X, gates)
    for i in range(len(gates)):
        for j in range(len(gates)):
            assert (h[i] == h[j]) == bool(np.array_equal(M[i], M[j])), (i, j)
    keep = unique_gates(x, 3, gates)
    assert keep.tolist() == [0, 2, 4, 6, 7]  # the first gate of each distinct mask, in order
    pats = patterns_from_gates(x, 3, gates, source="net")
    assert np.array_equal(pats.gates, gates[[0, 2, 4, 6, 7]])
    assert pats.num_requested == 8 and pats.source == "net" and not pats.exact
    assert pats.data_key == cd.patterns.data_key(x, 3)


def test_hashing_streams_in_chunks_of_chunk_mb(monkeypatch):
    """At most chunk_mb of work per chunk: 9 bytes per row and gate (the float64 products and
    the bool mask), as many gates per chunk as fit, at least one."""
    x = _tied_images()
    n = 2 * 4 * 5
    gates = np.random.default_rng(5).standard_normal((10, 18))
    full = pattern_hashes(x, 3, gates)
    widths = []
    real = np.packbits

    def spy(a, *args, **kwargs):
        widths.append(a.shape[1])
        return real(a, *args, **kwargs)

    monkeypatch.setattr(np, "packbits", spy)
    for chunk_mb, expect in [(3 * 9 * n / 2**20, [3, 3, 3, 1]), (1e-9, [1] * 10), (64.0, [10])]:
        widths.clear()
        assert pattern_hashes(x, 3, gates, chunk_mb=chunk_mb) == full
        assert widths == expect, (chunk_mb, widths)
    widths.clear()
    assert pattern_hashes(x, 3, gates, chunk_mb=(3 * 9 * n - 1) / 2**20) == full
    assert widths == [2, 2, 2, 2, 2]


def test_hashing_shows_a_bar_only_when_asked(capsys):
    x = _tied_images()
    gates = np.random.default_rng(5).standard_normal((3, 18))
    pattern_hashes(x, 3, gates)
    assert capsys.readouterr().err == ""
    pattern_hashes(x, 3, gates, progress=True, desc="hashing-the-test")
    assert "hashing-the-test" in capsys.readouterr().err


def test_sample_patterns_draws_standard_gaussian_gates_and_dedups():
    x = _tied_images()
    pats = cd.sample_patterns(x, 3, 12, seed=11)
    drawn = np.random.default_rng(11).standard_normal((12, 18))
    keep = unique_gates(x, 3, drawn)
    assert np.array_equal(pats.gates, drawn[keep])
    assert pats.num_requested == 12 and pats.info["unique"] == len(keep) == len(pats)
    assert pats.source == "sampled" and not pats.exact and pats.data_key == cd.patterns.data_key(x, 3)
    assert len(cd.sample_patterns(x, 3, 1, seed=0)) == 1  # one pattern is allowed
    for bad in (0, -1, True, 2.0, "3"):
        with pytest.raises(ValueError, match="num_patterns"):
            cd.sample_patterns(x, 3, bad)
    # the gates' memory: num_patterns * d float64, twice
    cd.sample_patterns(x, 3, 12, memory_limit_mb=12 * 18 * 16 / 2**20)
    with pytest.raises(MemoryBudgetError):
        cd.sample_patterns(x, 3, 12, memory_limit_mb=(12 * 18 * 16 - 1) / 2**20)


def test_patterns_from_gates_refuses_gates_of_the_wrong_shape():
    x = _tied_images()
    with pytest.raises(ValueError, match=r"\(m, 18\)"):
        patterns_from_gates(x, 3, np.ones((2, 9)))
    with pytest.raises(ValueError, match=r"\(m, 18\)"):
        patterns_from_gates(x, 3, np.ones(18))


def test_kernel_size_is_checked_against_height_and_width():
    """k must fit both sides: a 3x5 image takes k=3 but not k=5 (5 > H), whichever function asks."""
    x = np.random.default_rng(0).standard_normal((1, 1, 3, 5))
    assert len(cd.sample_patterns(x, 3, 2)) >= 1
    assert len(patterns_from_gates(x, 3, np.random.default_rng(1).standard_normal((2, 9)))) >= 1
    with pytest.raises(ValueError, match="larger than the image"):
        cd.sample_patterns(x, 5, 2)
    with pytest.raises(ValueError, match="larger than the image"):
        patterns_from_gates(x, 5, np.ones((2, 25)))
    xt = np.swapaxes(x, 2, 3)  # 5x3: the same refusal
    with pytest.raises(ValueError, match="larger than the image"):
        cd.sample_patterns(xt, 5, 2)
    with pytest.raises(ValueError, match="larger than the image"):
        patterns_from_gates(xt, 5, np.ones((2, 25)))


def test_dedup_uses_ties_as_one_and_the_bar_counts_gates(monkeypatch):
    """Two gates whose masks agree only because x.g = 0 counts as 1 give one pattern; the progress
    bar counts each gate once whatever the chunks."""
    x = np.random.default_rng(3).standard_normal((1, 2, 3, 4))
    x[0, 1, 1, :] = x[0, 0, 1, :] = np.abs(x[0, 0, 1, :]) + 0.5  # equal positive channels on a row
    g1 = np.array([1.0, -1.0])  # x.g1 = 0 on that row
    g2 = g1 + 1e-9 * np.array([1.0, 1.0])  # > 0 there, the same sign as g1 elsewhere
    X = patch_matrix_ref(x, 1)
    assert (X @ g1 == 0).sum() == 4 and ((X @ g2 > 0) | (X @ g2 < 0)).all()
    assert np.array_equal(masks_ref(X, g1[None]), masks_ref(X, g2[None]))
    assert pattern_hashes(x, 1, np.vstack([g1, g2]))[0] == pattern_hashes(x, 1, np.vstack([g1, g2]))[1]
    assert unique_gates(x, 1, np.vstack([g1, g2])).tolist() == [0]
    counted = []

    class Bar:  # records what the bar is told
        def __init__(self, total=None, **kw):
            counted.append(total)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, k):
            counted.append(k)

    monkeypatch.setattr("tqdm.auto.tqdm", Bar)
    gates = np.random.default_rng(5).standard_normal((10, 2))
    pattern_hashes(x, 1, gates, chunk_mb=3 * 9 * X.shape[0] / 2**20, progress=True)  # chunks 3, 3, 3, 1
    assert counted == [10, 3, 3, 3, 1]
