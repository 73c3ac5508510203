"""Coil maps, SENSE combination and fastMRI metrics."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from convexdual.mri.simulate import birdcage_maps, simulate_images, simulate_kspace
from convexdual.mri import (center_crop, estimate_coil_maps, fft2c, ifft2c, mse, nmse, poisson_mask, psnr,
                            sense_combine, ssim, volume_metrics)
from convexdual.mri.prepare import PrepOptions, from_examples, prepare_slice, to_examples
from convexdual.mri.masks import MaskSpec


@pytest.fixture(scope="module")
def sim():
    x = simulate_images("shepp_logan", 1, (48, 48), phase_strength=1.0, seed=0)[0]
    S = birdcage_maps(6, (48, 48))
    k = simulate_kspace(x[None], S)[0]
    return x, S, k


def test_fft_is_centred_orthonormal():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 8, 10)) + 1j * rng.standard_normal((3, 8, 10))
    k = fft2c(x)
    np.testing.assert_allclose(np.linalg.norm(k), np.linalg.norm(x))
    np.testing.assert_allclose(ifft2c(k), x, atol=1e-12)
    np.testing.assert_allclose(k[0], np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x[0]), norm="ortho")), atol=1e-12)


def test_sense_with_true_maps_is_exact(sim):
    x, S, k = sim
    np.testing.assert_allclose(sense_combine(k, S), x, atol=1e-5)


@pytest.mark.parametrize("method", ["jsense", "espirit"])
def test_sense_with_estimated_maps_reproduces_image_up_to_phase(sim, method):
    x, S, k = sim
    m = poisson_mask(k.shape[1:], 4.0, calib=16, seed=0)
    maps = estimate_coil_maps(k * m, method, calib_width=16)
    assert maps.shape == k.shape and maps.dtype == np.complex64
    xh = sense_combine(k, maps)
    obj = np.abs(x) > 0.05
    # magnitudes agree; the phase differs by the maps' own (smooth) phase choice
    rel = np.linalg.norm((np.abs(xh) - np.abs(x))[obj]) / np.linalg.norm(np.abs(x)[obj])
    assert rel < 0.05
    # what is left is a smooth phase: the unit phasor q = xh x* / |xh x*| changes little between neighbours
    # (0.2 rad per pixel; an unstructured phase would give about 1.3)
    q = xh * np.conj(x)
    q = np.where(obj, q / np.maximum(np.abs(q), 1e-12), 0)
    both = obj[1:, :] & obj[:-1, :]
    assert np.mean(np.abs(q[1:, :] - q[:-1, :])[both]) < 0.2
    # the zero-filled image is worse than the target made with the same maps
    zf = sense_combine(k, maps, mask=m)
    assert nmse(np.abs(xh), np.abs(zf)) > 1e-3


def test_prepare_slice_and_examples(sim):
    x, S, k = sim
    opts = PrepOptions(mask=MaskSpec("poisson", 4.0, calib=16), map_method="jsense", calib_width=16, crop=(32, 32))
    ps = prepare_slice(k, opts)
    assert ps.zero_filled.shape == ps.target.shape == (32, 32)
    assert np.abs(ps.zero_filled).max() == pytest.approx(1.0)
    assert psnr(np.abs(ps.target), np.abs(ps.zero_filled)) < 60.0
    xs, ys = to_examples(ps.zero_filled[None], ps.target[None])
    assert xs.shape == (2, 1, 32, 32) and ys.shape == (2, 32, 32)
    np.testing.assert_array_equal(xs[1, 0], ps.zero_filled.imag)
    np.testing.assert_allclose(from_examples(ys)[0], ps.target)
    with pytest.raises(ValueError, match="crop"):
        center_crop(ps.target, (40, 10))


def test_metrics_follow_fastmri_definitions():
    rng = np.random.default_rng(0)
    gt = np.abs(rng.standard_normal((3, 24, 24)))
    gt[1] *= 5.0  # slices with different maxima: data_range must be the volume max
    pred = gt + 0.3 * rng.standard_normal(gt.shape)
    assert mse(gt, pred) == pytest.approx(np.mean((gt - pred) ** 2))
    assert nmse(gt, pred) == pytest.approx(np.sum((gt - pred) ** 2) / np.sum(gt**2))
    assert psnr(gt, pred) == pytest.approx(10 * np.log10(gt.max() ** 2 / np.mean((gt - pred) ** 2)))
    by_volume = np.mean([structural_similarity(gt[s], pred[s], data_range=gt.max()) for s in range(3)])
    by_slice = np.mean([structural_similarity(gt[s], pred[s], data_range=gt[s].max()) for s in range(3)])
    assert ssim(gt, pred) == pytest.approx(by_volume) and abs(by_volume - by_slice) > 1e-3
    assert ssim(gt[0], gt[0]) == pytest.approx(1.0)
    assert set(volume_metrics(gt, pred)) == {"mse", "nmse", "psnr", "ssim"}
    with pytest.raises(TypeError, match="magnitude"):
        psnr(gt + 0j, pred)
    with pytest.raises(ValueError, match="same shape"):
        nmse(gt, pred[:2])
