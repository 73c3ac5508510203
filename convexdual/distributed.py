"""Data-parallel solves over processes with ``torch.distributed`` (gloo on CPU, NCCL for GPU nets).

Program (4) couples the images only through sums over patch rows: ``X^T D_i v`` (the operator's
adjoint), Gram blocks ``X^T D_a D_b X``, ``X^T D_i y``, the loss and the dual value, and the
cone rows of the projections. The images are therefore **sharded over ranks** (contiguous
blocks, :func:`shard_bounds`): every rank holds its images, their patch rows and the part of the
dual vector ``v`` and of the residual that lives on them; every reduction is an all-reduce, and
the few cone rows a projection or a restricted program needs are gathered from their owners
(:class:`Comm`). The small restricted programs are solved on rank 0 and broadcast. Every
decision of a solver is taken on data that is identical on all ranks (reduced, gathered or
broadcast), so the ranks walk the same path; the result (``W``, ``Z``, the status, the
certificate) is the same on every rank, while ``result.dual`` is the rank's shard of ``v``.

A single process uses :data:`SINGLE` (every collective is the identity), so the one-process
code path *is* the distributed code path with one rank.

Started by ``torchrun`` (one machine: ``torchrun --standalone --nproc_per_node=R ...``; several:
``--nnodes``/``--rdzv-endpoint``): :func:`init_from_env` reads ``WORLD_SIZE``/``RANK`` and joins
the group. A rank that dies makes the others' next collective fail (gloo reports the closed
connection; ``timeout_s`` bounds the wait), ``torchrun`` then stops the whole run with the failed
rank's exit code, and the checkpoint of the last finished round resumes it.
"""

from __future__ import annotations

import atexit
import datetime
import hashlib
import logging
import os
from typing import Any, Sequence

import numpy as np

__all__ = ["Comm", "TorchComm", "SINGLE", "init_from_env", "shutdown", "in_torchrun", "shard_bounds", "shard_images",
           "build_sharded_problem"]

logger = logging.getLogger(__name__)


class Comm:
    """Collectives over the ranks of a run; this base class is one process (every call is the identity).

    All arrays are numpy float64/int64 on the CPU; results are identical (bit for bit) on every rank.
    """

    rank: int = 0
    world: int = 1

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def sum(self, x: Any) -> Any:
        """Elementwise sum over ranks of a float or a float array."""
        return x

    def max(self, x: float) -> float:
        return float(x)

    def min(self, x: float) -> float:
        return float(x)

    def gather(self, a: np.ndarray, max_len: int | None = None) -> list[np.ndarray]:
        """Every rank's array (any first-dimension length, same trailing shape and dtype), in rank order.
        ``max_len``: a bound on every rank's length that all ranks know (one collective instead of two)."""
        return [np.asarray(a)]

    def broadcast(self, a: np.ndarray) -> np.ndarray:
        """Rank 0's array on every rank (shape and dtype travel with it)."""
        return np.asarray(a)

    def broadcast_same(self, a: np.ndarray) -> np.ndarray:
        """Rank 0's values of an array whose shape and dtype every rank already has (one collective)."""
        return np.asarray(a)

    def barrier(self) -> None:
        return None

    def digest(self, local: str) -> str:
        """A digest of every rank's ``local`` hex digest (the same on every rank); one rank: ``local``."""
        return local

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rank={self.rank}, world={self.world})"


SINGLE = Comm()


