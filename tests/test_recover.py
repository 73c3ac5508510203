"""eq. (5) recovery: the neuron threshold and the group bookkeeping, against hand-computed values."""

import numpy as np

from convexdual.recover import active_groups, recover_filters


def _groups():
    W = np.zeros((4, 3))
    Z = np.zeros((4, 3))
    W[0] = [0.0, 8.0, 0.0]        # ||w|| = 8: a neuron; the threshold is TOL * 8 = 2**-17 (exact)
    W[2] = [0.0, 0.0, 2.0**-17]   # exactly at the threshold: not a neuron (strict >)
    W[3] = [0.0, 2.0**-16, 0.0]   # above it: a neuron
    Z[1] = [0.0, 0.0, 4.0]        # ||z|| = 4: a negative neuron
    Z[2] = [1e-7, 0.0, 0.0]       # interior-point dust
    Z[3] = [2.0**-17, 0.0, 0.0]   # a z group exactly at the threshold: not a neuron either
    return W, Z


TOL = 2.0**-20


def test_active_groups_threshold_is_relative_strict_and_scaled():
    W, Z = _groups()
    aw, az = active_groups(W, Z, rel_tol=TOL)
    assert aw.tolist() == [True, False, False, True] and az.tolist() == [False, True, False, False]
    # the data's natural scale raises the threshold: TOL * 64 = 2**-14 drops w_3
    aw, az = active_groups(W, Z, rel_tol=TOL, scale=64.0)
    assert aw.tolist() == [True, False, False, False] and az.tolist() == [False, True, False, False]
    # a looser tolerance drops more
    aw, _ = active_groups(W, Z, rel_tol=0.5)
    assert aw.tolist() == [True, False, False, False]
    # a threshold of exactly 1 (rel_tol 1, largest group 1): only groups above it, i.e. none
    aw, _ = active_groups(np.array([[1.0, 0.0], [0.5, 0.0]]), np.zeros((2, 2)), rel_tol=1.0)
    assert not aw.any()
    # all zero and no scale: nothing is a neuron (not every group)
    aw, az = active_groups(np.zeros((3, 2)), np.zeros((3, 2)))
    assert not aw.any() and not az.any()
    # all zero but for dust, with the data's scale: the dust is not a net of tiny neurons
    aw, az = active_groups(np.full((2, 2), 1e-12), np.zeros((2, 2)), scale=1.0)
    assert not aw.any() and not az.any()
    # no scale and only tiny groups: the largest one still counts (relative threshold)
    aw, _ = active_groups(np.array([[1e-12, 0.0], [1e-20, 0.0]]), np.zeros((2, 2)))
    assert aw.tolist() == [True, False]


def test_recover_filters_eq5_values_and_group_indices():
    W, Z = _groups()
    U, v, groups = recover_filters(W, Z, rel_tol=TOL)
    assert groups.tolist() == [0, 3, 4 + 1]  # w_0, w_3, then z_1 as P + 1
    np.testing.assert_allclose(v, [np.sqrt(8.0), 2.0**-8, -2.0], rtol=1e-15)
    np.testing.assert_allclose(U[0], W[0] / np.sqrt(8.0), rtol=1e-15)
    np.testing.assert_allclose(U[2], Z[1] / 2.0, rtol=1e-15)
    # u v reproduces the group: |v| u = w (and -z), and beta/2 (||u||^2 + v^2) = beta ||w||
    np.testing.assert_allclose(np.abs(v)[:, None] * U, np.stack([W[0], W[3], Z[1]]), rtol=1e-14)
    np.testing.assert_allclose(0.5 * ((U * U).sum(1) + v * v), [8.0, 2.0**-16, 4.0], rtol=1e-12)


def test_zero_tolerance_keeps_every_nonzero_group():
    W, Z = _groups()
    aw, az = active_groups(W, Z, rel_tol=0.0)  # threshold 0: every nonzero group, however small
    assert aw.tolist() == [True, False, True, True] and az.tolist() == [False, True, True, True]
