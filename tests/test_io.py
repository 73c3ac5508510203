"""Atomic writers, the JSON sanitiser and the canonical digest (convexdual/_io.py)."""

from __future__ import annotations

import enum
import json
import math
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from convexdual import _io
from convexdual._io import (atomic_open, atomic_save_npz, atomic_torch_save, atomic_write_bytes, atomic_write_json,
                            atomic_write_text, dumps_json, sha256_digest, to_jsonable)
from convexdual.result import Status

OLD = b"previous complete contents\n" * 50


class _Boom:
    """Raises while being serialised (pickle, numpy, torch)."""

    def __reduce__(self):
        raise RuntimeError("boom during serialisation")

    def __array__(self, *a, **k):
        raise RuntimeError("boom during serialisation")


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != "out.bin")


def _writers(path: Path):
    return {
        "bytes": lambda: atomic_write_bytes(path, b"new"),
        "text": lambda: atomic_write_text(path, "new"),
        "json": lambda: atomic_write_json(path, {"a": 1}),
        "npz": lambda: atomic_save_npz(path, a=np.arange(3)),
        "torch": lambda: atomic_torch_save({"a": torch.zeros(2)}, path),
    }


@pytest.mark.parametrize("kind", ["bytes", "text", "json", "npz", "torch"])
def test_failed_replace_leaves_old_file_and_no_temp(tmp_path, monkeypatch, kind):
    path = tmp_path / "out.bin"
    path.write_bytes(OLD)

    def fail(src, dst):
        raise OSError(28, "No space left on device (simulated)")

    monkeypatch.setattr(_io.os, "replace", fail)
    with pytest.raises(OSError, match="simulated"):
        _writers(path)[kind]()
    assert path.read_bytes() == OLD
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("kind", ["npz", "torch"])
def test_serialisation_error_leaves_old_file_and_no_temp(tmp_path, kind):
    path = tmp_path / "out.bin"
    path.write_bytes(OLD)
    with pytest.raises(Exception, match="boom"):
        if kind == "npz":
            atomic_save_npz(path, good=np.arange(10), bad=_Boom())
        else:
            atomic_torch_save({"good": torch.arange(10), "bad": _Boom()}, path)
    assert path.read_bytes() == OLD
    assert _leftovers(tmp_path) == []


