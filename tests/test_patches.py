"""The patch operator: explicit X against the conv implementation, and the adjoint."""

import numpy as np
import pytest
import torch

from convexdual.patches import conv_adjoint, conv_forward, patch_matrix


@pytest.mark.parametrize("C,k", [(1, 1), (1, 3), (2, 3), (3, 5)])
def test_patch_matrix_matches_conv(C, k):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, C, 7, 6))
    X = patch_matrix(x, k)
    assert X.shape == (2 * 7 * 6, C * k * k)
    W = rng.standard_normal((4, C * k * k))
    conv = conv_forward(torch.from_numpy(x), torch.from_numpy(W), k)  # (N, m, H, W)
    expect = (X @ W.T).reshape(2, 7, 6, 4).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(conv.numpy(), expect, atol=1e-12)


def test_patch_matrix_entries_by_hand():
    x = np.arange(9, dtype=float).reshape(1, 1, 3, 3)
    X = patch_matrix(x, 3)
    # centre pixel's patch is the whole image; corner (0,0) sees zeros above/left
    np.testing.assert_array_equal(X[4], np.arange(9.0))
    np.testing.assert_array_equal(X[0], [0, 0, 0, 0, 0, 1, 0, 3, 4])


def test_adjoint_is_transpose(device):
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.standard_normal((3, 2, 5, 5))).to(device)
    r = torch.from_numpy(rng.standard_normal((3, 4, 5, 5))).to(device)
    w = torch.from_numpy(rng.standard_normal((4, 18))).to(device)
    lhs = (conv_forward(x, w, 3) * r).sum()
    rhs = (w * conv_adjoint(x, r, 3)).sum()
    assert torch.allclose(lhs, rhs, rtol=1e-10)
    X = patch_matrix(x.cpu().numpy(), 3)
    R = r.cpu().numpy().transpose(0, 2, 3, 1).reshape(-1, 4)
    np.testing.assert_allclose(conv_adjoint(x, r, 3).cpu().numpy(), (X.T @ R).T, atol=1e-10)
