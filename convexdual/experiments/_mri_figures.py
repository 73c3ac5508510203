"""Figures of the MRI experiment (matplotlib, Agg backend; one PNG per call)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from convexdual.interpret import frequency_responses

__all__ = ["reconstruction_figure", "loss_curves_figure", "filter_response_figure"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def reconstruction_figure(path: Path, images: dict[str, np.ndarray], gt: np.ndarray, metrics: dict[str, dict],
                          title: str) -> Path:
    """Top row: each reconstruction and the ground truth (magnitudes); bottom row: |error| x 5."""
    plt = _plt()
    names = list(images)
    fig, ax = plt.subplots(2, len(names) + 1, figsize=(3 * (len(names) + 1), 6.2))
    vmax = float(gt.max())
    for j, name in enumerate(names):
        m = metrics.get(name, {})
        ax[0, j].imshow(images[name], cmap="gray", vmin=0, vmax=vmax)
        ax[0, j].set_title(f"{name}\nPSNR {m.get('psnr', float('nan')):.2f} SSIM {m.get('ssim', float('nan')):.3f}",
                           fontsize=9)
        ax[1, j].imshow(np.abs(images[name] - gt), cmap="magma", vmin=0, vmax=vmax / 5)
        ax[1, j].set_title("|error| (x5)", fontsize=9)
    ax[0, -1].imshow(gt, cmap="gray", vmin=0, vmax=vmax)
    ax[0, -1].set_title("ground truth (SENSE, full)", fontsize=9)
    ax[1, -1].axis("off")
    for a in ax.ravel():
        a.set_xticks([])
        a.set_yticks([])
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def loss_curves_figure(path: Path, history: list[dict], dual: dict[str, float], title: str) -> Path:
    """Primal per-pixel train/test loss per epoch; the dual's (one solve) as horizontal lines."""
    plt = _plt()
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    ep = [h["epoch"] for h in history]
    for a, key in zip(ax, ("train_loss", "test_loss")):
        vals = [h.get(key, np.nan) for h in history]
        a.plot(ep, vals, label="primal (Adam)")
        if dual.get(key) is not None:
            a.axhline(dual[key], color="C1", ls="--", label="dual (convex, recovered net)")
        a.set_xlabel("epoch")
        a.set_ylabel(f"{key.replace('_', ' ')} per pixel")
        a.set_yscale("log")
        a.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def filter_response_figure(path: Path, W: np.ndarray, Z: np.ndarray, kernel_size: int, title: str,
                           max_filters: int = 16) -> Path:
    """Frequency responses of the largest nonzero dual filters ``w_i`` (v > 0) and ``z_i`` (v < 0)."""
    plt = _plt()
    groups = [(f"w{i}", W[i]) for i in range(W.shape[0])] + [(f"z{i}", Z[i]) for i in range(Z.shape[0])]
    norms = np.array([np.linalg.norm(g) for _, g in groups])
    top = float(norms.max()) if norms.size else 0.0
    keep = [i for i in np.argsort(-norms) if norms[i] > 1e-6 * top][:max_filters]
    n = max(len(keep), 1)
    cols = min(n, 8)
    rows = int(np.ceil(n / cols))
    fig, ax = plt.subplots(rows, cols, figsize=(1.8 * cols, 1.9 * rows + 0.4), squeeze=False)
    for a in ax.ravel():
        a.axis("off")
    if keep:
        resp = frequency_responses(np.stack([groups[i][1] for i in keep]), 1, kernel_size)[:, 0]
        for a, i, r in zip(ax.ravel(), keep, resp):
            a.imshow(r, cmap="viridis")
            a.set_title(f"{groups[i][0]} |{norms[i]:.2g}|", fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
