"""Undersampling masks: acceleration within 5% of R, calibration block fully sampled."""

from __future__ import annotations

import numpy as np
import pytest

from convexdual.mri import MaskSpec, acceleration_of, calibration_region, poisson_mask, random_column_mask


@pytest.mark.parametrize("R", [4.0, 8.0])
@pytest.mark.parametrize("shape", [(64, 64), (80, 48)])
def test_poisson_acceleration_and_calibration(R, shape):
    calib = 12
    m = poisson_mask(shape, R, calib=calib, seed=1)
    assert m.shape == shape and m.dtype == bool
    assert abs(acceleration_of(m) - R) / R <= 0.05
    rows, cols = calibration_region(shape, calib)
    assert m[rows, cols].all() and m[rows, cols].size == calib * calib
    # variable density: the centre is sampled more densely than the periphery
    H, W = shape
    yy, xx = np.mgrid[:H, :W]
    r = np.hypot((yy - H / 2) / H, (xx - W / 2) / W)
    assert m[r < 0.2].mean() > m[r > 0.35].mean()
    np.testing.assert_array_equal(m, poisson_mask(shape, R, calib=calib, seed=1))  # seeded
    assert not np.array_equal(m, poisson_mask(shape, R, calib=calib, seed=2))


def test_random_columns_follow_fastmri():
    shape, R, cf = (40, 368), 4.0, 0.08
    masks = [random_column_mask(shape, R, center_fraction=cf, seed=s) for s in range(40)]
    num_low = round(368 * cf)
    pad = (368 - num_low + 1) // 2
    for m in masks:
        assert (m == m[:1]).all()  # whole columns
        assert m[:, pad : pad + num_low].all()
    # R holds in expectation (fastMRI's RandomMaskFunc); the mean over draws is within 5%
    mean_fraction = np.mean([m[0].mean() for m in masks])
    assert abs(1.0 / mean_fraction - R) / R <= 0.05


def test_mask_errors():
    with pytest.raises(ValueError, match="acceleration must be > 1"):
        MaskSpec(acceleration=1.0)
    with pytest.raises(ValueError, match="kind must be one of"):
        MaskSpec(kind="radial")
    with pytest.raises(ValueError, match="does not fit"):
        poisson_mask((16, 16), 8.0, calib=12)
    with pytest.raises(ValueError, match="center_fraction"):
        random_column_mask((8, 20), 8.0, center_fraction=0.3)
    spec = MaskSpec("random", 4.0, center_fraction=0.08, seed=5)
    np.testing.assert_array_equal(spec.make((8, 100)), random_column_mask((8, 100), 4.0, seed=5))
