"""Offline multi-coil MRI data written in the fastMRI schema (no download needed).

Each slice is a real image (SigPy's Shepp-Logan phantom under a random rotation and
scale, or a grey-scale image bundled with scikit-image) times a smooth synthetic
phase; coil images are that times SigPy birdcage sensitivities (normalised so that
``sum_c |S_c|^2 = 1``: the RSS of the coil images is then the image magnitude);
k-space is their centred orthonormal FFT, plus optional complex Gaussian noise.
The files are written by :func:`convexdual.mri.fastmri.write_fastmri_volume` and read
back through the same reader a user runs on real fastMRI data.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convexdual.mri.fastmri import write_fastmri_volume

__all__ = ["SimulationSpec", "simulate_images", "birdcage_maps", "simulate_kspace", "simulate_volume",
           "simulate_dataset", "SOURCES", "SKIMAGE_IMAGES"]

logger = logging.getLogger(__name__)

SOURCES = ("shepp_logan", "skimage")
# grey-scale images shipped inside scikit-image (read from its package directory, never fetched)
SKIMAGE_IMAGES = ("camera", "moon", "coins", "brick", "grass", "gravel", "page", "text", "cell",
                  "shepp_logan_phantom")


@dataclass(frozen=True)
class SimulationSpec:
    """What to simulate.

    Attributes:
        shape: image / k-space size ``(H, W)``.
        num_coils: C (birdcage coils in one ring).
        num_slices: slices per volume.
        source: "shepp_logan" or "skimage".
        phase_strength: peak magnitude (radians) of the smooth synthetic phase.
        noise: std of complex Gaussian k-space noise, relative to the image maximum
            (the FFT is orthonormal, so this is also the per-pixel coil-image noise).
        recon_size: side of the stored ``reconstruction_rss`` (centre crop; fastMRI: 320).
        coil_radius: birdcage radius relative to the field of view (SigPy's ``r``).
    """

    shape: tuple[int, int] = (64, 64)
    num_coils: int = 8
    num_slices: int = 4
    source: str = "shepp_logan"
    phase_strength: float = 1.0
    noise: float = 0.0
    recon_size: int | None = None
    coil_radius: float = 1.5

    def __post_init__(self) -> None:
        if len(self.shape) != 2 or min(self.shape) < 8:
            raise ValueError(f"shape must be (H, W) with both >= 8; got {self.shape}")
        if int(self.num_coils) < 1 or int(self.num_slices) < 1:
            raise ValueError(f"num_coils and num_slices must be >= 1; got {self.num_coils}, {self.num_slices}")
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}; got {self.source!r}")
        if self.noise < 0 or self.phase_strength < 0:
            raise ValueError("noise and phase_strength must be >= 0")


def _smooth_phase(shape: tuple[int, int], strength: float, rng: np.random.Generator) -> np.ndarray:
    """A random low-order 2-D polynomial phase map scaled to peak ``strength`` radians."""
    H, W = shape
    y, x = np.meshgrid(np.linspace(-1, 1, H), np.linspace(-1, 1, W), indexing="ij")
    c = rng.normal(size=6)
    phi = c[0] * x + c[1] * y + c[2] * x * y + c[3] * x**2 + c[4] * y**2 + c[5]
    phi -= phi.mean()
    return strength * phi / max(float(np.abs(phi).max()), 1e-12)


def _skimage_image(name: str) -> np.ndarray:
    import skimage.data
    from skimage.color import rgb2gray

    img = np.asarray(getattr(skimage.data, name)(), dtype=np.float64)
    return rgb2gray(img[..., :3]) if img.ndim == 3 else img


def simulate_images(source: str, num: int, shape: tuple[int, int], *, phase_strength: float = 1.0,
                    seed: int = 0) -> np.ndarray:
    """``num`` complex images ``(num, H, W)``, magnitude in [0, 1], with smooth random phase.

    "shepp_logan": ``sigpy.shepp_logan`` rotated by U(-25, 25) degrees and scaled by
    U(0.75, 1.0) per image. "skimage": the bundled grey-scale images in turn
    (:data:`SKIMAGE_IMAGES`), each a random square crop of 60-100% of its side, resized.
    """
    import sigpy
    from skimage.transform import resize, rotate

    rng = np.random.default_rng(seed)
    H, W = int(shape[0]), int(shape[1])
    out = np.empty((int(num), H, W), dtype=np.complex128)
    base = np.abs(sigpy.shepp_logan((H, W))) if source == "shepp_logan" else None
    for i in range(int(num)):
        if source == "shepp_logan":
            img = rotate(base, rng.uniform(-25, 25), order=1)
            s = rng.uniform(0.75, 1.0)
            small = resize(img, (max(2, int(H * s)), max(2, int(W * s))), order=1, anti_aliasing=True)
            img = np.zeros((H, W))
            t, left = (H - small.shape[0]) // 2, (W - small.shape[1]) // 2
            img[t : t + small.shape[0], left : left + small.shape[1]] = small
        elif source == "skimage":
            full = _skimage_image(SKIMAGE_IMAGES[i % len(SKIMAGE_IMAGES)])
            side = int(min(full.shape) * rng.uniform(0.6, 1.0))
            r0 = rng.integers(0, full.shape[0] - side + 1)
            c0 = rng.integers(0, full.shape[1] - side + 1)
            img = resize(full[r0 : r0 + side, c0 : c0 + side], (H, W), order=1, anti_aliasing=True)
        else:
            raise ValueError(f"source must be one of {SOURCES}; got {source!r}")
        img = np.clip(img, 0, None)
        img = img / max(float(img.max()), 1e-12)
        out[i] = img * np.exp(1j * _smooth_phase((H, W), phase_strength, rng))
    return out


def birdcage_maps(num_coils: int, shape: tuple[int, int], *, radius: float = 1.5) -> np.ndarray:
    """``sigpy.mri.birdcage_maps`` for one ring of coils, normalised to ``sum_c |S_c|^2 = 1``.

    Shapes: -> ``(C, H, W)`` complex128.
    """
    import sigpy.mri

    S = sigpy.mri.birdcage_maps((int(num_coils), int(shape[0]), int(shape[1])), r=radius, nzz=int(num_coils))
    return S / np.sqrt(np.sum(np.abs(S) ** 2, axis=0, keepdims=True))


def simulate_kspace(images: np.ndarray, maps: np.ndarray, *, noise: float = 0.0,
                    rng: np.random.Generator | None = None) -> np.ndarray:
    """Fully sampled multi-coil k-space ``fft2c(S_c x)`` (+ noise ``noise * max|x|``).

    Shapes: images ``(S, H, W)``, maps ``(C, H, W)`` -> ``(S, C, H, W)`` complex64.
    """
    from convexdual.mri.coils import fft2c

    x = np.asarray(images)
    maps = np.asarray(maps)
    for name, a in (("images", x), ("maps", maps)):
        if not np.isfinite(a).all():
            raise ValueError(f"simulate_kspace: {name} contain {int(a.size - np.count_nonzero(np.isfinite(a)))} "
                             "NaN/Inf value(s); the k-space would be NaN")
    if not np.isfinite(noise) or noise < 0:
        raise ValueError(f"noise must be a finite number >= 0, got {noise!r}")
    k = fft2c(maps[None] * x[:, None])
    if noise > 0:
        g = rng if rng is not None else np.random.default_rng(0)
        sd = noise * float(np.abs(x).max()) / np.sqrt(2.0)
        k = k + sd * (g.standard_normal(k.shape) + 1j * g.standard_normal(k.shape))
    return k.astype(np.complex64)


def simulate_volume(path: str | Path, spec: SimulationSpec = SimulationSpec(), *, seed: int = 0,
                    patient_id: str | None = None) -> Path:
    """Simulate one volume and write it in the fastMRI multi-coil schema; returns the path."""
    from convexdual.mri.coils import center_crop, ifft2c, rss

    rng = np.random.default_rng(seed)
    images = simulate_images(spec.source, spec.num_slices, spec.shape, phase_strength=spec.phase_strength,
                             seed=int(rng.integers(2**31)))
    maps = birdcage_maps(spec.num_coils, spec.shape, radius=spec.coil_radius)
    k = simulate_kspace(images, maps, noise=spec.noise, rng=rng)
    side = spec.recon_size or min(min(spec.shape), 320)
    recon = center_crop(rss(ifft2c(k), axis=1), (side, side)).astype(np.float32)
    return write_fastmri_volume(path, k, reconstruction_rss=recon, acquisition=f"SIM_{spec.source.upper()}",
                                patient_id=patient_id or f"sim{seed:04d}",
                                extra_attrs={"simulated": True, "num_coils_sim": int(spec.num_coils),
                                             "simulation": _simulation_key(spec, seed, patient_id)})


def _simulation_key(spec: SimulationSpec, seed: int, patient_id: str | None) -> str:
    """What a simulated file was made from (spec, seed, patient id), stored in its attributes."""
    import json
    from dataclasses import asdict

    return json.dumps({"spec": asdict(spec), "seed": int(seed), "patient_id": patient_id}, sort_keys=True)


def _simulated_with(path: Path, key: str) -> bool:
    import h5py

    if not path.is_file():
        return False
    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("simulation") == key and "kspace" in f
    except OSError:
        return False


def simulate_dataset(directory: str | Path, num_volumes: int, spec: SimulationSpec = SimulationSpec(), *,
                     seed: int = 0, prefix: str = "sim", reuse: bool = False) -> list[Path]:
    """Write ``num_volumes`` files ``{prefix}{i:04d}.h5`` into ``directory`` (one patient each).

    With ``reuse``, a file already there that was simulated with the same spec, seed and patient id
    is kept (not rewritten, so its modification time, and any slice cache built from it, stay valid).
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(int(num_volumes)):
        path, pid = d / f"{prefix}{seed + i:04d}.h5", f"{prefix}{seed + i:04d}"
        if not (reuse and _simulated_with(path, _simulation_key(spec, seed + i, pid))):
            simulate_volume(path, spec, seed=seed + i, patient_id=pid)
        out.append(path)
    return out