def test_error_midway_through_a_stream_leaves_old_file(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(OLD)
    with pytest.raises(KeyboardInterrupt):
        with atomic_open(path, "wb") as f:
            f.write(b"half of the new file")
            raise KeyboardInterrupt  # Ctrl-C mid-write: BaseException is handled too
    assert path.read_bytes() == OLD
    assert _leftovers(tmp_path) == []


def test_unserialisable_json_and_text_never_touch_the_file(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(OLD)
    with pytest.raises(UnicodeEncodeError):
        atomic_write_text(path, "\udcff", encoding="utf-8")
    with pytest.raises(TypeError):
        atomic_write_bytes(path, "not bytes")  # type: ignore[arg-type]
    assert path.read_bytes() == OLD
    assert _leftovers(tmp_path) == []


def test_successful_writes_replace_contents_and_keep_permissions(tmp_path):
    path = tmp_path / "sub" / "dir" / "out.bin"  # parents are created
    atomic_write_bytes(path, b"one")
    assert path.read_bytes() == b"one"
    os.chmod(path, 0o640)
    atomic_write_text(path, "two\n")
    assert path.read_text() == "two\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    fresh = tmp_path / "fresh.txt"
    atomic_write_text(fresh, "x")
    umask = _io._umask()
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o666 & ~umask  # as open() would make it, not mkstemp's 0600
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.bin"]


def test_npz_goes_to_exactly_the_path_and_round_trips(tmp_path):
    path = tmp_path / "weights.bin"  # np.savez(str) would have written weights.bin.npz
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    atomic_save_npz(path, a=a, b=np.array([True, False]))
    assert not (tmp_path / "weights.bin.npz").exists()
    with np.load(path, allow_pickle=False) as z:
        assert z["a"].dtype == np.float32 and np.array_equal(z["a"], a)
        assert z["b"].tolist() == [True, False]
    with pytest.raises(TypeError, match="object"):
        atomic_save_npz(path, bad=np.array([{"x": 1}], dtype=object))
    with np.load(path, allow_pickle=False) as z:  # unchanged by the refused write
        assert np.array_equal(z["a"], a)


def test_torch_save_round_trips(tmp_path):
    path = tmp_path / "net.pt"
    atomic_torch_save({"w": torch.arange(5.0)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.arange(5.0))


def test_refuses_writing_onto_a_folder(tmp_path):
    with pytest.raises(IsADirectoryError, match="folder"):
        atomic_write_text(tmp_path, "x")


class _Color(enum.Enum):
    RED = "red"


def test_to_jsonable_is_the_superset_of_the_old_sanitisers():
    obj = {
        "f32": np.float32(1.5), "i64": np.int64(7), "b": np.bool_(True), "arr": np.array([[1, 2], [3, 4]]),
        "nan": float("nan"), "inf": math.inf, "ninf": -np.inf, "arr_nan": np.array([np.nan, np.inf, 1.0]),
        "path": Path("/tmp/x"), "status": Status.OPTIMAL, "enum": _Color.RED, "tuple": (1, 2.5),
        "set": {3, 1, 2}, (1, "a"): "tuple key", 5: "int key", _Color.RED: "enum key",
        "tensor": torch.tensor([1.0, 2.0]), "t0": torch.tensor(3), "cplx": 1 + 2j, "bytes": b"ok",
        "nested": [{"x": np.float64(0.25)}],
    }
    out = to_jsonable(obj)
    text = json.dumps(out, allow_nan=False)  # strict JSON: would raise on NaN/Inf
    back = json.loads(text)
    assert back["f32"] == 1.5 and type(back["i64"]) is int and back["b"] is True
    assert back["arr"] == [[1, 2], [3, 4]]
    assert back["nan"] is None and back["inf"] == "inf" and back["ninf"] == "-inf"
    assert back["arr_nan"] == [None, "inf", 1.0]
    assert back["path"] == "/tmp/x" and back["status"] == "optimal" and back["enum"] == "red"
    assert back["tuple"] == [1, 2.5] and back["set"] == [1, 2, 3]
    assert back['[1, "a"]'] == "tuple key" and back["5"] == "int key" and back["red"] == "enum key"
    assert back["tensor"] == [1.0, 2.0] and back["t0"] == 3 and back["cplx"] == {"real": 1.0, "imag": 2.0}
    assert back["bytes"] == "ok" and back["nested"] == [{"x": 0.25}]
    assert to_jsonable(object.__new__(_Boom)).startswith("<")  # falls back to str, never raises
    assert json.loads(dumps_json({"v": np.nan})) == {"v": None}


def test_atomic_write_json_writes_strict_json(tmp_path):
    path = tmp_path / "r.json"
    atomic_write_json(path, {"gap": np.float64(np.nan), "arr": np.arange(3)})
    assert json.loads(path.read_text()) == {"gap": None, "arr": [0, 1, 2]}
    assert "NaN" not in path.read_text()


def test_sha256_digest_distinguishes_types_values_and_bytes():
    a = np.arange(6, dtype=np.float64)
    base = sha256_digest(a)
    assert sha256_digest(a.copy()) == base
    assert sha256_digest(a.astype(np.float32)) != base  # dtype
    assert sha256_digest(a.reshape(2, 3)) != base  # shape
    b = a.copy()
    b[3] = np.nextafter(b[3], np.inf)  # one ulp in one entry
    assert sha256_digest(b) != base
    assert sha256_digest(np.asfortranarray(a.reshape(2, 3))) == sha256_digest(a.reshape(2, 3))  # values, not layout
    assert len({sha256_digest(x) for x in (1, 1.0, True, "1", [1], (1,), None)}) == 7
    assert sha256_digest(0.1) != sha256_digest(0.1 + 1e-17 * 10)
    assert sha256_digest({"a": 1, "b": 2}) == sha256_digest({"b": 2, "a": 1})
    assert sha256_digest({"a": 1, "b": 2}) != sha256_digest({"a": 2, "b": 1})
    assert sha256_digest(["ab", "c"]) != sha256_digest(["a", "bc"])  # framing
    assert sha256_digest(torch.arange(3)) != sha256_digest(torch.arange(3).double())
    with pytest.raises(TypeError, match="canonical"):
        sha256_digest(object())
