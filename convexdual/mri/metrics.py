"""NMSE, PSNR and SSIM with fastMRI's definitions (``fastmri/evaluate.py``), reimplemented.

fastMRI evaluates a whole volume at once:

* ``mse = mean((gt - pred)^2)``;
* ``nmse = ||gt - pred||^2 / ||gt||^2`` (Frobenius norms over the volume);
* ``psnr = skimage.metrics.peak_signal_noise_ratio(gt, pred, data_range=gt.max())``;
* ``ssim`` = the mean over slices of ``skimage.metrics.structural_similarity(gt[s], pred[s],
  data_range=maxval)`` with ``maxval = gt.max()`` of the *volume* (not of the slice).

Images are real (magnitudes) ``(slices, H, W)``; a single slice ``(H, W)`` is
treated as a one-slice volume. (The ``fastmri`` package itself is not a dependency:
its torchvision pin conflicts with our torch.)
"""

from __future__ import annotations

import numpy as np

__all__ = ["mse", "nmse", "psnr", "ssim", "volume_metrics"]


def _pair(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if np.iscomplexobj(gt) or np.iscomplexobj(pred):
        raise TypeError("fastMRI metrics are defined on real (magnitude) images; pass np.abs(...) of complex ones")
    g = np.asarray(gt, dtype=np.float64)
    p = np.asarray(pred, dtype=np.float64)
    if g.shape != p.shape:
        raise ValueError(f"ground truth and prediction must have the same shape; got {g.shape} and {p.shape}")
    if g.ndim == 2:
        g, p = g[None], p[None]
    if g.ndim != 3:
        raise ValueError(f"expected a volume (slices, H, W) or a slice (H, W); got shape {g.shape}")
    return g, p


def mse(gt: np.ndarray, pred: np.ndarray) -> float:
    """Mean squared error over the volume."""
    g, p = _pair(gt, pred)
    return float(np.mean((g - p) ** 2))


def nmse(gt: np.ndarray, pred: np.ndarray) -> float:
    """``||gt - pred||^2 / ||gt||^2`` over the volume."""
    g, p = _pair(gt, pred)
    return float(np.linalg.norm(g - p) ** 2 / np.linalg.norm(g) ** 2)


def psnr(gt: np.ndarray, pred: np.ndarray, maxval: float | None = None) -> float:
    """PSNR in dB with ``data_range = gt.max()`` of the volume (fastMRI), or ``maxval``."""
    from skimage.metrics import peak_signal_noise_ratio

    g, p = _pair(gt, pred)
    return float(peak_signal_noise_ratio(g, p, data_range=float(g.max()) if maxval is None else float(maxval)))


def ssim(gt: np.ndarray, pred: np.ndarray, maxval: float | None = None) -> float:
    """Mean over slices of skimage's SSIM (default 7x7 window) with ``data_range`` = the volume max."""
    from skimage.metrics import structural_similarity

    g, p = _pair(gt, pred)
    data_range = float(g.max()) if maxval is None else float(maxval)
    return float(np.mean([structural_similarity(g[s], p[s], data_range=data_range) for s in range(g.shape[0])]))


def volume_metrics(gt: np.ndarray, pred: np.ndarray, maxval: float | None = None) -> dict[str, float]:
    """``{"mse", "nmse", "psnr", "ssim"}`` of one volume."""
    return {"mse": mse(gt, pred), "nmse": nmse(gt, pred), "psnr": psnr(gt, pred, maxval),
            "ssim": ssim(gt, pred, maxval)}
