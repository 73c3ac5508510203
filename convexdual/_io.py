"""Atomic file writers, the one JSON sanitiser, and a stable sha256 digest.

Every writer here writes to a temporary file in the destination's own folder
(``.<name>.<random>.tmp``), flushes and fsyncs it, then ``os.replace``s it onto the
destination and fsyncs the folder. Readers therefore see either the previous file,
byte for byte, or the complete new one; never a partial file. If anything fails
(serialisation raises, the disk is full, ``os.replace`` fails, Ctrl-C), the temporary
file is removed, the previous file is left untouched and the exception propagates.

* :func:`atomic_write_bytes`, :func:`atomic_write_text`, :func:`atomic_write_json`,
  :func:`atomic_save_npz`, :func:`atomic_torch_save`; :func:`atomic_open` is the
  context manager they share (use it for any other serialiser that takes a file).
* :func:`to_jsonable`: numpy scalars/arrays, torch tensors, NaN/Inf, Paths, Enums,
  dataclasses, sets, tuples, non-string keys → strict JSON values (the superset of the
  sanitisers that grew in ``result.py``, ``experiments/mnist/common.py``, ``demo.py``,
  ``experiments/mri.py`` and ``cli_certify.py``).
* :func:`sha256_digest`: a canonical, type-aware sha256 of nested Python/numpy data
  (used by checkpoint fingerprints and the MNIST experiment unit keys).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import enum
import hashlib
import json
import math
import os
import tempfile
from pathlib import Path, PurePath
from typing import IO, Any, Iterator

import numpy as np

__all__ = ["atomic_open", "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_save_npz",
           "atomic_torch_save", "to_jsonable", "dumps_json", "sha256_digest"]

_TMP_SUFFIX = ".tmp"


# --------------------------------------------------------------------------------------------- atomic writes
def _umask() -> int:
    """The process umask (read from /proc where possible; ``os.umask`` round trip elsewhere)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (POSIX); silently skipped where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", *, encoding: str | None = "utf-8",
                fsync: bool = True) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing; on a clean exit it replaces ``path``.

    ``mode`` is ``"wb"``, ``"w+b"`` (binary, readable too) or ``"w"`` (text, ``encoding``). The parent folder is created if
    needed. The new file gets the permissions of the file it replaces (else the umask
    default, as ``open`` would). On any exception inside the block (or while finishing)
    the temporary file is deleted, ``path`` is unchanged, and the exception propagates.

    Raises:
        ValueError: ``mode`` is not a write mode this supports.
        IsADirectoryError: ``path`` is an existing folder.
    """
    if mode not in ("wb", "w+b", "w"):
        raise ValueError(f"atomic_open supports mode 'wb', 'w+b' or 'w', got {mode!r}")
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {path}: it is an existing folder")
    folder = path.parent if str(path.parent) else Path(".")
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=_TMP_SUFFIX)
    tmp = Path(tmp_name)
    try:
        try:
            st_mode = path.stat().st_mode & 0o7777
        except OSError:
            st_mode = 0o666 & ~_umask()
        with contextlib.suppress(OSError, NotImplementedError):
            os.chmod(tmp, st_mode)
        if mode in ("wb", "w+b"):
            f: IO[Any] = os.fdopen(fd, mode)
        else:
            f = os.fdopen(fd, "w", encoding=encoding, newline="")
        fd = -1  # owned by f now
        with f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if fsync:
        _fsync_dir(folder)


def atomic_write_bytes(path: str | os.PathLike, data: bytes | bytearray | memoryview) -> Path:
    """Write ``data`` to ``path`` atomically; return the path."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"atomic_write_bytes needs bytes, got {type(data).__name__}")
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, *, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (newlines written as given); return the path."""
    if not isinstance(text, str):
        raise TypeError(f"atomic_write_text needs a str, got {type(text).__name__}")
    data = text.encode(encoding)  # encode first: an unencodable text never touches the disk
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def dumps_json(obj: Any, *, indent: int | None = 2, sort_keys: bool = False) -> str:
    """``json.dumps(to_jsonable(obj))``: always strict JSON (no NaN/Infinity tokens)."""
    return json.dumps(to_jsonable(obj), indent=indent, sort_keys=sort_keys, allow_nan=False)


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2, sort_keys: bool = False) -> Path:
    """Sanitise ``obj`` with :func:`to_jsonable` and write it as strict JSON (trailing newline), atomically.

    The whole text is built before the file is opened, so a value that cannot be
    serialised leaves the previous file as it was.
    """
    return atomic_write_text(path, dumps_json(obj, indent=indent, sort_keys=sort_keys) + "\n")


def atomic_save_npz(path: str | os.PathLike, *, compressed: bool = False, **arrays: Any) -> Path:
    """``np.savez`` (``compressed``: ``np.savez_compressed``) of ``arrays`` to exactly ``path``, atomically.

    Unlike ``np.savez(str_path)``, no ``.npz`` suffix is appended: the file is ``path``.
    Object arrays are refused (they would need pickle to load).
    """
    for name, a in arrays.items():
        if isinstance(a, np.ndarray) and a.dtype.hasobject:
            raise TypeError(f"atomic_save_npz: array {name!r} has dtype object, which cannot be loaded without "
                            "pickle; convert it to a numeric/string array")
    saver = np.savez_compressed if compressed else np.savez
    with atomic_open(path, "wb") as f:
        saver(f, **arrays)
    return Path(path)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)`` atomically (same argument order as ``torch.save``)."""
    import torch

    with atomic_open(path, "wb") as f:
        torch.save(obj, f)
    return Path(path)