class TorchComm(Comm):
    """:class:`Comm` over a ``torch.distributed`` process group.

    The numpy collectives go through a gloo group (created beside an NCCL default group when the
    run uses CUDA): they carry small vectors and the certificate's scalars; the bulk of the work
    (operator passes, projections) is local to each rank.
    """

    def __init__(self, group: Any = None) -> None:
        import torch.distributed as dist

        if not dist.is_initialized():
            raise RuntimeError("torch.distributed is not initialised; start the run with torchrun "
                               "(convexdual.distributed.init_from_env joins the group)")
        self._dist = dist
        self.group = group
        self.calls: dict[str, int] = {}  # collectives made, by method (benchmarks read it)
        self.rank = int(dist.get_rank())
        self.world = int(dist.get_world_size())

    def _t(self, a: np.ndarray):
        import torch

        return torch.from_numpy(np.ascontiguousarray(a))

    def _count(self, what: str) -> None:
        self.calls[what] = self.calls.get(what, 0) + 1

    def sum(self, x: Any) -> Any:
        self._count("sum")
        scalar = np.ndim(x) == 0
        t = self._t(np.array(x, dtype=np.float64, ndmin=1))
        self._dist.all_reduce(t, op=self._dist.ReduceOp.SUM, group=self.group)
        out = t.numpy()
        return float(out[0]) if scalar else out.reshape(np.shape(x))

    def _reduce(self, x: float, op: Any) -> float:
        self._count("max/min")
        t = self._t(np.array([x], dtype=np.float64))
        self._dist.all_reduce(t, op=op, group=self.group)
        return float(t[0])

    def max(self, x: float) -> float:
        return self._reduce(float(x), self._dist.ReduceOp.MAX)

    def min(self, x: float) -> float:
        return self._reduce(float(x), self._dist.ReduceOp.MIN)

    def gather(self, a: np.ndarray, max_len: int | None = None) -> list[np.ndarray]:
        import torch

        self._count("gather")
        a = np.ascontiguousarray(a)
        if max_len is not None and a.ndim == 2 and a.dtype == np.float64:  # one all_gather: a count row on top
            if a.shape[0] > max_len:
                raise ValueError(f"gather: {a.shape[0]} rows exceed the stated bound {max_len}")
            pad = np.zeros((int(max_len) + 1, a.shape[1]))
            pad[0, 0] = a.shape[0]
            pad[1:a.shape[0] + 1] = a
            bufs = [torch.zeros(pad.shape, dtype=torch.float64) for _ in range(self.world)]
            self._dist.all_gather(bufs, self._t(pad), group=self.group)
            return [b.numpy()[1:1 + int(b[0, 0])] for b in bufs]
        lens = self._t(np.array([a.shape[0] if a.ndim else 1], dtype=np.int64))
        all_lens = [torch.zeros_like(lens) for _ in range(self.world)]
        self._dist.all_gather(all_lens, lens, group=self.group)
        counts = [int(t[0]) for t in all_lens]
        top = max(counts)
        tail = a.shape[1:]
        pad = np.zeros((top,) + tail, dtype=a.dtype)
        pad[: a.shape[0]] = a
        bufs = [torch.zeros((top,) + tail, dtype=self._t(pad).dtype) for _ in range(self.world)]
        self._dist.all_gather(bufs, self._t(pad), group=self.group)
        return [b.numpy()[:c] for b, c in zip(bufs, counts)]

    def broadcast(self, a: np.ndarray) -> np.ndarray:
        import torch

        self._count("broadcast")
        a = np.ascontiguousarray(a)
        head = np.zeros(9, dtype=np.int64)  # ndim, dtype code, shape (<= 7 dims)
        if self.is_root:
            if a.ndim > 7:
                raise ValueError("broadcast arrays have at most 7 dimensions")
            head[0], head[1] = a.ndim, _DTYPES.index(a.dtype.str)
            head[2:2 + a.ndim] = a.shape
        th = self._t(head)
        self._dist.broadcast(th, src=0, group=self.group)
        ndim, code = int(th[0]), int(th[1])
        shape = tuple(int(s) for s in th[2:2 + ndim])
        buf = self._t(a) if self.is_root else torch.from_numpy(np.empty(shape, dtype=np.dtype(_DTYPES[code])))
        self._dist.broadcast(buf, src=0, group=self.group)
        return buf.numpy()

    def broadcast_same(self, a: np.ndarray) -> np.ndarray:
        self._count("broadcast")
        buf = self._t(np.array(a, copy=True))
        self._dist.broadcast(buf, src=0, group=self.group)
        return buf.numpy()

    def barrier(self) -> None:
        self._dist.barrier(group=self.group)

    def digest(self, local: str) -> str:
        parts = self.gather(np.frombuffer(bytes.fromhex(local), dtype=np.uint8).copy())
        h = hashlib.sha256(b"convexdual-shards-v1")
        for p in parts:
            h.update(p.tobytes())
        return h.hexdigest()


_DTYPES = [np.dtype(t).str for t in ("<f8", "<i8", "|b1", "<f4", "<i4", "|u1")]


