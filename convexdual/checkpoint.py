"""Solver checkpoints that load without executing anything, and problem fingerprints.

Format (version 1)
------------------
A checkpoint is one uncompressed ``.npz`` file (a zip archive), loaded with
``np.load(allow_pickle=False)``: nothing in it is ever unpickled, so a crafted file cannot
run code. Its zip comment (the file's last 82 bytes) is ``convexdual-sha256:<hex>``, the
sha256 of every byte before the hex digest; it is checked before anything is parsed, so a
truncated file or any changed byte is refused (each member's CRC-32 is checked as well). Members:

* ``header``: a ``uint8`` array holding UTF-8 JSON (strict JSON: no NaN tokens)::

      {"format": "convexdual-checkpoint", "version": 1, "solver": "fista",
       "finished": false, "fingerprint": "<sha256 hex>",
       "fingerprint_parts": {"inputs": "<hex>", "targets": "<hex>", "gates": "<hex>", "settings": "<hex>"},
       "problem": {"n": ..., "d": ..., "P": ..., "kernel_size": ..., "beta": ..., "loss": ..., ...},
       "arrays": ["a0", "a1", ...], "created": "<UTC ISO time>", "convexdual_version": "0.1.0",
       "state": <node>}

* ``a0``, ``a1``, ...: the arrays referenced from ``state`` (exact dtype, byte order, shape, order).

``state`` is the solver's state dict encoded as a tree of JSON nodes:

====================================  ===================================================
Python value                          node
====================================  ===================================================
``None``, ``bool``, ``int``, ``str``  the JSON value itself (ints of any size)
finite ``float``                      a JSON number (``repr``: round-trips exactly; ``1.0`` stays a float)
NaN / +Inf / -Inf                     ``{"$": "float", "v": "nan" | "inf" | "-inf"}``
``list``                              a JSON array of nodes
``tuple``                             ``{"$": "tuple", "items": [node, ...]}``
``dict`` (any hashable encodable keys)  ``{"$": "dict", "items": [[key node, value node], ...]}`` (order kept)
``np.ndarray``                        ``{"$": "ndarray", "ref": "a3"}``
numpy scalar (``np.int64(3)``, ...)   ``{"$": "npscalar", "ref": "a4"}`` (a 0-d array; the type is kept)
``convexdual.Status``                 ``{"$": "status", "v": "optimal"}`` (the only enum allowed)
``torch.Tensor``                      ``{"$": "tensor", "ref": "a5", "dtype": "torch.float32",
                                      "shape": [...], "raw": false, "requires_grad": false}``
                                      (on CPU; dtypes numpy lacks, e.g. bfloat16, stored as raw bytes)
====================================  ===================================================

This covers every state the solvers save: iterates and RNG states (tensors), numpy
``bit_generator.state`` dicts (128-bit ints), torch optimiser ``state_dict()`` (int keys,
tuple ``betas``), histories (lists of dicts), ``projection_rows`` (tuple keys). Any other
type is refused at save time with the path of the offending entry.

``finished``
------------
``save_checkpoint(..., finished=True)`` records that the run ended (whatever its status) and
that ``state`` is its *final* state. :func:`load_checkpoint` returns it as
:class:`CheckpointState` with ``finished=True``: a solver resuming from it must not run
another round but return what the state records (``load_checkpoint(...).finished`` is the
flag to test).

Fingerprints
------------
:func:`problem_fingerprint` is a sha256 over the bytes (with dtype and shape) of the inputs,
targets and gates, and the kernel size, beta (exact), loss (name and every parameter, e.g.
Huber's ``delta``), ``residual`` and ``residual_channel``. Two problems whose noisy inputs
differ in one pixel have different fingerprints, even with equal sizes and sums.

Errors
------
Every refusal raises :class:`~convexdual.errors.CheckpointError` naming the file, what is
wrong and what to do: missing, empty, truncated or corrupt file, not a convexdual checkpoint
(e.g. an old ``torch.save`` checkpoint), another format version, another solver, another
problem (naming which of inputs/targets/patterns/settings differ).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import math
import os
import struct
import zipfile
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convexdual._io import atomic_open, sha256_digest
from convexdual.errors import CheckpointError
from convexdual.result import Status

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "CheckpointState", "save_checkpoint", "load_checkpoint",
           "read_checkpoint", "checkpoint_finished", "problem_fingerprint", "problem_fingerprint_parts",
           "encode_state", "decode_state"]

FORMAT_NAME = "convexdual-checkpoint"
FORMAT_VERSION = 1
_HEADER = "header"
_MAX_HEADER_BYTES = 1 << 30
_SEAL_PREFIX = b"convexdual-sha256:"
_SEAL_LEN = len(_SEAL_PREFIX) + 64

_WHAT_TO_DO = "delete it (or choose another checkpoint) and start without resume_from"


# --------------------------------------------------------------------------------------------- fingerprints
def _loss_params(loss: Any) -> dict[str, Any]:
    if is_dataclass(loss) and not isinstance(loss, type):
        return {f.name: getattr(loss, f.name) for f in fields(loss)}
    return {"name": getattr(loss, "name", type(loss).__name__)}


def problem_fingerprint_parts(problem: Any) -> dict[str, str]:
    """Digests of the parts of ``problem`` that define program (4): inputs, targets, gates, settings.

    ``settings`` covers kernel size, beta, the loss (name and parameters), ``residual`` and
    ``residual_channel``. Images sharded over ranks: the digests cover every rank's shard in rank
    order (a collective: every rank calls it).
    """
    comm = getattr(problem, "comm", None)
    whole = comm.digest if (comm is not None and comm.world > 1) else (lambda h: h)  # every rank's images
    return {
        "inputs": whole(sha256_digest(np.asarray(problem.inputs))),
        "targets": whole(sha256_digest(np.asarray(problem.targets))),
        "gates": sha256_digest(np.asarray(problem.patterns.gates)),
        "settings": sha256_digest({"kernel_size": int(problem.kernel_size), "beta": float(problem.beta),
                                   "loss": _loss_params(problem.loss), "residual": bool(problem.residual),
                                   "residual_channel": int(problem.residual_channel)}),
    }


def _combine(parts: dict[str, str]) -> str:
    return sha256_digest("convexdual-problem-v1", parts)


def problem_fingerprint(problem: Any) -> str:
    """Hex sha256 identifying ``problem`` (inputs, targets, gates, kernel, beta, loss, residual)."""
    return _combine(problem_fingerprint_parts(problem))


def _problem_summary(problem: Any) -> dict[str, Any]:
    return {"inputs_shape": list(np.shape(problem.inputs)), "P": int(problem.patterns.num_patterns),
            "kernel_size": int(problem.kernel_size), "beta": float(problem.beta),
            "loss": str(getattr(problem.loss, "name", problem.loss)), "residual": bool(problem.residual),
            "residual_channel": int(problem.residual_channel)}


# --------------------------------------------------------------------------------------------- encoding
class _Encoder:
    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}

    def _add(self, a: np.ndarray) -> str:
        name = f"a{len(self.arrays)}"
        self.arrays[name] = a
        return name

    def encode(self, v: Any, where: str) -> Any:
        import torch

        if v is None or type(v) in (bool, str):
            return v
        if isinstance(v, Status):
            return {"$": "status", "v": v.value}
        if isinstance(v, np.generic):
            a = np.asarray(v)
            if a.dtype.hasobject:
                raise TypeError(f"checkpoint state {where}: numpy object scalar cannot be stored without pickle")
            return {"$": "npscalar", "ref": self._add(a)}
        if type(v) is int:
            return v
        if type(v) is float:
            if math.isfinite(v):
                return v
            return {"$": "float", "v": "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")}
        if type(v) is list:
            return [self.encode(x, f"{where}[{i}]") for i, x in enumerate(v)]
        if type(v) is tuple:
            return {"$": "tuple", "items": [self.encode(x, f"{where}[{i}]") for i, x in enumerate(v)]}
        if type(v) is dict:
            return {"$": "dict", "items": [[self.encode(k, f"{where} key {k!r}"), self.encode(x, f"{where}[{k!r}]")]
                                           for k, x in v.items()]}
        if type(v) is np.ndarray:
            if v.dtype.hasobject:
                raise TypeError(f"checkpoint state {where}: numpy array of dtype object cannot be stored without "
                                "pickle; store a numeric array or a list")
            return {"$": "ndarray", "ref": self._add(v)}
        if isinstance(v, torch.Tensor):
            t = v.detach().cpu()
            node: dict[str, Any] = {"$": "tensor", "dtype": str(t.dtype), "shape": [int(s) for s in t.shape],
                                    "requires_grad": bool(v.requires_grad)}
            try:
                a = t.numpy().copy()
                node["raw"] = False
            except (TypeError, RuntimeError):  # bfloat16, float8, ...: keep the exact bytes
                a = t.contiguous().reshape(-1).view(torch.uint8).numpy().copy()
                node["raw"] = True
            node["ref"] = self._add(a)
            return node
        raise TypeError(f"checkpoint state {where}: cannot store a {type(v).__module__}.{type(v).__qualname__} "
                        "(supported: None, bool, int, float, str, list, tuple, dict, numpy arrays and scalars, "
                        "torch tensors)")


def encode_state(state: dict[str, Any]) -> tuple[Any, dict[str, np.ndarray]]:
    """``state`` → (JSON node tree, arrays by name); see the module docstring for the node format."""
    if not isinstance(state, dict):
        raise TypeError(f"checkpoint state must be a dict, got {type(state).__name__}")
    enc = _Encoder()
    tree = enc.encode(state, "state")
    return tree, enc.arrays


class _Corrupt(Exception):
    pass


def _torch_dtype(name: str) -> Any:
    import torch

    dt = getattr(torch, name.removeprefix("torch."), None) if name.startswith("torch.") else None
    if not isinstance(dt, torch.dtype):
        raise _Corrupt(f"unknown tensor dtype {name!r}")
    return dt


def decode_state(tree: Any, arrays: dict[str, np.ndarray]) -> Any:
    """Inverse of :func:`encode_state` (``arrays``: name → array)."""
    import torch

    def arr(node: dict[str, Any]) -> np.ndarray:
        ref = node.get("ref")
        if not isinstance(ref, str) or ref not in arrays:
            raise _Corrupt(f"reference to a missing array {ref!r}")
        a = arrays[ref]
        return a if a.flags.writeable else a.copy()

    def dec(n: Any) -> Any:
        if n is None or isinstance(n, (bool, int, float, str)):
            return n
        if isinstance(n, list):
            return [dec(x) for x in n]
        if not isinstance(n, dict) or not isinstance(n.get("$"), str):
            raise _Corrupt(f"unexpected node {str(n)[:80]!r}")
        tag = n["$"]
        if tag == "float":
            val = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}.get(n.get("v"))
            if val is None:
                raise _Corrupt(f"bad float node {n!r}")
            return val
        if tag == "status":
            try:
                return Status(n.get("v"))
            except ValueError:
                raise _Corrupt(f"unknown status {n.get('v')!r}") from None
        if tag == "tuple":
            return tuple(dec(x) for x in _items(n))
        if tag == "dict":
            out = {}
            for kv in _items(n):
                if not (isinstance(kv, list) and len(kv) == 2):
                    raise _Corrupt("bad dict item")
                out[dec(kv[0])] = dec(kv[1])
            return out
        if tag == "ndarray":
            return arr(n)
        if tag == "npscalar":
            a = arr(n)
            if a.ndim != 0:
                raise _Corrupt("numpy scalar stored with a shape")
            return a[()]
        if tag == "tensor":
            a = arr(n)
            dt = _torch_dtype(str(n.get("dtype")))
            shape = [int(s) for s in n.get("shape", [])]
            t = torch.from_numpy(np.ascontiguousarray(a))
            if n.get("raw"):
                t = t.view(dt)
            if t.dtype != dt:
                raise _Corrupt(f"tensor stored as {t.dtype}, header says {dt}")
            t = t.reshape(shape)
            if n.get("requires_grad"):
                t.requires_grad_(True)
            return t
        raise _Corrupt(f"unknown node type {tag!r}")

    def _items(n: dict[str, Any]) -> list[Any]:
        items = n.get("items")
        if not isinstance(items, list):
            raise _Corrupt(f"{n['$']} node without items")
        return items

    return dec(tree)


# --------------------------------------------------------------------------------------------- files
@dataclass(frozen=True)
class CheckpointState:
    """A loaded checkpoint.

    Attributes:
        state: the solver's state dict, exactly as it was saved (arrays bit-identical).
        finished: True when the run that wrote it had ended: ``state`` is its final state
            and a resumed solve must return it without running another round.
        solver: the solver name recorded in the file.
        fingerprint: the problem fingerprint recorded in the file.
        path: the file.
        header: the full header (format version, problem summary, creation time, ...).
    """

    state: dict[str, Any]
    finished: bool
    solver: str
    fingerprint: str
    path: Path
    header: dict[str, Any] = field(repr=False, default_factory=dict)


def save_checkpoint(path: str | os.PathLike, solver: str, problem: Any, state: dict[str, Any], *,
                    finished: bool = False) -> Path:
    """Atomically write ``state`` of ``solver`` on ``problem`` to ``path`` (format version 1).

    ``finished=True`` marks the state as the final one of a run that ended. The previous
    file at ``path`` stays intact until the new one is complete.

    Raises:
        TypeError: ``state`` holds a value the format cannot store (the message names it).
    """
    import convexdual

    tree, arrays = encode_state(state)
    parts = problem_fingerprint_parts(problem)
    header = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "solver": str(solver), "finished": bool(finished),
              "fingerprint": _combine(parts), "fingerprint_parts": parts, "problem": _problem_summary(problem),
              "arrays": list(arrays), "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "convexdual_version": getattr(convexdual, "__version__", "?"), "state": tree}
    text = json.dumps(header, allow_nan=False, separators=(",", ":"))
    members = {_HEADER: np.frombuffer(text.encode("utf-8"), dtype=np.uint8), **arrays}
    comm = getattr(problem, "comm", None)
    if comm is None or comm.is_root:  # sharded images: the state is the same on every rank; rank 0 writes it
        with atomic_open(path, "w+b") as f:
            np.savez(f, **members)
            _seal(f)
    if comm is not None:
        comm.barrier()
    return Path(path)


def _seal(f: Any) -> None:
    """Append the whole-file sha256 as the zip archive comment (see :func:`_check_seal`)."""
    end = f.seek(0, os.SEEK_END)
    f.seek(end - 22)
    eocd = f.read(22)
    if len(eocd) != 22 or eocd[:4] != b"PK\x05\x06" or eocd[20:22] != b"\x00\x00":
        raise RuntimeError("np.savez wrote an unexpected zip layout (no end-of-central-directory record at the end)")
    f.seek(end - 2)
    f.write(struct.pack("<H", _SEAL_LEN))
    f.seek(0)
    digest = _hash_stream(f, end)
    f.seek(end)
    f.write(_SEAL_PREFIX + digest.encode("ascii"))


def _hash_stream(f: Any, size: int) -> str:
    h = hashlib.sha256()
    left = size
    while left > 0:
        chunk = f.read(min(left, 1 << 22))
        if not chunk:
            break
        h.update(chunk)
        left -= len(chunk)
    return h.hexdigest()


def _check_seal(path: Path, size: int) -> None:
    """The file's last bytes are ``_SEAL_PREFIX + sha256(everything before them)`` (the zip comment)."""
    if size < 22 + _SEAL_LEN:
        raise _Corrupt(f"only {size} bytes: too short to be a complete checkpoint (truncated)")
    with open(path, "rb") as f:
        f.seek(size - _SEAL_LEN - 2)
        tail = f.read(_SEAL_LEN + 2)
        if tail[2:2 + len(_SEAL_PREFIX)] != _SEAL_PREFIX or struct.unpack("<H", tail[:2])[0] != _SEAL_LEN:
            raise _Corrupt("no convexdual seal at the end of the file (truncated, corrupt, or not written by "
                           "convexdual.checkpoint)")
        f.seek(0)
        digest = _hash_stream(f, size - _SEAL_LEN)
    if digest.encode("ascii") != tail[2 + len(_SEAL_PREFIX):]:
        raise _Corrupt("its sha256 does not match the one recorded when it was written (bytes changed)")


