"""Undersampling masks: SigPy's 2-D variable-density Poisson disc and fastMRI's 1-D random columns.

Conventions: k-space is centred (DC at ``(H // 2, W // 2)``, as after ``fftshift``);
a mask is a boolean ``(H, W)`` array, True where a sample is acquired. The
acceleration of a mask is ``H * W / mask.sum()``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

__all__ = ["MaskSpec", "poisson_mask", "random_column_mask", "acceleration_of", "calibration_region", "make_mask"]

logger = logging.getLogger(__name__)

_KINDS = ("poisson", "random")


@dataclass(frozen=True)
class MaskSpec:
    """How to undersample.

    Attributes:
        kind: "poisson" (2-D Poisson disc, the paper's choice) or "random" (fastMRI's
            1-D random phase-encode columns).
        acceleration: R > 1.
        calib: side of the fully sampled square calibration block (poisson).
        center_fraction: fraction of fully sampled central columns (random; fastMRI
            uses 0.08 at R = 4 and 0.04 at R = 8).
        seed: mask seed (the same seed gives the same mask).
    """

    kind: str = "poisson"
    acceleration: float = 4.0
    calib: int = 24
    center_fraction: float = 0.08
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"mask kind must be one of {_KINDS}; got {self.kind!r}")
        if not (self.acceleration > 1):
            raise ValueError(f"acceleration must be > 1, got {self.acceleration}")
        if int(self.calib) < 0:
            raise ValueError(f"calib must be >= 0, got {self.calib}")
        if not (0 < self.center_fraction < 1):
            raise ValueError(f"center_fraction must be in (0, 1), got {self.center_fraction}")

    def make(self, shape: tuple[int, int], seed: int | None = None) -> np.ndarray:
        """The ``(H, W)`` bool mask; ``seed`` overrides ``self.seed`` (e.g. one mask per slice)."""
        s = self.seed if seed is None else seed
        if self.kind == "poisson":
            return poisson_mask(shape, self.acceleration, calib=self.calib, seed=s)
        return random_column_mask(shape, self.acceleration, center_fraction=self.center_fraction, seed=s)


def _check_shape(shape: tuple[int, int]) -> tuple[int, int]:
    if len(shape) != 2 or min(int(shape[0]), int(shape[1])) < 2:
        raise ValueError(f"mask shape must be (H, W) with H, W >= 2; got {shape}")
    return int(shape[0]), int(shape[1])


def calibration_region(shape: tuple[int, int], calib: int | tuple[int, int]) -> tuple[slice, slice]:
    """Index of the centred ``calib`` block, placed exactly as ``sigpy.mri.poisson`` places it."""
    H, W = _check_shape(shape)
    ch, cw = (calib, calib) if np.isscalar(calib) else calib
    return (slice(int(H / 2 - ch / 2), int(H / 2 + ch / 2)), slice(int(W / 2 - cw / 2), int(W / 2 + cw / 2)))


def acceleration_of(mask: np.ndarray) -> float:
    """``mask.size / mask.sum()`` (inf for an empty mask)."""
    m = np.asarray(mask, dtype=bool)
    s = int(m.sum())
    return float("inf") if s == 0 else float(m.size / s)


def poisson_mask(shape: tuple[int, int], acceleration: float, *, calib: int | tuple[int, int] = 24, seed: int = 0,
                 rel_tol: float = 0.02, crop_corner: bool = True) -> np.ndarray:
    """Variable-density 2-D Poisson-disc mask (``sigpy.mri.poisson``) with a fully sampled calibration block.

    The sampler is SigPy's Bridson kernel (``sigpy.mri.samp._poisson``) with SigPy's
    density ``1 / (1 + s r)``; the bisection on the slope ``s`` is ours because
    ``sigpy.mri.poisson``'s own loop never ends when the target cannot be met within
    its tolerance (it hung on 32 x 32 grids): ours stops after 60 halvings and then
    tries the next seeds (``seed + 7919 j``, j < 8) before giving up with an error.
    The achieved acceleration is within ``rel_tol`` of R. NumPy's global generator,
    which the kernel seeds, is restored afterwards.

    Args:
        shape: ``(H, W)``.
        acceleration: R > 1 (must leave room for the calibration block: ``calib^2 < H W / R``).
        calib: side of the fully sampled centre block (or ``(ch, cw)``).
        seed: mask seed.
        rel_tol: allowed relative deviation of the achieved R.
        crop_corner: drop the k-space corners (SigPy's default).

    Returns:
        ``(H, W)`` bool.

    Raises:
        ValueError: R <= 1, a calibration block that does not fit, or R unreachable.
    """
    H, W = _check_shape(shape)
    ch, cw = (int(calib), int(calib)) if np.isscalar(calib) else (int(calib[0]), int(calib[1]))
    if not (acceleration > 1):
        raise ValueError(f"acceleration must be > 1, got {acceleration}")
    if ch > H or cw > W or ch * cw >= H * W / acceleration:
        raise ValueError(f"calibration block {ch}x{cw} does not fit a {H}x{W} mask at R = {acceleration} "
                         f"(it alone samples {ch * cw} of the {H * W / acceleration:.0f} allowed points)")
    m = _poisson_bisect((H, W), float(acceleration), (ch, cw), int(seed), float(rel_tol), crop_corner)
    return m.astype(bool)


def _poisson_bisect(shape: tuple[int, int], accel: float, calib: tuple[int, int], seed: int, rel_tol: float,
                    crop_corner: bool) -> np.ndarray:
    from sigpy.mri.samp import _poisson

    ny, nx = shape
    y, x = np.mgrid[:ny, :nx]
    x = np.maximum(abs(x - nx / 2) - calib[1] / 2, 0)
    x = x / max(float(x.max()), 1e-12)
    y = np.maximum(abs(y - ny / 2) - calib[0] / 2, 0)
    y = y / max(float(y.max()), 1e-12)
    r = np.sqrt(x**2 + y**2)
    state = np.random.get_state()
    best, best_err = None, np.inf
    try:
        for attempt in range(8):
            s = seed + 7919 * attempt
            lo, hi = 0.0, float(max(nx, ny))
            for _ in range(60):
                slope = (lo + hi) / 2
                rx = np.clip((1 + r * slope) * nx / max(nx, ny), 1, None)
                ry = np.clip((1 + r * slope) * ny / max(nx, ny), 1, None)
                mask = _poisson(nx, ny, 30, rx, ry, calib, s)
                if crop_corner:
                    mask = mask * (r < 1)
                achieved = nx * ny / max(float(mask.sum()), 1.0)
                err = abs(achieved - accel) / accel
                if err < best_err:
                    best, best_err = mask, err
                if err <= rel_tol:
                    return mask.astype(bool)
                if achieved < accel:
                    lo = slope
                else:
                    hi = slope
                if hi - lo < 1e-9:
                    break
            logger.debug("poisson mask seed %d: best relative R error %.3g, trying another seed", s, best_err)
    finally:
        np.random.set_state(state)
    raise ValueError(f"could not reach R = {accel} within {rel_tol:.0%} on a {ny}x{nx} grid with a "
                     f"{calib[0]}x{calib[1]} calibration block (closest: {best_err:.1%} off)")


def random_column_mask(shape: tuple[int, int], acceleration: float, *, center_fraction: float = 0.08,
                       seed: int = 0) -> np.ndarray:
    """fastMRI's ``RandomMaskFunc`` (1-D random phase-encode columns), as a 2-D mask.

    ``num_low = round(W * center_fraction)`` central columns are always acquired; every
    other column with probability ``(W / R - num_low) / (W - num_low)``, so the
    *expected* acceleration is R (one draw fluctuates around it). Columns are the last
    axis (fastMRI's phase-encode direction). Uses its own ``numpy.random.default_rng(seed)``.

    Returns:
        ``(H, W)`` bool, constant along H.
    """
    H, W = _check_shape(shape)
    if not (acceleration > 1):
        raise ValueError(f"acceleration must be > 1, got {acceleration}")
    num_low = int(round(W * center_fraction))
    if num_low >= W / acceleration:
        raise ValueError(f"center_fraction {center_fraction} already samples {num_low} of {W} columns, "
                         f"more than W / R = {W / acceleration:.1f}; lower it or the acceleration")
    prob = (W / acceleration - num_low) / (W - num_low)
    cols = np.random.default_rng(seed).uniform(size=W) < prob
    pad = (W - num_low + 1) // 2
    cols[pad : pad + num_low] = True
    return np.broadcast_to(cols, (H, W)).copy()


def make_mask(kind: str, shape: tuple[int, int], acceleration: float, *, seed: int = 0, calib: int = 24,
              center_fraction: float = 0.08) -> np.ndarray:
    """Shorthand for ``MaskSpec(kind, acceleration, calib, center_fraction, seed).make(shape)``."""
    return MaskSpec(kind, acceleration, calib, center_fraction, seed).make(shape)
