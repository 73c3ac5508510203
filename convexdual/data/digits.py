"""The bundled default data: scikit-learn's handwritten 8x8 digits (real, offline)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["load_digits_dataset", "DigitsSplit"]


@dataclass(frozen=True)
class DigitsSplit:
    """Normalised digits: ``train``/``test`` ``(N, H, W)`` float64, with the stats used."""

    train: np.ndarray
    test: np.ndarray
    mean: float
    std: float
    train_labels: np.ndarray
    test_labels: np.ndarray


def load_digits_dataset(num_train: int = 20, num_test: int = 20, *, upsample: int = 1,
                        seed: int | None = 0) -> DigitsSplit:
    """Load ``sklearn.datasets.load_digits`` (1,797 real 8x8 digits, shipped offline).

    Images are shuffled with ``seed``, split into train/test, optionally upsampled
    by an integer factor (bilinear, ``skimage.transform.rescale``), and normalised by
    the *training* set's mean and std (as the paper does for MNIST).
    """
    from sklearn.datasets import load_digits

    if num_train < 1 or num_test < 0:
        raise ValueError(f"num_train must be >= 1 and num_test >= 0; got {num_train}, {num_test}")
    d = load_digits()
    images, labels = d.images.astype(np.float64), d.target
    if num_train + num_test > len(images):
        raise ValueError(f"only {len(images)} digits are bundled; asked for {num_train} + {num_test}")
    order = np.random.default_rng(seed).permutation(len(images)) if seed is not None else np.arange(len(images))
    images, labels = images[order], labels[order]
    if upsample != 1:
        if int(upsample) != upsample or upsample < 1:
            raise ValueError(f"upsample must be a positive integer, got {upsample!r}")
        from skimage.transform import rescale

        images = np.stack([rescale(im, int(upsample), order=1, anti_aliasing=False) for im in images[: num_train + num_test]])
    train, test = images[:num_train], images[num_train : num_train + num_test]
    mean, std = float(train.mean()), float(train.std())
    return DigitsSplit(train=(train - mean) / std, test=(test - mean) / std, mean=mean, std=std,
                       train_labels=labels[:num_train], test_labels=labels[num_train : num_train + num_test])
