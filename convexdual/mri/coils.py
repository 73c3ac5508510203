"""Coil sensitivities (JSENSE / ESPIRiT via SigPy) and coil combination (SENSE, RSS).

All transforms are centred and orthonormal (``sigpy.fft`` / ``sigpy.ifft``: ifftshift ->
FFT -> fftshift, ``norm="ortho"``), the same convention as fastMRI's ``fft2c`` / ``ifft2c``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

__all__ = ["fft2c", "ifft2c", "rss", "center_crop", "estimate_coil_maps", "sense_combine", "MAP_METHODS"]

logger = logging.getLogger(__name__)

MAP_METHODS = ("jsense", "espirit")


def fft2c(images: np.ndarray) -> np.ndarray:
    """Centred orthonormal 2-D FFT over the last two axes. Shapes: ``(..., H, W)`` -> same."""
    import sigpy

    return sigpy.fft(np.asarray(images), axes=(-2, -1))


def ifft2c(kspace: np.ndarray) -> np.ndarray:
    """Centred orthonormal 2-D inverse FFT over the last two axes."""
    import sigpy

    return sigpy.ifft(np.asarray(kspace), axes=(-2, -1))


def rss(coil_images: np.ndarray, axis: int = 0) -> np.ndarray:
    """Root-sum-of-squares over the coil axis: ``sqrt(sum_c |x_c|^2)``."""
    x = np.asarray(coil_images)
    return np.sqrt(np.sum(np.abs(x) ** 2, axis=axis))


def center_crop(x: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Centre crop of the last two axes to ``shape`` (fastMRI's ``center_crop`` placement).

    Raises:
        ValueError: the crop is larger than the array.
    """
    H, W = x.shape[-2:]
    h, w = int(shape[0]), int(shape[1])
    if not (0 < h <= H and 0 < w <= W):
        raise ValueError(f"crop {shape} must be positive and at most the image size {(H, W)}")
    top, left = (H - h) // 2, (W - w) // 2
    return x[..., top : top + h, left : left + w]


def estimate_coil_maps(kspace: np.ndarray, method: str = "jsense", *, calib_width: int = 24,
                       device: Any = None, options: dict[str, Any] | None = None) -> np.ndarray:
    """Coil sensitivity maps from (undersampled) centred k-space.

    Args:
        kspace: ``(C, H, W)`` complex; only the central ``calib_width`` block is used,
            so the undersampled acquisition (with its calibration region) is enough.
        method: "jsense" (``sigpy.mri.app.JsenseRecon``, the paper's choice) or
            "espirit" (``sigpy.mri.app.EspiritCalib``).
        calib_width: side of the k-space calibration block.
        device: a SigPy device (``sigpy.Device(0)`` for a GPU with CuPy); CPU by default.
        options: extra keyword arguments of the SigPy app (e.g. ``{"mps_ker_width": 12}``
            for JSENSE, ``{"thresh": 0.02, "crop": 0.95}`` for ESPIRiT).

    Returns:
        ``(C, H, W)`` complex64 maps (JSENSE: normalised to ``sum_c |S_c|^2 = 1``;
        ESPIRiT: zero outside the estimated support).

    Raises:
        ValueError: unknown method or a non ``(C, H, W)`` array.
    """
    import sigpy
    import sigpy.mri.app as app

    k = np.asarray(kspace)
    if k.ndim != 3 or not np.iscomplexobj(k):
        raise ValueError(f"kspace must be complex (C, H, W); got {k.dtype} {k.shape}")
    calib = int(min(calib_width, k.shape[1], k.shape[2]))
    dev = sigpy.cpu_device if device is None else sigpy.Device(device)
    opts = dict(options or {})
    k = k.astype(np.complex64)
    if method == "jsense":
        opts.setdefault("mps_ker_width", min(16, calib))
        maps = app.JsenseRecon(k, ksp_calib_width=calib, device=dev, show_pbar=False, **opts).run()
    elif method == "espirit":
        maps = app.EspiritCalib(k, calib_width=calib, device=dev, show_pbar=False, **opts).run()
    else:
        raise ValueError(f"coil map method must be one of {MAP_METHODS}; got {method!r}")
    return np.asarray(sigpy.to_device(maps, sigpy.cpu_device), dtype=np.complex64)


def sense_combine(kspace: np.ndarray, maps: np.ndarray, mask: np.ndarray | None = None,
                  eps: float = 1e-6) -> np.ndarray:
    """SENSE coil combination of (zero-filled) k-space into one complex image.

    ``x = sum_c conj(S_c) ifft2c(M * k_c) / sum_c |S_c|^2`` where ``sum_c |S_c|^2 >
    eps * max``, and 0 elsewhere. For fully sampled data and maps ``S`` with the true
    magnitudes this reproduces the image up to the maps' phase; the zero-filled
    (undersampled) image and the fully sampled target must use the *same* maps.

    Shapes:
        kspace ``(C, H, W)``, maps ``(C, H, W)``, mask ``(H, W)`` or ``(W,)`` -> ``(H, W)`` complex128.
    """
    k = np.asarray(kspace)
    S = np.asarray(maps)
    if k.ndim != 3 or S.shape != k.shape:
        raise ValueError(f"kspace and maps must both be (C, H, W) with the same shape; got {k.shape} and {S.shape}")
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        if m.shape not in (k.shape[1:], (k.shape[2],)):
            raise ValueError(f"mask must be (H, W) = {k.shape[1:]} or (W,) = ({k.shape[2]},); got {m.shape}")
        k = k * m
    coil_images = ifft2c(k.astype(np.complex128))
    num = np.sum(np.conj(S) * coil_images, axis=0)
    den = np.sum(np.abs(S) ** 2, axis=0).astype(np.float64)
    support = den > eps * max(float(den.max()), np.finfo(float).tiny)
    out = np.zeros_like(num)
    out[support] = num[support] / den[support]
    return out
