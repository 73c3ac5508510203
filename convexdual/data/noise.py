"""Seeded noise models of the paper: i.i.d. Gaussian and exponential."""

from __future__ import annotations

import numpy as np

__all__ = ["add_noise", "NOISE_MODELS"]

NOISE_MODELS = ("gaussian", "exponential")


def add_noise(clean: np.ndarray, model: str = "gaussian", level: float = 0.5,
              seed: int | np.random.Generator | None = 0) -> np.ndarray:
    """Return ``clean + noise``.

    Args:
        clean: any-shaped float array.
        model: "gaussian" (``level`` = sigma) or "exponential" (``level`` = scale
            ``1/rate``; heavy-tailed and non-negative, as in Appendix B.2).
        level: noise level (> 0; 0 returns a copy).
        seed: int or ``numpy.random.Generator``.
    """
    if model not in NOISE_MODELS:
        raise ValueError(f"unknown noise model {model!r}; choose one of {NOISE_MODELS}")
    if not np.isfinite(level) or level < 0:
        raise ValueError(f"noise level must be a finite number >= 0, got {level!r}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    clean = np.asarray(clean, dtype=np.float64)
    if model == "gaussian":
        return clean + level * rng.standard_normal(clean.shape)
    return clean + rng.exponential(scale=level, size=clean.shape) if level > 0 else clean.copy()
