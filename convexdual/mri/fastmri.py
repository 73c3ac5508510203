"""Reader and writer for fastMRI multi-coil HDF5 volumes (the published schema).

A fastMRI multi-coil file (Zbontar et al., *fastMRI*, arXiv 1811.08839) holds one
volume:

* ``kspace``: ``(slices, coils, H, W)`` complex64, centred k-space (``H`` is the
  read-out direction, ``W`` the phase-encode columns);
* ``reconstruction_rss``: ``(slices, h, w)`` float32, the root-sum-of-squares of the
  fully sampled coil images, centre-cropped (absent in the challenge test set);
* ``ismrmrd_header``: a scalar byte string, the ISMRMRD XML header;
* ``mask`` (test / challenge files only): ``(W,)`` the sampled columns;
* attributes ``acquisition`` (e.g. ``"CORPD_FBK"``), ``max`` and ``norm`` (of the
  RSS volume), ``patient_id``, and in test files ``acceleration`` / ``num_low_frequency``.

:class:`FastMRIVolume` opens a file, checks the schema, and reads one slice at a
time (``volume.kspace(i)``), so a volume is never loaded whole.
:func:`write_fastmri_volume` writes the same schema (used by the simulator and by
tests, which then read the files back through the reader a user runs on real data).
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from convexdual.errors import DataFormatError

__all__ = [
    "FastMRIVolume", "SliceRef", "open_volume", "write_fastmri_volume", "list_volumes", "iter_slice_refs",
    "ismrmrd_header_xml", "REQUIRED_DATASETS",
]

logger = logging.getLogger(__name__)

REQUIRED_DATASETS = ("kspace", "ismrmrd_header")
_NS = "{http://www.ismrm.org/ISMRMRD}"


@dataclass(frozen=True)
class SliceRef:
    """One slice of one file: what a streaming loader iterates over."""

    path: Path
    index: int


class FastMRIVolume:
    """A fastMRI multi-coil file opened for lazy, per-slice reading.

    Use as a context manager (or call :meth:`close`)::

        with FastMRIVolume("file_brain_AXT2_200_2000019.h5") as vol:
            k = vol.kspace(0)            # (coils, H, W) complex64, one slice read from disk
            vol.num_slices, vol.attrs["acquisition"]

    Args:
        path: the ``.h5`` file.

    Raises:
        DataFormatError: the file is missing, is not HDF5, lacks a required dataset
            (``kspace``, ``ismrmrd_header``), or a dataset has the wrong dtype or shape.

    Shapes:
        ``kspace(i)`` -> ``(C, H, W)`` complex64; ``reconstruction_rss(i)`` -> ``(h, w)`` float32.
    """

    def __init__(self, path: str | Path) -> None:
        import h5py

        self.path = Path(path)
        if not self.path.is_file():
            raise DataFormatError(f"no fastMRI file at {self.path}")
        if not h5py.is_hdf5(self.path):
            raise DataFormatError(f"{self.path} is not an HDF5 file; fastMRI volumes are HDF5 (.h5) files "
                                  "with datasets 'kspace' and 'ismrmrd_header'")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as exc:  # truncated / locked / corrupt
            raise DataFormatError(f"{self.path} could not be opened as HDF5: {exc}") from exc
        try:
            self._validate()
        except Exception:
            self._file.close()
            raise

    # ---- schema checks ----------------------------------------------------------
    def _validate(self) -> None:
        import h5py

        f = self._file
        present = sorted(f.keys())
        missing = [name for name in REQUIRED_DATASETS if name not in f]
        if missing:
            raise DataFormatError(
                f"{self.path} is not a fastMRI multi-coil file: missing dataset(s) {missing}; "
                f"it has {present}. Required: {list(REQUIRED_DATASETS)} (plus 'reconstruction_rss' in train/val files)"
            )
        k = f["kspace"]
        if not isinstance(k, h5py.Dataset):
            raise DataFormatError(f"{self.path}: 'kspace' must be a dataset, found a {type(k).__name__}")
        if k.dtype.kind != "c":
            raise DataFormatError(f"{self.path}: 'kspace' must be complex (complex64 in fastMRI); got dtype {k.dtype}")
        if k.ndim == 3:
            raise DataFormatError(f"{self.path}: 'kspace' has shape {k.shape}, i.e. (slices, H, W): a single-coil "
                                  "file. Multi-coil data must be (slices, coils, H, W)")
        if k.ndim != 4 or min(k.shape) < 1:
            raise DataFormatError(f"{self.path}: 'kspace' must have shape (slices, coils, H, W) with every size "
                                  f">= 1; got {k.shape}")
        if "reconstruction_rss" in f:
            r = f["reconstruction_rss"]
            if r.dtype.kind != "f":
                raise DataFormatError(f"{self.path}: 'reconstruction_rss' must be real (float32); got {r.dtype}")
            if r.ndim != 3 or r.shape[0] != k.shape[0]:
                raise DataFormatError(f"{self.path}: 'reconstruction_rss' must be (slices, h, w) with "
                                      f"{k.shape[0]} slices like 'kspace'; got {r.shape}")
        if "mask" in f and f["mask"].shape != (k.shape[3],):
            raise DataFormatError(f"{self.path}: 'mask' must be ({k.shape[3]},) (one entry per k-space column); "
                                  f"got {f['mask'].shape}")
        h = f["ismrmrd_header"]
        if not isinstance(h, h5py.Dataset) or h.shape != () or h.dtype.kind not in "SOU":
            raise DataFormatError(f"{self.path}: 'ismrmrd_header' must be a scalar (XML) string dataset; "
                                  f"got shape {getattr(h, 'shape', None)} dtype {getattr(h, 'dtype', None)}")

    # ---- metadata ------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(slices, coils, H, W)``."""
        return tuple(int(s) for s in self._file["kspace"].shape)  # type: ignore[return-value]

    @property
    def num_slices(self) -> int:
        return self.shape[0]

    @property
    def num_coils(self) -> int:
        return self.shape[1]

    @property
    def attrs(self) -> dict[str, Any]:
        """The file's attributes as plain Python values (strings decoded)."""
        out: dict[str, Any] = {}
        for key, val in self._file.attrs.items():
            if isinstance(val, bytes):
                val = val.decode("utf-8", "replace")
            elif isinstance(val, np.generic):
                val = val.item()
            out[key] = val
        return out

    @property
    def has_rss(self) -> bool:
        return "reconstruction_rss" in self._file

    @property
    def header_xml(self) -> str:
        raw = self._file["ismrmrd_header"][()]
        return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)

    def matrix_sizes(self) -> dict[str, tuple[int, int, int]]:
        """``{"encoded": (x, y, z), "recon": (x, y, z)}`` from the ISMRMRD header (what is present).

        fastMRI uses the recon matrix (e.g. 320 x 320) as the centre-crop size.
        An unparsable header gives ``{}`` (logged), not an error: the k-space is still usable.
        """
        try:
            root = ET.fromstring(self.header_xml)
        except ET.ParseError as exc:
            logger.warning("%s: ismrmrd_header is not valid XML (%s)", self.path, exc)
            return {}
        out = {}
        for key, tag in (("encoded", "encodedSpace"), ("recon", "reconSpace")):
            node = _find(root, f"encoding/{tag}/matrixSize")
            if node is None:
                continue
            try:
                out[key] = tuple(int(_find(node, a).text) for a in ("x", "y", "z"))  # type: ignore[union-attr]
            except (AttributeError, TypeError, ValueError):
                continue
        return out

    # ---- lazy data access ------------------------------------------------------
    def _index(self, i: int) -> int:
        n = self.num_slices
        if not isinstance(i, (int, np.integer)) or not -n <= int(i) < n:
            raise IndexError(f"slice index must be an integer in [{-n}, {n}); got {i!r}")
        return int(i) % n

    def kspace(self, i: int) -> np.ndarray:
        """Slice ``i``'s k-space ``(coils, H, W)`` complex64 (read from disk now).

        Raises:
            DataFormatError: the slice holds NaN or Inf values (named by file and slice).
        """
        idx = self._index(i)
        k = np.asarray(self._file["kspace"][idx], dtype=np.complex64)
        finite = np.isfinite(k)
        if not finite.all():
            bad = int(k.size - np.count_nonzero(finite))
            raise DataFormatError(
                f"{self.path}: slice {idx} of 'kspace' contains {bad} NaN/Inf value(s) of {k.size}; the file is "
                "damaged or was written with invalid values. Leave this slice out (select slices with "
                "iter_slice_refs / skip_edge) or repair the file")
        return k

    def reconstruction_rss(self, i: int) -> np.ndarray:
        """Slice ``i``'s stored RSS reconstruction ``(h, w)`` float32."""
        if not self.has_rss:
            raise DataFormatError(f"{self.path} has no 'reconstruction_rss' (a challenge test file?)")
        return np.asarray(self._file["reconstruction_rss"][self._index(i)], dtype=np.float32)

    def mask(self) -> np.ndarray | None:
        """The stored column mask ``(W,)`` bool (test files), else None."""
        return np.asarray(self._file["mask"][()], dtype=bool) if "mask" in self._file else None

    def __len__(self) -> int:
        return self.num_slices

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(self.num_slices):
            yield self.kspace(i)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "FastMRIVolume":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FastMRIVolume({str(self.path)!r}, shape={self.shape})"


