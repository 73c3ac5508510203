"""The interpret experiment at smoke size: path sparsity, spectra and k-means maps checked independently."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

import convexdual as cd
from convexdual import plotting as pl
from convexdual.experiments.mnist import common as C
from tests._reference import patch_matrix_ref
from tests.test_figures import _assert_complete


def _run(out: Path, *extra: str):
    from convexdual.experiments.mnist import interpret

    p = argparse.ArgumentParser()
    interpret.add_arguments(p)
    with pl.capture() as figs:
        assert interpret.run(p.parse_args(["--smoke", "--out", str(out), *extra])) == 0
    return json.loads((out / "interpret.json").read_text()), figs


@pytest.fixture(scope="module")
def interpret_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("interpret")
    res, figs = _run(out)
    return out, res, figs


def _solve_net(out: Path, label_start: str) -> tuple[dict, cd.TwoLayerConvNet]:
    for rec_path in sorted((out / "units" / "solves").glob("*.json")):
        rec = json.loads(rec_path.read_text())
        if rec["label"].startswith(label_start):
            return rec, cd.TwoLayerConvNet.load(rec_path.with_suffix(".pt"))[0]
    raise AssertionError(f"no cached solve labelled {label_start!r}")


def _dft_ref(f: np.ndarray, size: int) -> np.ndarray:
    """|sum_{a,b} f[a,b] exp(-2 pi i (a fy + b fx))| at fy, fx = (n - size//2) / size, by the definition."""
    fr = (np.arange(size) - size // 2) / size
    a = np.arange(f.shape[0])
    E = np.exp(-2j * np.pi * np.outer(fr, a))  # (size, k)
    return np.abs(E @ f @ E.T)


def test_path_sparsity_and_spectra_from_the_recovered_net(interpret_run):
    out, res, _ = interpret_run
    an = res["analysis"]
    rec, dnet = _solve_net(out, "dual, 24 sampled")
    assert rec["certificate"]["ok"] and rec["certificate"]["relative_gap"] < 1e-6
    U, v = dnet.filters()
    norms = np.abs(v) * np.linalg.norm(U, axis=1)  # ||w_i|| = |v_j| ||u_j|| (eq. 5: v = sqrt||w||, u = w / v)
    sp = an["sparsity"]["dual"]
    assert sp["groups"] == 2 * rec["P"] and sp["nonzero"] == dnet.width == len(norms)
    np.testing.assert_allclose(sp["sorted_norms"], np.sort(norms)[::-1], rtol=1e-12)
    assert sp["penalty_sum"] == pytest.approx(norms.sum())
    cum = np.cumsum(np.sort(norms)[::-1]) / norms.sum()
    assert sp["paths_for_90pct"] == int(np.argmax(cum >= 0.9)) + 1
    # the primal's paths: all its neurons (Adam leaves none exactly zero)
    pnet, _ = cd.TwoLayerConvNet.load(out / "nets" / "primal_gaussian_0.5_w32.pt")
    assert an["sparsity"]["primal"]["neurons"] == 32
    # spectra: |DFT| of v_j u_j at the listed neurons, by the DFT's definition; DC = sum of taps
    size = an["spectra"]["dual"]["fft_size"]
    for name, net in (("dual", dnet), ("primal", pnet)):
        s = an["spectra"][name]
        Un, vn = net.filters()
        nn_ = np.abs(vn) * np.linalg.norm(Un, axis=1)
        assert s["ranks"][0] == 0 and s["norms"][0] == pytest.approx(nn_.max())  # rank 1 = the largest path
        for j, neuron in enumerate(s["neurons"]):
            f = (vn[neuron] * Un[neuron]).reshape(3, 3)
            mag = np.asarray(s["magnitude"][j])
            np.testing.assert_allclose(mag, _dft_ref(f, size), atol=1e-12)
            assert mag[size // 2, size // 2] == pytest.approx(abs(f.sum()))


def test_kmeans_maps_of_the_recovered_net(interpret_run):
    out, res, _ = interpret_run
    an = res["analysis"]
    _, dnet = _solve_net(out, "dual, 24 sampled")
    s = res["settings"]
    data = C.load_data(argparse.Namespace(data=s["data"], num_train=s["num_train"], num_test=s["num_test"],
                                          upsample=1), "gaussian", res["sigma"], s["seed"])
    idx = np.asarray(an["kmeans_indices"])
    assert len(idx) == an["kmeans_images"] and idx[0] == 0 and idx[-1] == len(data.clean_test) - 1
    digits = data.clean_test[idx]
    np.testing.assert_allclose(an["clean_digits"], digits[an["shown_positions"]])
    assert len(an["shown_positions"]) == min(s["show_images"], len(an["kmeans_indices"]))
    km = an["kmeans"]["dual"]
    U, v = dnet.filters()
    codes = (patch_matrix_ref(digits, 3) @ U.T >= 0)  # every neuron of a recovered net is a nonzero group
    labels = np.asarray(km["labels"]).ravel()
    assert np.asarray(km["labels"]).shape == digits.shape
    assert km["num_paths"] == dnet.width and km["distinct_codes"] == len(np.unique(codes, axis=0))
    _, inv = np.unique(codes, axis=0, return_inverse=True)
    for g in np.unique(inv):
        assert len(np.unique(labels[np.asarray(inv).ravel() == g])) == 1
    counts = np.bincount(labels)
    assert len(counts) <= s["clusters"] and np.all(np.diff(counts) <= 0)
    assert [c["pixels"] for c in km["clusters"]] == counts.tolist()
    hist = np.asarray(km["active_paths_per_pixel"]["histogram"])
    np.testing.assert_array_equal(hist, np.bincount(codes.sum(axis=1)))
    # each cluster's mean effective filter (eq. 8) from the codes, and the prediction it gives
    X = patch_matrix_ref(digits, 3)
    eff = codes.astype(float) @ (v[:, None] * U)
    np.testing.assert_allclose(np.einsum("nd,nd->n", X, eff), dnet.predict(digits).ravel(), atol=1e-9)
    for c in km["clusters"]:
        np.testing.assert_allclose(c["mean_filter"], eff[labels == c["cluster"]].mean(axis=0), atol=1e-12)


def test_interpret_figures_are_complete(interpret_run):
    out, res, figs = interpret_run
    by = _assert_complete(figs, {"spectra.png", "path_sparsity.png", "kmeans_maps.png", "cluster_filters.png"})
    spec = by["spectra.png"]
    spectra = [ax for ax in spec.axes if getattr(ax, "_convexdual_spectrum", False)]
    assert len(spectra) == len(res["analysis"]["spectra"]["dual"]["ranks"]) + len(res["analysis"]["spectra"]["primal"]["ranks"])
    assert len({ax.images[0].get_clim() for ax in spectra}) == 1  # dual and primal on one colour scale
    assert all(any(t.get_text() == "DC" for t in ax.texts) for ax in spectra)
    ps = by["path_sparsity.png"]
    assert any(ax.get_yscale() == "log" for ax in ps.axes)
    text = (out / "summary.md").read_text()
    assert text.startswith("# interpret (smoke)") and "optimal over the 24 sampled patterns" in text
    assert "real MNIST digits" in by["kmeans_maps.png"].get_suptitle()


@pytest.mark.slow
def test_interpret_resume_reuses_the_analysis(tmp_path):
    _run(tmp_path)
    unit = tmp_path / "units" / "interpret_v3_gaussian_0.5.json"
    rec = json.loads(unit.read_text())
    rec["ari_dual_vs_primal"] = 0.123456
    unit.write_text(json.dumps(rec))
    res, _ = _run(tmp_path, "--resume")
    assert res["analysis"]["ari_dual_vs_primal"] == 0.123456
    assert all(r.get("reused") for r in res["duals"].values())


def test_kmeans_digits_are_spread_over_the_test_set():
    from convexdual.experiments.mnist.interpret import kmeans_indices

    # the bundled test set is ordered by class: 16 digits must span it, not be its first 16 (all zeros)
    np.testing.assert_array_equal(kmeans_indices(4400, 16)[[0, 1, -1]], [0, 293, 4399])
    assert len(kmeans_indices(4400, 16)) == 16 and len(kmeans_indices(8, 16)) == 8
    np.testing.assert_array_equal(kmeans_indices(16, 6), [0, 3, 6, 9, 12, 15])
