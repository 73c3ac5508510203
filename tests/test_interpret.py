"""Interpretation (eq. 8): piecewise linear filtering reproduces the network."""

import numpy as np

from convexdual.interpret import activation_codes, cluster_activations, effective_filters, frequency_responses
from convexdual.patches import patch_matrix


def test_effective_filters_reproduce_the_network(small_problem, small_solution):
    net = small_solution.network
    x = small_problem.inputs
    codes = activation_codes(net, x)
    assert codes.shape == (x.shape[0], x.shape[2], x.shape[3], net.width)
    F = effective_filters(net, codes)  # (N, H, W, d)
    X = patch_matrix(x, small_problem.kernel_size).reshape(F.shape)
    yhat = np.einsum("nhwd,nhwd->nhw", X, F)
    np.testing.assert_allclose(yhat, net.predict(x), atol=1e-10)


def test_frequency_response_closed_forms():
    delta = np.zeros((1, 9))
    delta[0, 4] = 1.0  # centre tap: flat response
    np.testing.assert_allclose(frequency_responses(delta, 1, 3, size=16), 1.0)
    box = np.ones((1, 9)) / 9  # box filter: DC gain 1 at the centre of the shifted spectrum
    r = frequency_responses(box, 1, 3, size=16)
    assert np.isclose(r[0, 0, 8, 8], 1.0) and r.max() <= 1.0 + 1e-12


def test_cluster_labels_group_identical_codes(small_problem, small_solution):
    codes = activation_codes(small_solution.network, small_problem.inputs)
    labels = cluster_activations(codes, n_clusters=4, seed=0)
    assert labels.shape == codes.shape[:3]
    flat, lab = codes.reshape(-1, codes.shape[-1]), labels.ravel()
    # pixels with the same activation pattern always get the same label
    _, inv = np.unique(flat, axis=0, return_inverse=True)
    for g in np.unique(inv):
        assert len(np.unique(lab[inv.ravel() == g])) == 1