def _find(node: ET.Element, path: str) -> ET.Element | None:
    """``node.find`` with the ISMRMRD namespace, falling back to un-namespaced tags."""
    found = node.find("/".join(_NS + part for part in path.split("/")))
    return found if found is not None else node.find(path)


def open_volume(path: str | Path) -> FastMRIVolume:
    """Open a fastMRI multi-coil file (see :class:`FastMRIVolume`)."""
    return FastMRIVolume(path)


def list_volumes(directory: str | Path) -> list[Path]:
    """The ``*.h5`` files of a directory, sorted; raises DataFormatError when there are none."""
    d = Path(directory)
    if not d.is_dir():
        raise DataFormatError(f"{d} is not a directory of fastMRI .h5 files")
    files = sorted(p for p in d.iterdir() if p.suffix == ".h5" and p.is_file())
    if not files:
        raise DataFormatError(f"no .h5 files in {d}; expected fastMRI multi-coil volumes (e.g. file1000000.h5)")
    return files


def iter_slice_refs(paths: list[Path], *, skip_edge: int = 0) -> list[SliceRef]:
    """Every ``(file, slice)`` of the given volumes, optionally dropping ``skip_edge`` slices
    at each end (the outermost knee slices are mostly noise); only the headers are read."""
    refs = []
    for p in paths:
        with FastMRIVolume(p) as vol:
            n = vol.num_slices
        lo, hi = (skip_edge, n - skip_edge) if n > 2 * skip_edge else (0, n)
        refs.extend(SliceRef(Path(p), i) for i in range(lo, hi))
    return refs


