"""Input checks shared by the public entry points.

Every check raises ValueError/TypeError with what was wrong and what is allowed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["as_images", "as_targets", "check_beta", "check_kernel_size", "check_finite"]


def _to_numpy(x: Any, name: str) -> np.ndarray:
    try:
        import torch

        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except Exception as exc:  # pragma: no cover
            raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}") from exc
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}")
    if np.iscomplexobj(x):
        raise TypeError(
            f"{name} is complex; split real and imaginary parts into separate examples "
            "(convexdual.data.mri does this for MRI)"
        )
    return x


def check_finite(x: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(x)):
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        raise ValueError(f"{name} contains {bad} NaN/Inf value(s); all entries must be finite")


def as_images(x: Any, name: str = "noisy") -> np.ndarray:
    """Return ``x`` as a float64 array ``(N, C, H, W)``.

    Accepts ``(N, H, W)`` (one channel) or ``(N, C, H, W)``.
    """
    x = _to_numpy(x, name)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise ValueError(
            f"{name} must have shape (N, H, W) or (N, C, H, W); got shape {tuple(x.shape)}"
        )
    if min(x.shape) == 0:
        raise ValueError(f"{name} must be non-empty; got shape {tuple(x.shape)}")
    x = np.ascontiguousarray(x, dtype=np.float64)
    check_finite(x, name)
    return x


def as_targets(y: Any, images: np.ndarray, name: str = "clean") -> np.ndarray:
    """Return ``y`` as float64 ``(N, H, W)`` matching ``images`` ``(N, C, H, W)``."""
    y = _to_numpy(y, name)
    if y.ndim == 4:
        if y.shape[1] != 1:
            raise ValueError(
                f"{name} must have a single channel (N, 1, H, W) or be (N, H, W); got shape {tuple(y.shape)}"
            )
        y = y[:, 0]
    if y.ndim != 3:
        raise ValueError(f"{name} must have shape (N, H, W) or (N, 1, H, W); got shape {tuple(y.shape)}")
    N, _, H, W = images.shape
    if y.shape != (N, H, W):
        raise ValueError(
            f"{name} has shape {tuple(y.shape)} but the inputs imply (N, H, W) = {(N, H, W)}; "
            "inputs and targets must hold the same images"
        )
    y = np.ascontiguousarray(y, dtype=np.float64)
    check_finite(y, name)
    return y


def check_beta(beta: Any) -> float:
    try:
        b = float(beta)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"beta must be a positive real number, got {beta!r}") from exc
    if not np.isfinite(b) or b <= 0:
        raise ValueError(f"beta must be a finite number > 0 (the weight decay of (2)); got {beta!r}")
    return b


def check_kernel_size(k: Any, height: int, width: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"kernel_size must be an odd positive int, got {k!r}")
    k = int(k)
    if k < 1 or k % 2 == 0:
        raise ValueError(
            f"kernel_size must be odd and >= 1 (zero padding (k-1)/2 keeps the image size); got {k}"
        )
    if k > min(height, width):
        raise ValueError(
            f"kernel_size {k} is larger than the image ({height}x{width}); use a kernel no larger than "
            f"{min(height, width) if min(height, width) % 2 else min(height, width) - 1}"
        )
    return k
