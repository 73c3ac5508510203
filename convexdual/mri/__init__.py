"""CS-MRI pipeline (docs/math.md §9): undersampling masks, coil maps, SENSE combination,
fastMRI metrics, and slice preparation for the residual 7x7 denoiser.

File I/O lives here too: :mod:`convexdual.mri.fastmri` (HDF5 reader/writer of the
published schema) and :mod:`convexdual.mri.simulate` (offline simulator writing it).
Nothing in this package imports :mod:`convexdual.data` (tests/test_package_layout.py).
"""

from convexdual.mri.coils import center_crop, estimate_coil_maps, fft2c, ifft2c, rss, sense_combine
from convexdual.mri.masks import MaskSpec, acceleration_of, calibration_region, poisson_mask, random_column_mask
from convexdual.mri.metrics import mse, nmse, psnr, ssim, volume_metrics

__all__ = [
    "MaskSpec", "poisson_mask", "random_column_mask", "acceleration_of", "calibration_region",
    "fft2c", "ifft2c", "rss", "center_crop", "estimate_coil_maps", "sense_combine",
    "mse", "nmse", "psnr", "ssim", "volume_metrics",
]