def in_torchrun() -> bool:
    """True when this process was started by torchrun with more than one rank."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: str = "cpu", timeout_s: float = 300.0) -> Comm:
    """Join the torchrun group when there is one (``WORLD_SIZE > 1``), else :data:`SINGLE`.

    ``device`` "cuda..." uses NCCL for the default group (the primal trainer's DDP), with a gloo
    group beside it for the numpy collectives; otherwise gloo. ``timeout_s`` bounds how long a
    collective waits for a rank that stopped answering.
    """
    if not in_torchrun():
        return SINGLE
    import torch
    import torch.distributed as dist

    timeout = datetime.timedelta(seconds=float(timeout_s))
    cuda = str(device).startswith("cuda")
    if not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if cuda else "gloo", timeout=timeout)
    group = dist.new_group(backend="gloo", timeout=timeout) if dist.get_backend() != "gloo" else None
    atexit.register(shutdown)  # a group left open at exit can abort the process (std::terminate in its threads)
    comm = TorchComm(group)
    logger.info("joined the torch.distributed group: rank %d of %d (%s)", comm.rank, comm.world, dist.get_backend())
    return comm


def shutdown() -> None:
    """Leave the torch.distributed group, if this process joined one (registered at exit by
    :func:`init_from_env`; safe to call twice)."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()  # every rank leaves together: a peer closing its connections early aborts the others
            dist.destroy_process_group()
    except Exception as exc:  # noqa: BLE001 - at exit, a failed clean-up must not hide the run's own outcome
        logger.debug("destroy_process_group failed: %s", exc)


def shard_bounds(num_images: int, world: int) -> list[tuple[int, int]]:
    """Contiguous ``[start, stop)`` image ranges, one per rank, sizes differing by at most one."""
    if world < 1:
        raise ValueError(f"world size must be >= 1, got {world}")
    if num_images < world:
        raise ValueError(f"{num_images} images cannot be sharded over {world} ranks: give every rank an image "
                         "(fewer processes or more images)")
    edges = np.linspace(0, num_images, world + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def shard_images(comm: Comm | None, *arrays: Any) -> tuple:
    """This rank's block of images of each array (first dimension), by :func:`shard_bounds`
    (``comm`` None or :data:`SINGLE`: one process, every image)."""
    comm = SINGLE if comm is None else comm
    n = len(arrays[0])
    a, b = shard_bounds(n, comm.world)[comm.rank]
    return tuple(x[a:b] for x in arrays)


def build_sharded_problem(noisy: Any, clean: Any, kernel_size: int = 3, beta: float = 1.0, *, comm: Comm,
                          num_patterns: int = 100, seed: int = 0, gates: np.ndarray | None = None,
                          residual: bool = False, residual_channel: int = 0,
                          memory_limit_mb: float | None = None):
    """Program (4) over the images of every rank, this rank holding ``noisy``/``clean`` (its shard).

    Gates are drawn with ``seed`` (or given) identically on every rank, and gates that give the same
    pattern on *all* the images are merged (each rank hashes its masks, the per-rank digests are
    gathered), so the pattern set is the one a single process would keep. Squared loss only (the
    distributed solver is ``active_set``).
    """
    import dataclasses

    from convexdual._validation import as_images, check_kernel_size
    from convexdual.patterns import SignPatterns, data_key, pattern_hashes
    from convexdual.problem import build_problem

    x = as_images(noisy, "noisy")
    k = check_kernel_size(kernel_size, x.shape[2], x.shape[3])
    d = x.shape[1] * k * k
    if gates is None:
        if isinstance(num_patterns, bool) or not isinstance(num_patterns, (int, np.integer)) or num_patterns < 1:
            raise ValueError(f"num_patterns must be an integer >= 1, got {num_patterns!r}")
        gates = np.random.default_rng(seed).standard_normal((int(num_patterns), d))
    gates = np.asarray(gates, dtype=np.float64)
    local = pattern_hashes(x, k, gates)
    parts = comm.gather(np.frombuffer(b"".join(local), dtype=np.uint8).reshape(len(local), -1).copy())
    seen: set[bytes] = set()
    keep = []
    for j in range(len(gates)):
        key = b"".join(p[j].tobytes() for p in parts)
        if key not in seen:
            seen.add(key)
            keep.append(j)
    pats = SignPatterns(gates=gates[keep], exact=False, num_requested=len(gates), source="sampled",
                        data_key=data_key(x, k),  # deduplicated over every rank: build_problem keeps them
                        info={"unique": len(keep), "deduplicated": True, "sharded": comm.world})
    problem = build_problem(x, clean, k, beta, patterns=pats, residual=residual, residual_channel=residual_channel,
                            memory_limit_mb=memory_limit_mb)
    return dataclasses.replace(problem, comm=comm)


def shard_sizes(comm: Comm, count: int) -> list[int]:
    """Every rank's ``count`` (e.g. its nonzero patch rows), in rank order."""
    return [int(c[0]) for c in comm.gather(np.array([count], dtype=np.int64))]


def global_ids(offset: int, local: Sequence[int]) -> np.ndarray:
    return np.asarray(local, dtype=np.intp) + int(offset)
