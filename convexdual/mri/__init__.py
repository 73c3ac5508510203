"""CS-MRI pipeline (docs/math.md §9): undersampling masks, coil maps, SENSE combination,
fastMRI metrics, and slice preparation for the residual 7x7 denoiser.

File I/O lives in :mod:`convexdual.data.fastmri` (reader/writer) and
:mod:`convexdual.data.mri_sim` (offline simulator).
"""

from convexdual.mri.coils import center_crop, estimate_coil_maps, fft2c, ifft2c, rss, sense_combine
from convexdual.mri.masks import MaskSpec, acceleration_of, calibration_region, poisson_mask, random_column_mask
from convexdual.mri.metrics import mse, nmse, psnr, ssim, volume_metrics

__all__ = [
    "MaskSpec", "poisson_mask", "random_column_mask", "acceleration_of", "calibration_region",
    "fft2c", "ifft2c", "rss", "center_crop", "estimate_coil_maps", "sense_combine",
    "mse", "nmse", "psnr", "ssim", "volume_metrics",
]