# --------------------------------------------------------------------------------------------- JSON
def _json_float(x: float) -> float | str | None:
    if math.isfinite(x):
        return x
    if math.isnan(x):
        return None
    return "inf" if x > 0 else "-inf"


def _json_key(k: Any) -> str:
    if isinstance(k, str) and not isinstance(k, enum.Enum):
        return k
    v = to_jsonable(k)
    return v if isinstance(v, str) else json.dumps(v, allow_nan=False)


def to_jsonable(obj: Any) -> Any:
    """A strict-JSON-safe copy of ``obj``.

    * dict → dict with string keys (an Enum key → its value; other non-str keys → their
      JSON text, e.g. ``(1, 2)`` → ``"[1, 2]"``, ``3`` → ``"3"``); list/tuple/set/frozenset → list
      (sets sorted when their items allow it);
    * numpy scalars → Python scalars; numpy arrays and torch tensors → nested lists;
    * float NaN → ``None``; +Inf/-Inf → ``"inf"``/``"-inf"`` (also inside arrays);
    * ``Path`` → str; ``Enum`` → its value (so a str enum such as ``Status`` → its string);
    * dataclass instance → dict of its fields; ``datetime``/``date`` → ISO text;
      bytes → UTF-8 text (else its repr); complex → ``{"real", "imag"}``;
    * anything else → ``str(obj)`` (never raises).
    """
    if obj is None or isinstance(obj, bool):
        return obj
    if isinstance(obj, enum.Enum):
        return to_jsonable(obj.value)
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return _json_float(float(obj))
    if isinstance(obj, str):
        return str(obj)
    if isinstance(obj, complex):
        return {"real": _json_float(obj.real), "imag": _json_float(obj.imag)}
    if isinstance(obj, dict):
        return {_json_key(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        items = [to_jsonable(v) for v in obj]
        with contextlib.suppress(TypeError):
            items.sort()
        return items
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, (_dt.datetime, _dt.date, _dt.time)):
        return obj.isoformat()
    if isinstance(obj, (bytes, bytearray, memoryview)):
        b = bytes(obj)
        try:
            return b.decode("utf-8")
        except UnicodeDecodeError:
            return repr(b)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    mod = type(obj).__module__ or ""
    if mod.startswith("torch") and hasattr(obj, "detach") and hasattr(obj, "tolist"):
        return to_jsonable(obj.detach().cpu().tolist())
    if hasattr(obj, "__array__") and not isinstance(obj, type):
        with contextlib.suppress(Exception):
            return to_jsonable(np.asarray(obj).tolist())
    return str(obj)


# --------------------------------------------------------------------------------------------- digests
def _feed(h: Any, obj: Any) -> None:
    """Feed a canonical, type-tagged, length-prefixed encoding of ``obj`` into ``h``."""
    def tag(t: bytes, payload: bytes = b"") -> None:
        h.update(t + len(payload).to_bytes(8, "little") + payload)

    if obj is None:
        tag(b"N")
    elif isinstance(obj, bool):
        tag(b"B", b"1" if obj else b"0")
    elif isinstance(obj, enum.Enum):
        tag(b"E", type(obj).__qualname__.encode())
        _feed(h, obj.value)
    elif isinstance(obj, np.ndarray):
        a = np.ascontiguousarray(obj)
        if a.dtype.hasobject:
            raise TypeError("sha256_digest: object arrays have no stable byte representation")
        tag(b"A", f"{a.dtype.str}|{a.shape}".encode())
        h.update(a.nbytes.to_bytes(8, "little"))
        h.update(a.reshape(-1).view(np.uint8))  # no copy for contiguous arrays
    elif isinstance(obj, np.generic):
        _feed(h, np.asarray(obj))
    elif isinstance(obj, int):
        tag(b"I", str(int(obj)).encode())
    elif isinstance(obj, float):
        tag(b"F", float(obj).hex().encode())  # exact: 0.1 and 0.1000000000000001 differ
    elif isinstance(obj, str):
        tag(b"S", obj.encode("utf-8", "surrogatepass"))
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        tag(b"Y", bytes(obj))
    elif isinstance(obj, PurePath):
        tag(b"P", str(obj).encode("utf-8", "surrogatepass"))
    elif isinstance(obj, (list, tuple)):
        tag(b"L" if isinstance(obj, list) else b"T", str(len(obj)).encode())
        for v in obj:
            _feed(h, v)
    elif isinstance(obj, dict):
        # order-independent: each (key, value) pair is digested, the pair digests sorted
        pairs = []
        for k, v in obj.items():
            hp = hashlib.sha256()
            _feed(hp, k)
            _feed(hp, v)
            pairs.append(hp.digest())
        tag(b"D", str(len(pairs)).encode())
        for p in sorted(pairs):
            h.update(p)
    elif isinstance(obj, (set, frozenset)):
        items = sorted(sha256_digest(v).encode() for v in obj)
        tag(b"Z", str(len(items)).encode())
        for p in items:
            h.update(p)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        tag(b"C", type(obj).__qualname__.encode())
        _feed(h, {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)})
    elif hasattr(obj, "detach") and hasattr(obj, "cpu") and hasattr(obj, "numpy"):  # torch tensor
        t = obj.detach().cpu().contiguous()
        tag(b"X", str(t.dtype).encode())
        _feed(h, tuple(int(s) for s in t.shape))
        import torch

        _feed(h, t.reshape(-1).view(torch.uint8).numpy())
    else:
        raise TypeError(f"sha256_digest: no canonical encoding for {type(obj).__name__}")


def sha256_digest(*parts: Any) -> str:
    """Hex sha256 of ``parts`` under a canonical encoding.

    Equal values give equal digests across runs and machines; the encoding tags types
    (``1`` ≠ ``1.0`` ≠ ``True`` ≠ ``"1"``, ``[1]`` ≠ ``(1,)``), floats exactly (hex), arrays by
    dtype, shape and bytes (C order), dicts independently of insertion order.

    Raises:
        TypeError: a value with no canonical encoding (an arbitrary object).
    """
    h = hashlib.sha256()
    _feed(h, list(parts))
    return h.hexdigest()
