"""Figures of the MRI experiment (one PNG per call, through :mod:`convexdual.plotting`).

Each function takes the run's own description (``details``: data source, acceleration,
mask, maps, training set, beta rule, pattern set; one line each) for the figure title,
builds the figure, writes it atomically and returns the path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from convexdual import plotting as pl
from convexdual.interpret import frequency_responses

__all__ = ["filter_response_figure", "loss_curves_figure", "reconstruction_figure"]

_NAMES = {"zero_filled": "zero-filled (SENSE)", "primal": "primal (Adam)", "dual": "dual (convex, recovered net)"}


def _name(key: str) -> str:
    return _NAMES.get(key, key)


def reconstruction_figure(path: Path, images: dict[str, np.ndarray], gt: np.ndarray, metrics: dict[str, dict],
                          title: str, details: Sequence[str] = ()) -> Path:
    """Top row: each reconstruction and the ground truth (magnitudes, one shared scale); bottom row: |error|.

    The error maps share one scale chosen from the data (0 to the 99.5th percentile of
    all of them, so they do not saturate; brighter pixels are clipped and the colour bar
    says so); each row has its colour bar. PSNR/SSIM are the volume metrics (fastMRI:
    data range = the volume's maximum of the ground truth).
    """
    names = list(images)
    ncol = len(names) + 1
    fig, ax = pl.new_figure(2, ncol, size=(2.9 * ncol + 1.2, 6.6))
    lo, hi = pl.shared_limits([gt], zero=True)
    errors = {name: np.abs(images[name] - gt) for name in names}
    elo, ehi = pl.shared_limits(list(errors.values()), zero=True, percentile=99.5)
    emax = max(float(e.max()) for e in errors.values()) if errors else 0.0
    im = eim = None
    for j, name in enumerate(names):
        m = metrics.get(name, {})
        im = pl.show_image(ax[0, j], images[name], vmin=lo, vmax=hi,
                           title=f"{_name(name)}\nPSNR {m.get('psnr', float('nan')):.2f} dB, "
                                 f"SSIM {m.get('ssim', float('nan')):.3f}", fontsize=9)
        e = errors[name]
        eim = pl.show_image(ax[1, j], e, vmin=elo, vmax=ehi, cmap="magma",
                            title=f"|error|: max {e.max():.3g}, mean {e.mean():.3g}", fontsize=8)
    im = pl.show_image(ax[0, -1], gt, vmin=lo, vmax=hi, title="ground truth (SENSE, fully sampled)", fontsize=9)
    ax[1, -1].axis("off")
    pl.colorbar(fig, im, ax[0, :], "magnitude, shared\n(0 to ground-truth max)")
    clipped = emax > ehi
    pl.colorbar(fig, eim, ax[1, :], "|error|, shared\n(0 to 99.5th percentile" + (", clipped)" if clipped else ")"),
                extend="max" if clipped else "neither")
    pl.set_title(fig, title, *details, fontsize=10)
    return pl.save(fig, path)


def loss_curves_figure(path: Path, history: list[dict], dual: dict[str, float], title: str,
                       details: Sequence[str] = (), dual_label: str = "dual (convex, recovered net)") -> Path:
    """Primal per-pixel train/test loss per epoch (log); the dual's (one solve) as horizontal lines."""
    fig, ax = pl.new_figure(1, 2, size=(11, 4.6))
    ep = [h["epoch"] for h in history]
    for a, key in zip(ax[0], ("train_loss", "test_loss")):
        vals = [h.get(key, np.nan) for h in history]
        a.plot(ep, vals, color="C0", label=f"primal (Adam): final {vals[-1]:.4g}" if vals else "primal (Adam)")
        if dual.get(key) is not None:
            a.axhline(dual[key], color="C1", ls="--", label=f"{dual_label}: {dual[key]:.4g}")
        a.set_xlabel("epoch")
        a.set_ylabel(f"{key.replace('_', ' ')} per pixel (1/2 MSE)")
        a.set_title({"train_loss": "training loss (the dual's training tiles)",
                     "test_loss": "test loss (test slices)"}[key], fontsize=9)
        a.set_yscale("log")
        a.legend(fontsize=7)
    pl.set_title(fig, title, *details, fontsize=10)
    return pl.save(fig, path)


def filter_response_figure(path: Path, W: np.ndarray, Z: np.ndarray, kernel_size: int, title: str,
                           max_filters: int = 16, details: Sequence[str] = ()) -> Path:
    """|DFT| of the largest nonzero dual filters ``w_i`` (v > 0) and ``z_i`` (v < 0), one shared scale.

    Frequency axes in cycles/pixel (zero-padded to 32 points, DC at the centre, marked).
    """
    groups = [(f"w{i}", W[i]) for i in range(W.shape[0])] + [(f"z{i}", Z[i]) for i in range(Z.shape[0])]
    norms = np.array([np.linalg.norm(g) for _, g in groups])
    top = float(norms.max()) if norms.size else 0.0
    nonzero = [i for i in np.argsort(-norms) if norms[i] > 1e-6 * top] if top > 0 else []
    keep = nonzero[:max_filters]
    n = max(len(keep), 1)
    cols = min(n, 8)
    rows = int(np.ceil(n / cols))
    fig, ax = pl.new_figure(rows, cols, size=(1.75 * cols + 1.4, 1.9 * rows + 1.6))
    for a in ax.ravel():
        a.axis("off")
    if keep:
        resp = frequency_responses(np.stack([groups[i][1] for i in keep]), 1, kernel_size)[:, 0]
        lo, hi = pl.shared_limits([resp], zero=True)
        sp = None
        for k, (a, i, r) in enumerate(zip(ax.ravel(), keep, resp)):
            a.axis("on")
            sp = pl.spectrum(a, r, vmin=lo, vmax=hi, title=f"{groups[i][0]}, norm {norms[i]:.2g}",
                             xlabel=(k // cols == rows - 1 or k + cols >= len(keep)), ylabel=(k % cols == 0))
        pl.colorbar(fig, sp, ax, "|DFT| (shared scale)")
    else:
        ax[0, 0].text(0.5, 0.5, "no nonzero dual filter", ha="center", va="center", transform=ax[0, 0].transAxes)
    pl.set_title(fig, f"{title}: |DFT| of the {len(keep)} largest of {len(nonzero)} nonzero dual filters "
                      "(w: v > 0, z: v < 0)", *details, fontsize=9)
    return pl.save(fig, path)
