"""Read a user's training pair from ``.npz`` / ``.npy`` files."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from convexdual.data.noise import add_noise
from convexdual.errors import DataFormatError

__all__ = ["load_pair"]


def load_pair(path: str | Path, *, noise: str = "gaussian", level: float = 0.5,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Load ``(noisy, clean)`` images from a file.

    * ``.npz`` with arrays ``noisy`` and ``clean`` (shapes ``(N, [C,] H, W)`` and ``(N, H, W)``);
    * ``.npz`` with only ``clean``, or a ``.npy`` of clean images ``(N, H, W)``: the noisy
      inputs are made with :func:`~convexdual.data.add_noise` (``noise``, ``level``, ``seed``).

    Raises:
        DataFormatError: missing/unreadable file, wrong keys, non-numeric arrays.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"data file {path} does not exist; give a .npz (arrays 'noisy', 'clean') or .npy (clean images)")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                keys = set(f.files)
                if "clean" not in keys:
                    raise DataFormatError(
                        f"{path} holds arrays {sorted(keys)}; expected 'clean' (and optionally 'noisy')")
                clean = np.asarray(f["clean"])
                noisy = np.asarray(f["noisy"]) if "noisy" in keys else None
        elif suffix == ".npy":
            clean, noisy = np.load(path, allow_pickle=False), None
        else:
            raise DataFormatError(f"unsupported data file {path.name!r}: use .npz (arrays 'noisy', 'clean') or .npy")
    except DataFormatError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DataFormatError(f"could not read {path}: {exc}. Save data with numpy.savez(path, noisy=..., clean=...)") from exc
    for name, arr in (("clean", clean), ("noisy", noisy)):
        if arr is not None and not np.issubdtype(arr.dtype, np.number):
            raise DataFormatError(f"array {name!r} in {path} has dtype {arr.dtype}; expected real numbers")
    if noisy is None:
        noisy = add_noise(clean.astype(np.float64), noise, level, seed=seed)
    return noisy, clean
