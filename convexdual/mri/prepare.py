"""From multi-coil k-space to training examples, and an on-disk cache streamed in batches.

Per slice (docs/math.md §9): undersample with a mask, estimate coil maps from the
undersampled k-space (its calibration block), SENSE-combine the zero-filled data
into one complex image, SENSE-combine the *fully sampled* data with the *same* maps
into the target, centre-crop both, and divide both by the zero-filled image's
maximum magnitude (a quantity known at test time; kept as ``scale`` to undo it).
Real and imaginary parts then become two separate single-channel examples.

:class:`SliceCache` stores prepared slices in an HDF5 file, one slice per chunk,
so training on datasets larger than memory reads only the batch it needs.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from convexdual.errors import DataFormatError
from convexdual.mri.coils import center_crop, estimate_coil_maps, sense_combine
from convexdual.mri.masks import MaskSpec

__all__ = ["PrepOptions", "PreparedSlice", "prepare_slice", "to_examples", "from_examples", "SliceCache",
           "build_cache", "cache_key"]

logger = logging.getLogger(__name__)

_CACHE_FORMAT = "convexdual.mri.SliceCache/1"


@dataclass(frozen=True)
class PrepOptions:
    """How a slice becomes a training pair.

    Attributes:
        mask: the undersampling :class:`MaskSpec` (its seed is offset per slice).
        map_method: "jsense" (paper) or "espirit".
        calib_width: k-space block used for the maps (at most the mask's calibration block).
        crop: centre crop ``(h, w)`` of the combined images, or None for none.
        per_slice_masks: draw a new mask per slice (seed + slice number) instead of one mask.
        map_options: extra SigPy app options.
    """

    mask: MaskSpec = MaskSpec()
    map_method: str = "jsense"
    calib_width: int = 24
    crop: tuple[int, int] | None = None
    per_slice_masks: bool = True
    map_options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class PreparedSlice:
    """One prepared slice (normalised units: divide by ``scale`` was applied).

    Shapes: ``zero_filled``, ``target`` ``(h, w)`` complex128; ``mask`` ``(H, W)`` bool.
    """

    zero_filled: np.ndarray
    target: np.ndarray
    scale: float
    mask: np.ndarray
    seconds_maps: float
    seconds_total: float


def prepare_slice(kspace: np.ndarray, options: PrepOptions, *, slice_number: int = 0,
                  device: object = None) -> PreparedSlice:
    """Mask, estimate maps, SENSE-combine input and target, crop and normalise one slice.

    Args:
        kspace: fully sampled ``(C, H, W)`` complex k-space (finite: NaN/Inf is refused).
        options: :class:`PrepOptions`.
        slice_number: offsets the mask seed when ``per_slice_masks``.
        device: SigPy device for the coil-map estimation.
    """
    t0 = time.perf_counter()
    k = np.asarray(kspace)
    if k.ndim != 3:
        raise ValueError(f"kspace must be (C, H, W); got {k.shape}")
    finite = np.isfinite(k)
    if not finite.all():
        bad = int(k.size - np.count_nonzero(finite))
        raise ValueError(f"kspace of slice {slice_number} contains {bad} NaN/Inf value(s) of {k.size}: the coil maps, "
                         "images and scale would all be NaN. Leave this slice out or repair its k-space")
    seed = options.mask.seed + (int(slice_number) if options.per_slice_masks else 0)
    mask = options.mask.make(k.shape[1:], seed=seed)
    under = k * mask
    t1 = time.perf_counter()
    maps = estimate_coil_maps(under, options.map_method, calib_width=options.calib_width, device=device,
                              options=options.map_options)
    t2 = time.perf_counter()
    zf = sense_combine(under, maps)
    tgt = sense_combine(k, maps)
    if options.crop is not None:
        zf, tgt = center_crop(zf, options.crop), center_crop(tgt, options.crop)
    scale = float(np.abs(zf).max())
    if not scale > 0:
        raise ValueError("the zero-filled image is identically zero (empty k-space or mask?)")
    return PreparedSlice(zero_filled=zf / scale, target=tgt / scale, scale=scale, mask=mask,
                         seconds_maps=t2 - t1, seconds_total=time.perf_counter() - t0)


def to_examples(zero_filled: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Real and imaginary parts as separate examples, ordered ``re_0, im_0, re_1, im_1, ...``.

    Shapes: ``(S, h, w)`` complex -> inputs ``(2S, 1, h, w)``, targets ``(2S, h, w)`` float64.
    """
    zf = np.asarray(zero_filled)
    tg = np.asarray(target)
    if zf.ndim == 2:
        zf, tg = zf[None], tg[None]
    if zf.shape != tg.shape or zf.ndim != 3:
        raise ValueError(f"zero_filled and target must both be (S, h, w); got {zf.shape} and {tg.shape}")
    x = np.stack([zf.real, zf.imag], axis=1).reshape(-1, 1, *zf.shape[1:]).astype(np.float64)
    y = np.stack([tg.real, tg.imag], axis=1).reshape(-1, *tg.shape[1:]).astype(np.float64)
    return x, y


def from_examples(parts: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_examples` on predictions: ``(2S, h, w)`` real -> ``(S, h, w)`` complex."""
    p = np.asarray(parts, dtype=np.float64)
    if p.ndim != 3 or p.shape[0] % 2:
        raise ValueError(f"expected (2S, h, w) with alternating real/imaginary parts; got {p.shape}")
    return p[0::2] + 1j * p[1::2]


class SliceCache:
    """Prepared slices in one HDF5 file, read lazily.

    Datasets: ``zero_filled`` / ``target`` ``(S, h, w)`` complex64 (one chunk per slice),
    ``scale`` ``(S,)``, ``volume`` ``(S,)`` (source file name), ``slice_index`` ``(S,)``.
    Example ``e`` is the real (even ``e``) or imaginary (odd ``e``) part of slice ``e // 2``.
    """

    def __init__(self, path: str | Path) -> None:
        import h5py

        self.path = Path(path)
        if not self.path.is_file() or not h5py.is_hdf5(self.path):
            raise DataFormatError(f"{self.path} is not a slice cache (HDF5) file")
        self._file = h5py.File(self.path, "r")
        if self._file.attrs.get("format") != _CACHE_FORMAT:
            self._file.close()
            raise DataFormatError(f"{self.path} is not a convexdual slice cache (format {_CACHE_FORMAT!r})")

    @property
    def num_slices(self) -> int:
        return int(self._file["zero_filled"].shape[0])

    @property
    def num_examples(self) -> int:
        return 2 * self.num_slices

    @property
    def image_shape(self) -> tuple[int, int]:
        return tuple(int(s) for s in self._file["zero_filled"].shape[1:])  # type: ignore[return-value]

    @property
    def scales(self) -> np.ndarray:
        return np.asarray(self._file["scale"][()], dtype=np.float64)

    @property
    def volumes(self) -> list[str]:
        return [v.decode() if isinstance(v, bytes) else str(v) for v in self._file["volume"][()]]

    def slices(self, index: Sequence[int] | slice | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(zero_filled, target)`` complex128 ``(s, h, w)`` for the given slices (all by default)."""
        idx = slice(None) if index is None else index
        if not isinstance(idx, slice):
            idx = np.sort(np.asarray(idx, dtype=np.int64))
        zf = np.asarray(self._file["zero_filled"][idx], dtype=np.complex128)
        tg = np.asarray(self._file["target"][idx], dtype=np.complex128)
        return zf, tg

    def examples(self, index: Sequence[int] | slice | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(inputs (2s, 1, h, w), targets (2s, h, w))`` of the given slices."""
        return to_examples(*self.slices(index))

    def iter_batches(self, slices_per_batch: int, *, rng: np.random.Generator) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """One epoch in random slice order; each batch has both parts of ``slices_per_batch`` slices."""
        order = rng.permutation(self.num_slices)
        for s in range(0, len(order), int(slices_per_batch)):
            yield self.examples(order[s : s + int(slices_per_batch)])

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "SliceCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def cache_key(refs: Sequence, options: PrepOptions) -> str:
    """What a cache was built from (a sha256 of the options and, per slice, its file's resolved path,
    size and modification time, and the slice index). A cache storing this key can be reused."""
    import hashlib
    from dataclasses import asdict

    files: dict[str, list] = {}
    for ref in refs:
        p = Path(ref.path)
        if str(p) not in files:
            st = p.stat()
            files[str(p)] = [str(p.resolve()), int(st.st_size), int(st.st_mtime_ns)]
    opts = {**asdict(options), "mask": asdict(options.mask)}
    text = json.dumps({"format": _CACHE_FORMAT, "options": opts,
                       "slices": [[*files[str(Path(r.path))], int(r.index)] for r in refs]},
                      sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _reusable(path: Path, key: str) -> dict[str, float] | None:
    """The stored preparation figures of an existing cache built from ``key``, else None."""
    import h5py

    if not path.is_file():
        return None
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != _CACHE_FORMAT or f.attrs.get("key") != key or "stats" not in f.attrs:
                return None
            stats = json.loads(f.attrs["stats"])
    except (OSError, ValueError, KeyError):
        return None
    return {**{k: float(v) for k, v in stats.items()}, "reused": 1.0}


def build_cache(refs: Sequence, path: str | Path, options: PrepOptions, *, device: object = None,
                progress: bool = False, reuse: bool = False) -> dict[str, float]:
    """Prepare every ``SliceRef`` and append it to a new cache file (one slice in memory at a time).

    With ``reuse``, an existing cache at ``path`` built from the same slices (same files, sizes and
    modification times) with the same options (:func:`cache_key`) is kept as it is and nothing is
    prepared; its stored figures are returned with ``reused = 1``.

    Returns timing and memory figures: ``seconds_per_slice``, ``seconds_maps_per_slice``,
    ``bytes_kspace_per_slice``, ``num_slices``, ``reused`` (0 or 1).
    """
    import h5py

    from convexdual.mri.fastmri import FastMRIVolume

    if len(refs) == 0:
        raise ValueError("no slices to prepare")
    path = Path(path)
    key = cache_key(refs, options)
    if reuse:
        stats = _reusable(path, key)
        if stats is not None:
            logger.info("reusing the slice cache %s (%d slices, same files and options)", path, len(refs))
            return stats
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".partial")
    opened: dict[Path, FastMRIVolume] = {}
    total = maps_t = 0.0
    kbytes = 0
    iterator = refs
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(refs, desc="prepare slices", unit="slice")
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = _CACHE_FORMAT
            dsets = None
            for n, ref in enumerate(iterator):
                vol = opened.get(ref.path)
                if vol is None:
                    for v in opened.values():
                        v.close()
                    opened = {ref.path: FastMRIVolume(ref.path)}
                    vol = opened[ref.path]
                k = vol.kspace(ref.index)
                kbytes = max(kbytes, k.nbytes)
                ps = prepare_slice(k, options, slice_number=n, device=device)
                total += ps.seconds_total
                maps_t += ps.seconds_maps
                if dsets is None:
                    h, w = ps.zero_filled.shape
                    dsets = {name: f.create_dataset(name, shape=(len(refs), h, w), dtype=np.complex64,
                                                    chunks=(1, h, w)) for name in ("zero_filled", "target")}
                    dsets["scale"] = f.create_dataset("scale", shape=(len(refs),), dtype=np.float64)
                    dsets["slice_index"] = f.create_dataset("slice_index", shape=(len(refs),), dtype=np.int64)
                    dsets["volume"] = f.create_dataset("volume", shape=(len(refs),), dtype=h5py.string_dtype())
                if ps.zero_filled.shape != dsets["zero_filled"].shape[1:]:
                    raise DataFormatError(f"{ref.path} slice {ref.index} gives images {ps.zero_filled.shape}, "
                                          f"others {dsets['zero_filled'].shape[1:]}; set a common crop")
                dsets["zero_filled"][n] = ps.zero_filled
                dsets["target"][n] = ps.target
                dsets["scale"][n] = ps.scale
                dsets["slice_index"][n] = ref.index
                dsets["volume"][n] = ref.path.name
            stats = {"num_slices": float(len(refs)), "seconds_per_slice": total / len(refs),
                     "seconds_maps_per_slice": maps_t / len(refs), "bytes_kspace_per_slice": float(kbytes)}
            f.attrs["key"] = key
            f.attrs["stats"] = json.dumps(stats)
    except BaseException:
        tmp.unlink(missing_ok=True)  # no half-written cache left behind
        raise
    finally:
        for v in opened.values():
            v.close()
    tmp.replace(path)
    return {**stats, "reused": 0.0}
