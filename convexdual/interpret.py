"""Interpretation of a trained net as piecewise linear filtering (docs/math.md §7, eq. 8).

For a pixel p with patch ``x_p``, the prediction is ``sum_{j in A(p)} v_j u_j^T x_p``:
the active set ``A(p)`` selects a linear filter. "Active" here is the recovered
neuron's own sign ``1[x_p^T u_j >= 0]``, which reproduces the network everywhere
(on training data it equals the sampling gate of the group it came from).
"""

from __future__ import annotations

import numpy as np
import torch

from convexdual._validation import as_images
from convexdual.nets import TwoLayerConvNet

__all__ = ["frequency_responses", "activation_codes", "effective_filters", "cluster_activations"]


def frequency_responses(filters: np.ndarray, in_channels: int, kernel_size: int, size: int = 32) -> np.ndarray:
    """Magnitude of the zero-padded 2-D DFT of each filter (DC at the centre).

    Shapes:
        filters ``(m, C*k*k)`` -> ``(m, C, size, size)``.
    """
    F = np.asarray(filters, dtype=np.float64).reshape(-1, in_channels, kernel_size, kernel_size)
    if size < kernel_size:
        raise ValueError(f"size must be >= kernel_size ({kernel_size}), got {size}")
    spec = np.fft.fft2(F, s=(size, size), axes=(-2, -1))
    return np.abs(np.fft.fftshift(spec, axes=(-2, -1)))


def activation_codes(net: TwoLayerConvNet, images, *, batch_size: int = 64) -> np.ndarray:
    """``b_p = 1[x_p^T u_j >= 0]`` for every pixel and neuron.

    Shapes:
        images ``(N, [C,] H, W)`` -> bool ``(N, H, W, m)``.
    """
    x = as_images(images, "images")
    p = next(net.parameters())
    out = []
    with torch.no_grad():
        for s in range(0, x.shape[0], batch_size):
            pre = net.conv1(torch.from_numpy(x[s : s + batch_size]).to(p.device, p.dtype))
            out.append((pre >= 0).permute(0, 2, 3, 1).cpu().numpy())
    return np.concatenate(out)[..., : max(net.width, 0)]


def effective_filters(net: TwoLayerConvNet, codes: np.ndarray) -> np.ndarray:
    """Eq. (8): the linear filter ``sum_{j active} v_j u_j`` applied at each pixel.

    Shapes:
        codes ``(N, H, W, m)`` -> ``(N, H, W, C*k*k)``.
    """
    U, v = net.filters()
    return codes.astype(np.float64) @ (v[:, None] * U)


def cluster_activations(codes: np.ndarray, n_clusters: int = 8, seed: int = 0) -> np.ndarray:
    """k-means labels of the per-pixel binary activation vectors, as a label map ``(N, H, W)``.

    At most ``n_clusters`` clusters (fewer when there are fewer distinct codes); labels are
    k-means' own (arbitrary order).
    """
    from sklearn.cluster import KMeans

    N, H, W, m = codes.shape
    flat = codes.reshape(-1, m)
    if flat.shape[0] == 0:
        raise ValueError("no activation vectors to cluster")
    # k-means of the distinct codes weighted by how often each occurs: the same objective as
    # clustering every pixel (identical codes always share a label), on far fewer rows
    uniq, inverse, counts = np.unique(flat, axis=0, return_inverse=True, return_counts=True)
    k = int(min(n_clusters, len(uniq)))
    if k < 1:
        raise ValueError("no activation vectors to cluster")
    km = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(uniq.astype(np.float64), sample_weight=counts)
    return km.labels_[np.asarray(inverse).reshape(-1)].reshape(N, H, W)