def _err(path: Path, what: str, todo: str = _WHAT_TO_DO) -> CheckpointError:
    return CheckpointError(f"checkpoint {path}: {what}; {todo}", path=path)


def read_checkpoint(path: str | os.PathLike) -> CheckpointState:
    """Read and decode a checkpoint without checking its solver or problem (for inspection).

    Raises:
        CheckpointError: missing, empty, truncated, corrupt, not a checkpoint, other format version.
    """
    path = Path(path)
    if not path.exists():
        raise _err(path, "no such file", "check the path, or start without resume_from")
    if path.is_dir():
        raise _err(path, "is a folder, not a checkpoint file", "give the checkpoint file written by checkpoint_path")
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise _err(path, f"cannot be read ({e.strerror or e})", "check its permissions") from e
    if size == 0:
        raise _err(path, "is empty (0 bytes): the run that wrote it was interrupted before its first write, or "
                         "the file was truncated")
    if magic[:1] == b"\x80":  # pickle protocol >= 2
        raise _err(path, "is a pickle, not a convexdual checkpoint (checkpoints written before format 1 used "
                         "torch.save, whose loading can execute code; it is never unpickled)",
                   "start without resume_from (or rerun the old version to finish that run)")
    if magic != b"PK\x03\x04":
        raise _err(path, f"is not a convexdual checkpoint (it does not start like a zip/.npz file: {magic!r}); "
                         "it may be truncated, corrupt, or another kind of file")
    try:
        try:
            _check_seal(path, size)
        except _Corrupt:
            if _looks_like_torch_zip(path):
                raise _err(path, "is a torch.save file, not a convexdual checkpoint (checkpoints before format 1 "
                                 "used torch.save, whose loading can execute code; it is never unpickled)",
                           "start without resume_from (or finish that run with the version that wrote it)")
            raise
        with np.load(path, allow_pickle=False) as z:
            names = set(z.files)
            if _HEADER not in names:
                hint = ("it looks like a torch.save file (checkpoints before format 1; never unpickled, since "
                        "loading one can execute code)" if any(n.endswith("data.pkl") or n.endswith(".pkl")
                                                               or n.endswith("/version") for n in names)
                        else f"it has no header (members: {sorted(names)[:5]})")
                raise _err(path, f"is not a convexdual checkpoint: {hint}", "start without resume_from")
            raw = z[_HEADER]
            if raw.dtype != np.uint8 or raw.ndim != 1 or raw.size > _MAX_HEADER_BYTES:
                raise _Corrupt("malformed header member")
            header = json.loads(raw.tobytes().decode("utf-8"))
            if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
                raise _err(path, "is not a convexdual checkpoint (its header names format "
                                 f"{header.get('format') if isinstance(header, dict) else None!r})",
                           "start without resume_from")
            version = header.get("version")
            if version != FORMAT_VERSION:
                raise _err(path, f"is in checkpoint format version {version!r}, but this convexdual "
                                 f"({_version()}) reads version {FORMAT_VERSION} only",
                           "resume it with the convexdual version that wrote it, or start without resume_from")
            refs = header.get("arrays")
            if not isinstance(refs, list) or set(refs) != names - {_HEADER}:
                raise _Corrupt("the arrays listed in the header are not the arrays in the file")
            arrays = {name: z[name] for name in refs}
            state = decode_state(header.get("state"), arrays)
            solver, fp, finished = header.get("solver"), header.get("fingerprint"), header.get("finished")
            if not isinstance(solver, str) or not isinstance(fp, str) or not isinstance(finished, bool):
                raise _Corrupt("header lacks solver / fingerprint / finished")
            if not isinstance(state, dict):
                raise _Corrupt("state is not a dict")
    except CheckpointError:
        raise
    except (_Corrupt, zipfile.BadZipFile, EOFError, ValueError, OSError, KeyError, TypeError, UnicodeDecodeError,
            RuntimeError, NotImplementedError, OverflowError, MemoryError, IndexError, io.UnsupportedOperation,
            AttributeError) as e:
        detail = str(e)[:200] if isinstance(e, _Corrupt) else f"{type(e).__name__}: {str(e)[:200]}"
        raise _err(path, f"is corrupt or truncated ({detail})") from e
    header.pop("state", None)
    return CheckpointState(state=state, finished=finished, solver=solver, fingerprint=fp, path=path, header=header)


