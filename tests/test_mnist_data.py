"""The MNIST IDX reader, on small files written here in the published format."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from convexdual.data.mnist import (
    MNIST_FILES,
    find_mnist_files,
    load_denoising_images,
    load_mnist,
    read_idx,
    write_idx,
)
from convexdual.errors import DataFormatError


def _raw_idx(a: np.ndarray) -> bytes:
    """The IDX bytes written independently of write_idx (struct, big endian)."""
    assert a.dtype == np.uint8
    return struct.pack(">BBBB", 0, 0, 0x08, a.ndim) + struct.pack(">" + "I" * a.ndim, *a.shape) + a.tobytes()


def _fake_mnist(root, n_train=30, n_test=12, size=28, gz=True, seed=0, layout=""):
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, size, size), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, size, size), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    d = root / layout if layout else root
    d.mkdir(parents=True, exist_ok=True)
    for role, a in arrays.items():
        raw = _raw_idx(a)
        name = MNIST_FILES[role] + (".gz" if gz else "")
        (d / name).write_bytes(gzip.compress(raw) if gz else raw)
    return arrays


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_matches_independently_written_bytes(tmp_path, gz):
    a = np.random.default_rng(1).integers(0, 256, (4, 5, 6), dtype=np.uint8)
    raw = _raw_idx(a)
    p = tmp_path / ("x.gz" if gz else "x")
    p.write_bytes(gzip.compress(raw) if gz else raw)
    out = read_idx(p)
    assert out.dtype == np.uint8 and out.shape == (4, 5, 6)
    np.testing.assert_array_equal(out, a)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.float32, np.float64])
def test_write_read_roundtrip(tmp_path, dtype):
    a = (np.arange(24).reshape(2, 3, 4) - 7).astype(dtype)
    if dtype == np.uint8:
        a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("a.idx", "a.idx.gz"):
        out = read_idx(write_idx(tmp_path / name, a))
        assert out.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(out, a)
    # the uncompressed file is byte-for-byte the independent encoding
    if dtype == np.uint8:
        assert (tmp_path / "a.idx").read_bytes() == _raw_idx(a)


def test_wrong_magic_is_a_clear_error(tmp_path):
    p = tmp_path / "train-images-idx3-ubyte"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    with pytest.raises(DataFormatError, match=r"wrong magic number 0x89504e47.*train-images-idx3-ubyte\.gz"):
        read_idx(p)


@pytest.mark.parametrize("gz", [True, False])
def test_truncated_file_is_a_clear_error(tmp_path, gz):
    raw = _raw_idx(np.zeros((10, 28, 28), np.uint8))[:-100]
    p = tmp_path / "t10k-images-idx3-ubyte"
    p.write_bytes(gzip.compress(raw) if gz else raw)
    with pytest.raises(DataFormatError, match=r"truncated.*\(10, 28, 28\).*download"):
        read_idx(p)


def test_truncated_gzip_stream_is_a_clear_error(tmp_path):
    blob = gzip.compress(_raw_idx(np.ones((50, 28, 28), np.uint8)))
    p = tmp_path / "train-images-idx3-ubyte.gz"
    p.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(DataFormatError, match="gzip.*truncated"):
        read_idx(p)


def test_trailing_bytes_and_tiny_files_rejected(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(_raw_idx(np.zeros((2, 3), np.uint8)) + b"xx")
    with pytest.raises(DataFormatError, match="2 bytes more"):
        read_idx(p)
    p.write_bytes(b"\x00\x00")
    with pytest.raises(DataFormatError, match="truncated"):
        read_idx(p)
    p.write_bytes(b"\x00\x00\x08\x03\x00\x00")
    with pytest.raises(DataFormatError, match="header"):
        read_idx(p)


def test_missing_files_name_what_to_download(tmp_path):
    _fake_mnist(tmp_path)
    (tmp_path / (MNIST_FILES["test_labels"] + ".gz")).unlink()
    with pytest.raises(DataFormatError) as err:
        find_mnist_files(tmp_path)
    msg = str(err.value)
    assert "): t10k-labels-idx1-ubyte[.gz]. Download" in msg  # only the missing file is listed
    assert "t10k-labels-idx1-ubyte.gz" in msg and "MNIST/raw" in msg and "--data" in msg
    with pytest.raises(DataFormatError, match="does not exist"):
        load_mnist(tmp_path / "nowhere")


@pytest.mark.parametrize("layout", ["", "MNIST/raw", "raw"])
@pytest.mark.parametrize("gz", [True, False])
def test_load_mnist_layouts_subsets_and_normalisation(tmp_path, layout, gz):
    arrays = _fake_mnist(tmp_path, gz=gz, layout=layout)
    split = load_mnist(tmp_path, num_train=10, num_test=None, seed=3)
    assert split.train.shape == (10, 28, 28) and split.test.shape == (12, 28, 28)  # full test set
    assert len(np.unique(split.train_index)) == 10
    raw_train = arrays["train_images"][split.train_index].astype(np.float64)
    # normalised by the kept training images' statistics
    assert split.mean == pytest.approx(raw_train.mean()) and split.std == pytest.approx(raw_train.std())
    np.testing.assert_allclose(split.train.mean(), 0.0, atol=1e-12)
    np.testing.assert_allclose(split.train.std(), 1.0, rtol=1e-12)
    np.testing.assert_allclose(split.test, (arrays["test_images"].astype(np.float64) - split.mean) / split.std)
    np.testing.assert_array_equal(split.train_labels, arrays["train_labels"][split.train_index])
    # same seed -> same subset; seed None -> the first images
    again = load_mnist(tmp_path, num_train=10, num_test=None, seed=3)
    np.testing.assert_array_equal(again.train_index, split.train_index)
    first = load_mnist(tmp_path, num_train=4, num_test=2, seed=None)
    np.testing.assert_array_equal(first.train_index, np.arange(4))


def test_load_mnist_whole_file_stats_and_bad_requests(tmp_path):
    arrays = _fake_mnist(tmp_path)
    split = load_mnist(tmp_path, num_train=5, stats="train")
    assert split.mean == pytest.approx(arrays["train_images"].astype(float).mean())
    with pytest.raises(ValueError, match="only 30"):
        load_mnist(tmp_path, num_train=31)
    with pytest.raises(ValueError, match="stats"):
        load_mnist(tmp_path, stats="global")


def test_mismatched_counts_and_wrong_rank(tmp_path):
    _fake_mnist(tmp_path, gz=False)
    (tmp_path / MNIST_FILES["train_labels"]).write_bytes(_raw_idx(np.zeros(29, np.uint8)))
    with pytest.raises(DataFormatError, match="30 images but .* 29 labels"):
        load_mnist(tmp_path)
    (tmp_path / MNIST_FILES["train_labels"]).write_bytes(_raw_idx(np.zeros((30, 2), np.uint8)))
    with pytest.raises(DataFormatError, match="1 dimension"):
        load_mnist(tmp_path)


def test_dotted_mirror_names_accepted(tmp_path):
    _fake_mnist(tmp_path, gz=False)
    for name in MNIST_FILES.values():
        (tmp_path / name).rename(tmp_path / name.replace("-idx", ".idx"))
    assert load_mnist(tmp_path, num_train=3, num_test=3).train.shape == (3, 28, 28)


def test_denoising_images_default_is_bundled_real_mnist(tmp_path):
    b = load_denoising_images(None, 6, None, seed=0)
    assert b.source.startswith("mnist-5k") and b.train.shape == (6, 28, 28) and b.test.shape == (4994, 28, 28)
    assert len(np.intersect1d(b.train_index, b.test_index)) == 0  # the test set is the rest of the 5,000
    np.testing.assert_allclose([b.train.mean(), b.train.std()], [0.0, 1.0], atol=1e-12)
    with pytest.raises(DataFormatError, match="neither a directory"):
        load_denoising_images(str(tmp_path / "nowhere"), 6, 4)
    d = load_denoising_images("sklearn-digits", 6, 4, upsample=2, seed=0)
    assert d.train.shape == (6, 16, 16) and d.test.shape == (4, 16, 16) and d.source == "sklearn-digitsx2"
    np.testing.assert_allclose(d.train.mean(), 0.0, atol=1e-12)
    _fake_mnist(tmp_path)
    m = load_denoising_images(tmp_path, 5, None)
    assert m.source.startswith("mnist:") and m.test.shape == (12, 28, 28)
    with pytest.raises(ValueError, match="explicit"):
        load_denoising_images("sklearn-digits", None, 4)
