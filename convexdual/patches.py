"""The patch operator of docs/math.md §2.

``X`` stacks every k x k patch (zero padding ``k // 2``, stride 1) of every image
as a row: ``n = N*H*W`` rows in (N, H, W) C-order, ``d = C*k*k`` columns in
(C, kh, kw) C-order, i.e. the layout of a ``Conv2d`` weight ``(1, C, k, k)``.
So ``X @ w`` equals ``conv2d(x, w.reshape(1, C, k, k), padding=k//2).ravel()``.

For large data never build ``X``: use :func:`conv_forward` (``X W^T``) and
:func:`conv_adjoint` (``X^T R``), which are torch convolutions and run on any
device.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["patch_matrix", "conv_forward", "conv_adjoint", "num_rows"]


def num_rows(images_shape: tuple[int, ...]) -> int:
    N, _, H, W = images_shape
    return int(N * H * W)


def patch_matrix(images: np.ndarray, kernel_size: int) -> np.ndarray:
    """Explicit patch matrix ``X``.

    Args:
        images: float array ``(N, C, H, W)``.
        kernel_size: odd ``k``.

    Returns:
        ``X`` of shape ``(N*H*W, C*k*k)`` (same dtype as ``images``).

    Use only for small problems: it holds ``k*k`` copies of the data.
    """
    k = int(kernel_size)
    p = k // 2
    N, C, H, W = images.shape
    padded = np.pad(images, ((0, 0), (0, 0), (p, p), (p, p)))
    # windows: (N, C, H, W, k, k)
    win = np.lib.stride_tricks.sliding_window_view(padded, (k, k), axis=(2, 3))
    return np.ascontiguousarray(win.transpose(0, 2, 3, 1, 4, 5).reshape(N * H * W, C * k * k))


def conv_forward(images: torch.Tensor, weights: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """``X @ W^T`` as a convolution.

    Shapes:
        images ``(N, C, H, W)``, weights ``(m, C*k*k)`` -> ``(N, m, H, W)``.
    """
    N, C, H, W = images.shape
    k = int(kernel_size)
    w = weights.reshape(weights.shape[0], C, k, k).to(images.dtype)
    return F.conv2d(images, w, padding=k // 2)


def conv_adjoint(images: torch.Tensor, residual: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """``X^T R`` as the weight-gradient of a convolution.

    Shapes:
        images ``(N, C, H, W)``, residual ``(N, m, H, W)`` -> ``(m, C*k*k)``.
    """
    N, C, H, W = images.shape
    k = int(kernel_size)
    m = residual.shape[1]
    g = torch.nn.grad.conv2d_weight(images, (m, C, k, k), residual.to(images.dtype), padding=k // 2)
    return g.reshape(m, C * k * k)