def ismrmrd_header_xml(encoded: tuple[int, int], recon: tuple[int, int], *, field_of_view_mm: tuple[float, float] = (
        140.0, 140.0)) -> str:
    """A minimal ISMRMRD XML header with the encoded and recon matrix sizes (x = read-out, y = phase)."""
    def space(tag: str, xy: tuple[int, int]) -> str:
        return (f"<{tag}><matrixSize><x>{int(xy[0])}</x><y>{int(xy[1])}</y><z>1</z></matrixSize>"
                f"<fieldOfView_mm><x>{field_of_view_mm[0]}</x><y>{field_of_view_mm[1]}</y><z>3.0</z>"
                f"</fieldOfView_mm></{tag}>")
    return ('<?xml version="1.0" encoding="utf-8"?>\n<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">'
            f"<encoding>{space('encodedSpace', encoded)}{space('reconSpace', recon)}"
            "<trajectory>cartesian</trajectory></encoding></ismrmrdHeader>")


def write_fastmri_volume(
    path: str | Path,
    kspace: np.ndarray,
    *,
    reconstruction_rss: np.ndarray | None = None,
    header_xml: str | None = None,
    acquisition: str = "SIMULATED",
    patient_id: str = "simulated",
    mask: np.ndarray | None = None,
    extra_attrs: dict[str, Any] | None = None,
) -> Path:
    """Write one volume in the fastMRI multi-coil schema (chunked one slice per chunk).

    Args:
        path: output ``.h5`` file (parents are created).
        kspace: ``(slices, coils, H, W)`` complex; stored as complex64.
        reconstruction_rss: ``(slices, h, w)`` real; stored as float32, and its max and
            Frobenius norm become the ``max`` / ``norm`` attributes as in fastMRI.
        header_xml: ISMRMRD XML; by default one with encoded = (H, W) and recon = the RSS size.
        acquisition, patient_id: attributes.
        mask: optional ``(W,)`` column mask (as in challenge test files).
        extra_attrs: further attributes (scalars or strings).

    Raises:
        ValueError: wrong shapes or dtypes (with what is allowed).
    """
    import h5py

    k = np.asarray(kspace)
    if k.ndim != 4 or np.iscomplexobj(k) is False:
        raise ValueError(f"kspace must be complex with shape (slices, coils, H, W); got {k.dtype} {k.shape}")
    if not np.isfinite(k).all():
        raise ValueError("kspace contains NaN or inf")
    S, _, H, W = k.shape
    if reconstruction_rss is not None:
        r = np.asarray(reconstruction_rss)
        if r.ndim != 3 or r.shape[0] != S or np.iscomplexobj(r):
            raise ValueError(f"reconstruction_rss must be real (slices, h, w) with {S} slices; got {r.dtype} {r.shape}")
    if mask is not None and np.asarray(mask).shape != (W,):
        raise ValueError(f"mask must have shape (W,) = ({W},); got {np.asarray(mask).shape}")
    if header_xml is None:
        recon = (reconstruction_rss.shape[1], reconstruction_rss.shape[2]) if reconstruction_rss is not None else (H, W)
        header_xml = ismrmrd_header_xml((H, W), recon)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=k.astype(np.complex64), chunks=(1, *k.shape[1:]))
        f.create_dataset("ismrmrd_header", data=np.bytes_(header_xml.encode("utf-8")))
        if reconstruction_rss is not None:
            r32 = np.asarray(reconstruction_rss, dtype=np.float32)
            f.create_dataset("reconstruction_rss", data=r32, chunks=(1, *r32.shape[1:]))
            f.attrs["max"] = float(r32.max())
            f.attrs["norm"] = float(np.linalg.norm(r32))
        if mask is not None:
            f.create_dataset("mask", data=np.asarray(mask, dtype=bool))
        f.attrs["acquisition"] = acquisition
        f.attrs["patient_id"] = patient_id
        for key, val in (extra_attrs or {}).items():
            f.attrs[key] = val
    return path