def _looks_like_torch_zip(path: Path) -> bool:
    """Reads only the zip directory (names); nothing is unpickled."""
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.endswith("/data.pkl") or n == "data.pkl" for n in zf.namelist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return False


def _version() -> str:
    import convexdual

    return str(getattr(convexdual, "__version__", "?"))


def load_checkpoint(path: str | os.PathLike, solver: str, problem: Any) -> CheckpointState:
    """Load the checkpoint at ``path`` written by ``solver`` on ``problem``; verify both before returning.

    Returns:
        :class:`CheckpointState` (``.state``, ``.finished``, ...).

    Raises:
        CheckpointError: missing/empty/truncated/corrupt file, not a checkpoint, another format
            version, another solver, or another problem (the message says which parts differ).
    """
    ck = read_checkpoint(path)
    if ck.solver != solver:
        raise _err(ck.path, f"was written by solver {ck.solver!r}, not {solver!r}",
                   f"resume it with solver {ck.solver!r}, or start {solver!r} without resume_from")
    if isinstance(problem, str):
        if ck.fingerprint != problem:
            raise _err(ck.path, "belongs to another problem (fingerprints differ)",
                       "resume on the same data and settings, or start without resume_from")
        return ck
    parts = problem_fingerprint_parts(problem)
    if ck.fingerprint != _combine(parts):
        old = ck.header.get("fingerprint_parts") or {}
        labels = {"inputs": "the noisy inputs", "targets": "the targets", "gates": "the sign patterns (gates)",
                  "settings": "kernel size / beta / loss / residual"}
        diff = [labels[k] for k in labels if old.get(k) != parts[k]] or ["the problem"]
        then, now = ck.header.get("problem") or {}, _problem_summary(problem)
        changed = [f"{k} {then.get(k)!r} -> {now[k]!r}" for k in now if k in then and then[k] != now[k]]
        raise _err(ck.path, "belongs to another problem: " + ", ".join(diff) + " differ"
                   + (f" ({'; '.join(changed)})" if changed else ""),
                   "resume on exactly the same data, patterns and settings, or start without resume_from")
    return ck


def checkpoint_finished(path: str | os.PathLike) -> bool:
    """Whether the checkpoint at ``path`` records a finished run (raises CheckpointError if unreadable)."""
    return read_checkpoint(path).finished
