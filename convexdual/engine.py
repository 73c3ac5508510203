"""The one dual-feasibility and certificate engine of program (4) (docs/math.md §6).

Everything that touches *all* sign patterns goes through :class:`PatternEngine`, built from
the problem's own data and gates (never from stored masks):

* **masks** ``1[X g_i >= 0]`` recomputed from the gates on demand, one pattern at a time,
  with a small cache under the memory budget (:meth:`PatternEngine.mask`);
* the **pattern operator** ``sum_i D_i X v_i`` and its adjoint ``(X^T D_i v)_i`` in one
  streaming pass (:class:`~convexdual.operators.PatternOperator`, float64);
* the **exact cone projection** ``Proj_{K_i}(c)``, ``K_i = {w : (2 D_i - I) X w >= 0}``, by
  NNLS with lazy rows (:func:`cone_projection`);
* the **dual-constraint scan** ``max_{i, s} ||Proj_{K_i}(s X^T D_i v)||`` over every pattern
  (:meth:`PatternEngine.scan`): patterns visited by decreasing ``||X^T D_i v||`` (an upper
  bound of both projections), each pruned first by that norm and then by the projection onto
  the cone of the rows that were active the last time the same pattern was projected (a
  superset cone, so again an upper bound); only the survivors get an exact projection;
* **scaling a dual candidate to feasibility** and its dual value, a certified lower bound on
  (4) (:meth:`PatternEngine.dual_bound`);
* the **relative cone violation** of a candidate ``(W, Z)`` (:meth:`PatternEngine.cone_violation`).

``finalize``/``certify_solution``, every solver's stopping test, the descent search and
pattern generation use these and nothing else. Memory: the patch rows ``X`` (``n x d``
float64) when they fit the budget, the operator's image batches, one ``n``-vector per cached
mask. Nothing is proportional to ``P x n``.
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import torch
from scipy.optimize import nnls

from convexdual.operators import PatternOperator
from convexdual.patches import patch_matrix

__all__ = ["PatternEngine", "ScanResult", "DualBound", "cone_projection", "cone_projection_norm",
           "MemoryBudgetError", "default_memory_limit_mb", "check_memory"]

logger = logging.getLogger(__name__)


class MemoryBudgetError(MemoryError, ValueError):
    """A computation would not fit the memory limit; raised before anything is allocated."""


def default_memory_limit_mb() -> float:
    """Half of the memory available now (``MemAvailable`` of /proc/meminfo), at least 256 MB."""
    avail = None
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    avail = float(line.split()[1]) / 1024.0
                    break
    except OSError:
        pass
    if avail is None:
        try:
            import os

            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**20
        except (ValueError, OSError, AttributeError):
            avail = 4096.0
    return max(256.0, 0.5 * avail)


def check_memory(need_bytes: float, limit_mb: float | None, what: str, hint: str) -> None:
    """Raise :class:`MemoryBudgetError` when ``need_bytes`` exceeds ``limit_mb`` (None: the default)."""
    limit = default_memory_limit_mb() if limit_mb is None else float(limit_mb)
    if need_bytes > limit * 2**20:
        raise MemoryBudgetError(
            f"{what} needs about {_size(need_bytes)} but the memory limit is {_size(limit * 2**20)} "
            f"(memory_limit_mb={limit:g}); {hint}")


def _size(nbytes: float) -> str:
    return f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**30 else f"{nbytes / 2**20:.3g} MiB"


# ---------------------------------------------------------------------------------------------
# the exact cone projection
# ---------------------------------------------------------------------------------------------
class _RowSet:
    """The rows ``a_j = sign_j x_j`` of one cone ``{w : a_j^T w >= 0}``, held by the ranks of ``comm``.

    This rank holds ``A`` (its rows, global ids ``offset + j``) and ``flip`` (True: ``+x_j``); with
    one rank (:data:`~convexdual.distributed.SINGLE`) the ids are the rows of ``A`` and every
    collective is plain indexing. Rows gathered from other ranks are kept (``_seen``), so a row
    travels once per row set. Every method returns the same value on every rank.
    """

    def __init__(self, A: np.ndarray, flip: np.ndarray | None, comm: Any = None, offset: int = 0,
                 total: int | None = None) -> None:
        from convexdual.distributed import SINGLE

        self.A, self.flip = A, flip
        self.comm = SINGLE if comm is None else comm
        self.offset = int(offset)
        self.total = int(A.shape[0] if total is None else total)
        self._seen: dict[int, np.ndarray] = {}

    def matvec(self, w: np.ndarray) -> np.ndarray:
        """``a_j^T w`` on this rank's rows."""
        m = self.A @ w
        return m if self.flip is None else np.where(self.flip, m, -m)

    def signed_rows(self, idx: np.ndarray) -> np.ndarray:
        """The signed rows at this rank's local positions ``idx``, ``(len(idx), d)``."""
        return self.A[idx] if self.flip is None else np.where(self.flip[idx, None], self.A[idx], -self.A[idx])

    def local(self, ids: np.ndarray) -> np.ndarray:
        """The positions in this rank's rows of the global ``ids`` it holds."""
        ids = np.asarray(ids, dtype=np.intp)
        if not self.comm.distributed:
            return ids
        return self.held(ids)[1]

    def held(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(k, loc)``: the positions ``k`` in ``ids`` of the global ids this rank holds, and
        their positions ``loc`` in this rank's rows."""
        loc = np.asarray(ids, dtype=np.intp) - self.offset
        k = np.flatnonzero((loc >= 0) & (loc < self.A.shape[0]))
        return k, loc[k]

    def _share(self, pack: np.ndarray, max_len: int | None = None) -> np.ndarray:
        """Gather ``[value, id, row]`` records from every rank and keep their rows."""
        allp = np.concatenate(self.comm.gather(pack, max_len))
        for rec in allp:
            self._seen.setdefault(int(rec[1]), rec[2:])
        return allp

    def take(self, ids: np.ndarray) -> np.ndarray:
        """The signed rows of the global ``ids``, ``(len(ids), d)``, in the order of ``ids`` (rows not
        seen yet are gathered from their ranks)."""
        ids = np.asarray(ids, dtype=np.intp)
        if not self.comm.distributed:
            return self.signed_rows(ids)
        missing = np.array([i for i in ids.tolist() if i not in self._seen], dtype=np.intp)
        if missing.size:  # the same on every rank: _seen is filled by collectives only
            loc = self.local(missing)
            self._share(np.hstack([np.zeros((loc.size, 1)), (loc + self.offset)[:, None].astype(np.float64),
                                   self.signed_rows(loc)]))
        return np.stack([self._seen[int(i)] for i in ids]) if ids.size else np.zeros((0, self.A.shape[1]))

    def candidates(self, m: np.ndarray, k: int, below: float | None = None,
                   extra: np.ndarray | None = None) -> tuple[np.ndarray, float]:
        """``(ids, lowest)``: global ids of the ``k`` smallest values of ``m`` (a value per row of this
        rank; only those ``< below`` when given), and ``min(0, min over every rank of m)``. Several
        ranks: one gather carries the candidates' values and rows (and those of ``extra`` ids), so a
        following :meth:`take` of them needs no collective; ids ordered by (value, id)."""
        k = int(k)
        lowest = float(m.min(initial=0.0))
        cand = np.flatnonzero(m < below) if below is not None else None
        if not self.comm.distributed:
            if cand is None:
                return (np.argpartition(m, k - 1)[:k] if k < m.size else np.arange(m.size)), lowest
            return (cand[np.argpartition(m[cand], k - 1)[:k]] if cand.size > k else cand), lowest
        if cand is None:
            cand = np.arange(m.size)
        if cand.size > k:
            cand = cand[np.argpartition(m[cand], k - 1)[:k]]
        pack = [np.hstack([m[cand][:, None], (cand + self.offset)[:, None].astype(np.float64), self.signed_rows(cand)])]
        if extra is not None and len(extra):
            loc = np.setdiff1d(self.local(extra), cand)
            pack.append(np.hstack([np.full((loc.size, 1), np.inf), (loc + self.offset)[:, None].astype(np.float64),
                                   self.signed_rows(loc)]))
        allp = self._share(np.concatenate(pack), k + (0 if extra is None else len(extra)))
        allp = allp[np.isfinite(allp[:, 0])]
        lowest = min(0.0, float(allp[:, 0].min(initial=0.0)))
        order = np.lexsort((allp[:, 1], allp[:, 0]))[:k]
        return allp[order, 1].astype(np.intp), lowest

    def smallest(self, m: np.ndarray, k: int, below: float | None = None) -> np.ndarray:
        """Global ids of the ``k`` smallest values of ``m`` (see :meth:`candidates`)."""
        return self.candidates(m, k, below)[0]


def _iterate_bound(c: np.ndarray, w: np.ndarray) -> float:
    """A float upper bound on ``||Proj_K c||`` from an iterate ``w = c + A_S^T lam`` (``lam >= 0``):
    ``||w||`` plus the rounding of ``c + A^T lam``, ~``d u (||c|| + ||A^T lam||) <= ~d u (2 ||c|| + ||w||)``."""
    nw = float(np.linalg.norm(w))
    return nw + 1e-12 * (float(np.linalg.norm(c)) + nw)


def _lazy_projection(rows: _RowSet, c: np.ndarray, tol: float, start: np.ndarray | None,
                     max_rounds: int, values: np.ndarray | None = None, stop: float | None = None
                     ) -> tuple[np.ndarray, np.ndarray, bool]:
    """``(Proj_K(c), ids of the rows with a positive multiplier, exact)`` for the cone of ``rows``
    (the one lazy-row loop of :func:`cone_projection` and :meth:`PatternEngine.project`).

    NNLS on a working set of rows; the rows with a zero multiplier leave it (``proj`` stays the
    projection onto the cone of the rows kept) and violated rows join it (the distance then rises
    strictly, so no working set repeats). Violations are looked for first in a *pool*: the rows
    nearest the boundary at the last full pass and every row that was ever in the working set
    (``16 x 4 d`` rows or more, a product of ``d`` columns); only when the pool holds no violated
    row does a pass over every row check the result, refill the pool, or end the loop with the
    exact projection. Several ranks: a full pass costs one gather (the pool's rows, with their
    values); every round one broadcast (the multipliers and the pool's values, rank 0's), so
    every rank takes the same decisions. ``values``: ``rows.matvec(c)`` when the caller has it (the
    scan's screening computed it for a whole block in one product), saving the first pass.

    Every iterate ``c + A_S^T lam`` (``lam >= 0``, any row subset ``S``) has a norm >= ``||Proj_K(c)||``
    (Moreau: ``||Proj_K(c)|| = min_{lam >= 0} ||c + A^T lam||``). ``stop``: return as soon as that
    bound is ``<= stop`` (``exact`` False: the first element is then such an iterate, not the
    projection); a caller that only needs to know that the value is below ``stop`` saves the rest.
    """
    comm = rows.comm
    cap = 4 * rows.A.shape[1]
    pool_k = min(rows.total, 16 * cap)
    pool, lowest = rows.candidates(rows.matvec(c) if values is None else values, pool_k, extra=start)
    if lowest >= -tol:
        return c, np.empty(0, dtype=np.intp), True
    if start is not None and len(start):
        pool = np.union1d(pool, np.asarray(start, dtype=np.intp))
    pool = np.unique(pool)
    Ap = rows.take(pool)  # rows shared by the gather above: no collective
    mp = Ap @ c
    active = pool[np.argsort(mp, kind="stable")[:cap]]
    if start is not None and len(start):
        active = np.union1d(active, np.asarray(start, dtype=np.intp))
    for _ in range(max_rounds):
        Aa = rows.take(active)
        lam, _ = nnls(Aa.T, -c, maxiter=50 * Aa.shape[0])
        proj = c + Aa.T @ lam
        mp = Ap @ proj
        if comm.distributed:  # rank 0's multipliers and pool values: one path for every rank
            both = comm.broadcast_same(np.concatenate([lam, mp]))
            lam, mp = both[:lam.size], both[lam.size:]
            proj = c + Aa.T @ lam
        mp[np.isin(pool, active)] = np.inf
        viol = np.flatnonzero(mp < -tol)
        kept = active[lam > 0]
        if stop is not None and _iterate_bound(c, proj) <= stop:
            return proj, kept, False  # the same proj on every rank (rank 0's lam): the same decision
        if viol.size:
            sel = pool[viol[np.argsort(mp[viol], kind="stable")[:cap]]]
            active = np.union1d(kept, sel)
            continue
        m = rows.matvec(proj)  # the pool is clean: check every row
        m[rows.local(pool)] = np.inf
        new, _ = rows.candidates(m, pool_k, below=-tol)
        if new.size == 0:
            return proj, kept, True
        An = rows.take(new)
        mv = comm.broadcast_same(An @ proj)
        sel = new[np.argsort(mv, kind="stable")[:cap]]
        pool, order = np.unique(np.concatenate([pool, new]), return_index=True)
        Ap = np.concatenate([Ap, An])[order]
        active = np.union1d(kept, sel)
    every = np.arange(rows.total)  # not converged: all rows at once (small problems only)
    Aall = rows.take(every)
    lam, _ = nnls(Aall.T, -c, maxiter=50 * Aall.shape[0])
    lam = comm.broadcast_same(lam)
    return c + Aall.T @ lam, np.flatnonzero(lam > 0), True


def cone_projection(A: np.ndarray, c: np.ndarray, *, signs: np.ndarray | None = None, rel_tol: float = 1e-12,
                    rows: np.ndarray | None = None, max_rounds: int = 100, return_rows: bool = False,
                    row_norm_max: float | None = None
                    ) -> tuple[float, np.ndarray] | tuple[float, np.ndarray, np.ndarray]:
    """``(||Proj_K(c)||, Proj_K(c))`` for the polyhedral cone ``K = {w : A w >= 0}``, exactly.

    Moreau: ``c = Proj_K(c) + Proj_{K°}(c)`` with ``K° = {-A^T lam : lam >= 0}``, so
    ``Proj_K(c) = c + A^T lam*`` with ``lam* = argmin_{lam >= 0} ||A^T lam + c||`` (NNLS).
    Lazy rows: NNLS on the rows most violated by ``c`` (plus ``rows``), check every row at the
    result, add the violated ones, repeat. The projection onto a superset cone that lands in
    ``K`` is the projection onto ``K``, so the loop ends with the exact answer.

    Args:
        A: ``(n, d)`` cone rows; all-zero rows never bind (``0 >= 0``).
        c: ``(d,)`` the point to project.
        signs: optional ``(n,)`` +-1 (or a bool mask: True = +1): the cone rows are then
            ``signs[j] * A[j]`` (so a pattern's cone ``(2 D_i - I) X`` needs no ``n x d`` copy).
        rel_tol: a row is violated when ``a_j^T w < -rel_tol * max_j ||a_j|| * ||c||``.
        rows: indices that start the first NNLS with the most violated rows (e.g. the rows that
            ended active when projecting a nearby point); they change the path, not the answer.
        max_rounds: lazy rounds before falling back to NNLS on every row at once.
        return_rows: also return the rows with a positive multiplier.
        row_norm_max: ``max_j ||a_j||`` when the caller knows it (saves a pass over ``A``).

    Returns:
        ``(norm, proj)``, or ``(norm, proj, active_rows)`` with ``return_rows=True``.
    """
    c = np.asarray(c, dtype=np.float64)
    flip = None if signs is None else (signs if signs.dtype == bool else signs > 0)
    if row_norm_max is not None:
        amax = float(row_norm_max)
    else:
        amax = float(np.sqrt(np.einsum("ij,ij->i", A, A).max(initial=0.0))) if A.size else 0.0
    tol = rel_tol * amax * float(np.linalg.norm(c))
    proj, act, _ = _lazy_projection(_RowSet(A, flip), c, tol, rows, max_rounds)
    nrm = float(np.linalg.norm(proj))
    return (nrm, proj, act) if return_rows else (nrm, proj)


def cone_projection_norm(A: np.ndarray, c: np.ndarray) -> float:
    """``||Proj_K(c)||`` for ``K = {w : A w >= 0}`` (see :func:`cone_projection`)."""
    return cone_projection(A, c)[0]


# ---------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScanResult:
    """The dual-constraint scan at one dual point ``v``.

    Attributes:
        max_value: a certified upper bound on ``max_{i, s} ||Proj_{K_i}(s X^T D_i v)||`` (exact
            when ``threshold`` was None: every pattern that could exceed the best was projected).
        best_exact: the largest exactly computed value.
        found: up to ``limit`` groups ``(value, pattern, sign, projection)`` outside ``exclude``
            whose value exceeds ``threshold``, largest first.
        projections: exact projections computed; ``pruned``: patterns skipped by a bound.
        best: ``(pattern, sign, projection)`` attaining ``best_exact`` (None if nothing was projected).
    """

    max_value: float
    best_exact: float
    found: tuple
    projections: int
    pruned: int
    best: tuple | None = None


@dataclass(frozen=True)
class DualBound:
    """A dual candidate scaled to feasibility: ``value = dual_value(scale * v0)`` (a lower bound on (4))."""

    value: float
    scale: float
    max_constraint: float


# ---------------------------------------------------------------------------------------------
# the engine
# ---------------------------------------------------------------------------------------------
class PatternEngine:
    """Masks, operator, cone projections, scan, dual bound and violation for one data set and gate set.

    Args:
        inputs: images ``(N, C, H, W)`` float64.
        kernel_size: odd ``k``.
        gates: ``(P, d)``.
        memory_budget_mb: working memory of the operator and of the caches.
        device: where the operator passes run (the projections run on CPU in float64).
        backend: operator backend ("auto", "torch", "numba").
        comm: the ranks over which the images are sharded (:mod:`convexdual.distributed`); this
            engine holds this rank's images. Sums over rows are all-reduced, the cone rows a
            projection needs are gathered; every method returns the same value on every rank
            (the row-valued ones, ``predict`` and ``mask``, this rank's rows).

    Raises:
        MemoryBudgetError: the patch rows ``X`` (``n x d`` float64) do not fit the budget.
    """

    def __init__(self, inputs: np.ndarray, kernel_size: int, gates: np.ndarray, *,
                 memory_budget_mb: float = 512.0, device: Any = "cpu", backend: str = "auto",
                 comm: Any = None) -> None:
        from convexdual.distributed import SINGLE, shard_sizes

        self.comm = SINGLE if comm is None else comm
        self.inputs = np.ascontiguousarray(inputs, dtype=np.float64)
        self.kernel_size = int(kernel_size)
        self.gates = np.ascontiguousarray(gates, dtype=np.float64)
        N, C, H, W = self.inputs.shape
        self.n, self.d, self.P = int(N * H * W), int(C * self.kernel_size**2), int(self.gates.shape[0])
        self.memory_budget_mb = float(memory_budget_mb)
        self.device, self.backend = device, backend
        check_memory(self.n * self.d * 8 * 2, None, f"the patch rows X (n = {self.n:,} x d = {self.d})",
                     "use fewer or smaller images, or shard them over processes")
        self.X = patch_matrix(self.inputs, self.kernel_size)  # (n, d)
        xn = np.sqrt((self.X * self.X).sum(axis=1))
        self.xnorm = xn
        self.xmax = self.comm.max(float(xn.max(initial=0.0)))
        self.nz = np.flatnonzero(xn > 0)
        self.Xnz = self.X[self.nz] if self.nz.size < self.n else self.X
        counts = shard_sizes(self.comm, self.nz.size) if self.comm.distributed else [self.nz.size]
        self.row_offset = int(sum(counts[: self.comm.rank]))  # global id of this rank's first nonzero row
        self.num_rows = int(sum(counts))  # nonzero patch rows over all ranks
        self.n_total = int(self.comm.sum(float(self.n))) if self.comm.distributed else self.n
        self.num_images_total = int(self.n_total // (H * W))
        self._op: PatternOperator | None = None
        cap = max(4, int(self.memory_budget_mb * 2**20 / 4 / max(self.n, 1)))
        self._mask_cache: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
        self._mask_cap = cap
        self._rows: dict[Any, np.ndarray] = {}
        self.num_projections = 0

    # ---- the operator ----------------------------------------------------------------------
    @property
    def op(self) -> PatternOperator:
        if self._op is None:
            self._op = PatternOperator(self.inputs, self.kernel_size, self.gates, device=self.device,
                                       dtype=torch.float64, memory_budget_mb=self.memory_budget_mb,
                                       backend=self.backend)
        return self._op

    def adjoint(self, v: np.ndarray) -> np.ndarray:
        """``(X^T D_i v)_i`` for every pattern, ``(P, d)`` float64 (one operator pass)."""
        op = self.op
        C = op.adjoint(torch.as_tensor(np.asarray(v, dtype=np.float64), device=op.device)).double().cpu().numpy()
        return self.comm.sum(C)

    def reduce(self, x: Any) -> Any:
        """Sum over the ranks (identity with one): for this rank's part of a sum over rows."""
        return self.comm.sum(x)

    def rows(self, i: int) -> _RowSet:
        """The cone rows ``(2 D_i - I) x_j`` (nonzero rows) of pattern ``i`` over every rank."""
        m = self.mask(i)
        return _RowSet(self.Xnz, m if self.nz.size == self.n else m[self.nz], self.comm, self.row_offset,
                       self.num_rows)

    def cone_rows_many(self, groups: list[tuple[int, np.ndarray]]) -> list[np.ndarray]:
        """The signed cone rows ``(2 D_i - I) x_j`` of the global nonzero-row ``ids`` of each
        ``(pattern i, ids)``, ``[(len(ids), d)]`` (several ranks: one gather for all of them)."""
        if not self.comm.distributed:
            return [self.rows(i).take(ids) for i, ids in groups]
        packs = []
        for k, (i, ids) in enumerate(groups):
            rs = self.rows(int(i))
            pos, loc = rs.held(ids)
            packs.append(np.hstack([np.full((pos.size, 1), k, dtype=np.float64), pos[:, None].astype(np.float64),
                                    rs.signed_rows(loc)]))
        allp = np.concatenate(self.comm.gather(np.concatenate(packs) if packs else np.zeros((0, 2 + self.d))))
        out = [np.empty((len(ids), self.d)) for _, ids in groups]
        for row in allp:
            out[int(row[0])][int(row[1])] = row[2:]
        return out

    def cone_rows_plain(self, ids: np.ndarray) -> np.ndarray:
        """The patch rows ``x_j`` of the global nonzero-row ``ids`` (gathered)."""
        return _RowSet(self.Xnz, None, self.comm, self.row_offset, self.num_rows).take(ids)

    def boundary_rows(self, i: int, direction: np.ndarray, k: int) -> np.ndarray:
        """Global ids of the ``k`` nonzero rows of pattern ``i`` nearest its cone's boundary along
        ``direction`` (smallest ``(2 D_i - I) x_j^T u / ||x_j||``), sorted."""
        margin = self.group_values(i, direction) / self.xnorm[self.nz]
        if k >= self.num_rows:
            return np.arange(self.num_rows)
        return np.sort(self.rows(i).smallest(margin, k))

    def most_violated(self, i: int, u: np.ndarray, k: int, below: float, exclude: np.ndarray) -> np.ndarray:
        """Global ids of at most ``k`` nonzero rows of pattern ``i`` whose relative value
        ``(2 D_i - I) x_j^T u`` is below ``below`` (most negative first), ``exclude`` left out."""
        g = self.group_values(i, u)
        rs = self.rows(i)
        g[rs.local(exclude)] = np.inf
        return rs.smallest(g, k, below=below)

    # ---- masks -----------------------------------------------------------------------------
    def mask(self, i: int) -> np.ndarray:
        """``1[X g_i >= 0]`` over the patch rows, ``(n,)`` bool (cached under the budget)."""
        i = int(i)
        m = self._mask_cache.get(i)
        if m is None:
            m = (self.X @ self.gates[i]) >= 0
            self._mask_cache[i] = m
            if len(self._mask_cache) > self._mask_cap:
                self._mask_cache.popitem(last=False)
        else:
            self._mask_cache.move_to_end(i)
        return m

    def masks(self, index: Iterable[int] | None = None, limit_mb: float | None = None) -> np.ndarray:
        """Masks of several patterns, ``(m, n)`` bool; refused when they do not fit ``limit_mb``."""
        idx = np.arange(self.P) if index is None else np.asarray(list(index) if not isinstance(index, np.ndarray)
                                                                 else index, dtype=np.intp)
        check_memory(len(idx) * self.n, limit_mb, f"{len(idx)} explicit masks over {self.n:,} rows",
                     "this path is for small problems; use the operator-based solvers (solver='auto')")
        out = np.empty((len(idx), self.n), dtype=bool)
        step = max(1, int(2**26 // max(8 * self.n, 1)))
        for s in range(0, len(idx), step):
            out[s:s + step] = (self.X @ self.gates[idx[s:s + step]].T >= 0).T
        return out

    def signs(self, i: int) -> np.ndarray:
        """``2 D_i - I`` on the nonzero rows, ``(n_nz,)`` float64."""
        m = self.mask(i)
        return np.where(m[self.nz] if self.nz.size < self.n else m, 1.0, -1.0)

    # ---- the program's maps ------------------------------------------------------------------
    def predict(self, W: np.ndarray, Z: np.ndarray) -> np.ndarray:
        """``sum_i D_i X (w_i - z_i)``, ``(n,)``: over the nonzero groups, or one operator pass when dense."""
        V = np.asarray(W, dtype=np.float64) - np.asarray(Z, dtype=np.float64)
        live = np.flatnonzero(np.any(V != 0, axis=1))
        if live.size > max(64, self.P // 4):
            op = self.op
            return op.forward(torch.as_tensor(V, device=op.device)).double().cpu().numpy()
        out = np.zeros(self.n)
        for s in range(0, live.size, 64):
            blk = live[s:s + 64]
            XV = self.X @ V[blk].T  # (n, b)
            for k, i in enumerate(blk):
                out += np.where(self.mask(int(i)), XV[:, k], 0.0)
        return out

    def group_values(self, i: int, u: np.ndarray) -> np.ndarray:
        """``(2 D_i - I) X u`` on the nonzero rows (nonnegative iff ``u`` is in ``K_i``)."""
        return self.signs(i) * (self.Xnz @ np.asarray(u, dtype=np.float64))

    # ---- projections ----------------------------------------------------------------------------
    def project(self, i: int, c: np.ndarray, *, key: Any = None, rel_tol: float = 1e-13,
                rows: np.ndarray | None = None, xc: np.ndarray | None = None
                ) -> tuple[float, np.ndarray, np.ndarray]:
        """Exact ``Proj_{K_i}(c)``; returns ``(norm, proj, active rows)`` (rows index the nonzero rows).

        With a ``key`` the rows that ended active are remembered: they start the next projection
        with that key and give :meth:`relaxed_norm` its superset cone. ``xc``: ``X_nz c`` on this
        rank's nonzero rows when the caller has it (saves one pass over the rows).
        """
        nrm, proj, act, _ = self._project(i, c, key, rel_tol, rows, xc, None)
        return nrm, proj, act

    def _project(self, i: int, c: np.ndarray, key: Any, rel_tol: float, rows: np.ndarray | None,
                 xc: np.ndarray | None, stop: float | None) -> tuple[float, np.ndarray, np.ndarray, bool]:
        """:meth:`project`, or with ``stop`` possibly only an upper bound ``<= stop`` on its norm
        (last element False; see :func:`_lazy_projection`)."""
        self.num_projections += 1
        start = rows if rows is not None else self._rows.get(key) if key is not None else None
        c = np.asarray(c, dtype=np.float64)
        tol = rel_tol * self.xmax * float(np.linalg.norm(c))
        rs = self.rows(i)
        values = None if xc is None else np.where(rs.flip, xc, -xc)
        proj, act, exact = _lazy_projection(rs, c, tol, start, 200, values, stop)
        nrm = float(np.linalg.norm(proj)) if exact else _iterate_bound(c, proj)
        if key is not None and act.size:
            self._rows[key] = act
        return nrm, (np.array(proj) if proj is c else proj), act, exact

    def relaxed_norm(self, i: int, c: np.ndarray, key: Any) -> float:
        """An upper bound on ``||Proj_{K_i}(c)||``: the projection onto the cone of the remembered rows
        of ``key`` (a superset of ``K_i``), or ``||c||`` when none are remembered."""
        return self.relaxed_norms([(i, c, key)])[0]

    def relaxed_norms(self, items: list[tuple[int, np.ndarray, Any]]) -> np.ndarray:
        """:meth:`relaxed_norm` of several ``(pattern, c, key)`` (several ranks: their rows in one gather,
        the bounds in one broadcast)."""
        keyed = [self._rows.get(key) for _, _, key in items]
        ids = [r for r in keyed if r is not None and r.size]
        union = np.unique(np.concatenate(ids)) if ids else np.zeros(0, dtype=np.intp)
        Xu = self.cone_rows_plain(union) if union.size else np.zeros((0, self.d))
        out = np.empty(len(items))
        for t, ((i, c, _), rows) in enumerate(zip(items, keyed)):
            if rows is None or rows.size == 0:
                out[t] = float(np.linalg.norm(c))
                continue
            Xr = Xu[np.searchsorted(union, rows)]
            A = np.where((Xr @ self.gates[int(i)] >= 0)[:, None], Xr, -Xr)
            if (A @ c).min(initial=0.0) >= 0:
                out[t] = float(np.linalg.norm(c))
                continue
            lam, _ = nnls(A.T, -np.asarray(c, dtype=np.float64), maxiter=50 * A.shape[0])
            out[t] = float(np.linalg.norm(c + A.T @ lam)) * (1.0 + 1e-12)
        return self.comm.broadcast_same(out) if self.comm.distributed else out

    def remembered_rows(self) -> dict[Any, np.ndarray]:
        return {k: v.copy() for k, v in self._rows.items()}

    def restore_rows(self, rows: dict[Any, np.ndarray], clear: bool = True) -> None:
        """Set the remembered projection rows (a checkpoint's); ``clear=False`` keeps the other keys."""
        if clear:
            self._rows = {}
        self._rows.update({k: np.asarray(v, dtype=np.intp) for k, v in rows.items()})

    def forget(self, tags: Iterable[str]) -> None:
        """Drop the remembered rows of the keys whose first element is in ``tags``."""
        tags = set(tags)
        self._rows = {k: v for k, v in self._rows.items() if not (isinstance(k, tuple) and k[0] in tags)}

    # ---- the scan ---------------------------------------------------------------------------------
    def scan(self, v: np.ndarray | None = None, *, C: np.ndarray | None = None, threshold: float | None = None,
             exclude: Iterable[tuple[int, float]] = (), limit: int | None = None, tag: str = "dual",
             exact_max: bool = False, first: bool = False, progress: bool = False) -> ScanResult:
        """Dual constraints ``||Proj_{K_i}(s X^T D_i v)||`` over every pattern and both signs.

        Args:
            v: the dual point ``(n,)`` (or give ``C = (X^T D_i v)_i`` directly).
            threshold: None: compute the maximum (every pattern that could beat the best so far is
                projected exactly). A number: look for groups above it; patterns whose bound is at
                most ``max(threshold, k-th found)`` are skipped, and ``max_value`` is then an upper bound.
            exclude: groups ``(pattern, sign)`` never reported in ``found`` (still counted in the max).
            limit: most groups to report (None: all above ``threshold``).
            exact_max: with a ``threshold``, also compute the maximum exactly (a pattern is skipped
                only when its bound is at most both the best so far and the threshold level).
            first: with a ``threshold`` and a ``limit``: stop as soon as ``limit`` groups above the
                threshold are found, in the order of their unconstrained norms ``||X^T D_i v||``, instead
                of finding the ``limit`` largest (every pattern whose bound exceeds the k-th found is
                then projected). ``max_value`` covers the patterns left unscanned by their unconstrained
                norms (a valid, loose bound). A scan that finds fewer than ``limit`` is complete.
            tag: key prefix of the remembered projection rows. Scans at nearby dual points (a
                solver's rounds, then the certificate) share "dual": the rows that were active at
                the last point make the superset-cone bound nearly exact at the next one.

        Returns:
            :class:`ScanResult`.
        """
        if C is None:
            if v is None:
                raise ValueError("scan needs the dual point v or C = (X^T D_i v)_i")
            C = self.adjoint(v)
        excl = set((int(i), float(s)) for i, s in exclude)
        cn = np.sqrt((C * C).sum(axis=1))
        order = np.argsort(-cn, kind="stable")
        best, bound_rest, found, nproj, pruned = 0.0, 0.0, [], 0, 0
        arg = None
        kth = -np.inf
        lim = None if limit is None else int(limit)
        if first and (threshold is None or lim is None):
            raise ValueError("scan(first=True) needs a threshold and a limit (it stops once it has `limit` groups)")
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(order), desc="dual-constraint scan", leave=False, dynamic_ncols=True)
        def current_stop() -> float:
            if first:
                return threshold
            stop = best if threshold is None else max(threshold, kth)
            return min(stop, best) if (exact_max and threshold is not None) else stop

        def record(i: int, s: float, val: float, proj: np.ndarray) -> None:
            nonlocal best, arg, kth
            if val > best or arg is None:
                arg = (i, s, proj)
            best = max(best, val)
            if threshold is not None and val > threshold and (i, s) not in excl:
                found.append((val, i, s, proj))
                if lim is not None and len(found) >= lim:
                    found.sort(key=lambda t: -t[0])
                    del found[lim:]
                    kth = found[-1][0]

        block = max(1, min(64, int(self.memory_budget_mb * 2**20 / 4 // max(24 * self.n, 1))))
        k_rows = 4 * self.d
        try:
            pos = 0
            while pos < len(order):
                stop = current_stop()
                if cn[order[pos]] <= stop:
                    bound_rest = max(bound_rest, float(cn[order[pos]]))
                    pruned += 2 * (len(order) - pos)
                    break
                idx = order[pos:pos + block]
                idx = idx[cn[idx] > stop]
                pos += len(idx)  # a cut block: the next pass stops at the first skipped pattern
                # stage 1: the superset cone of the rows remembered from the last projection of (i, s)
                todo: list[tuple[int, float]] = []
                keyed = [(int(i), s * C[i], (tag, int(i), s)) for i in idx for s in (1.0, -1.0)
                         if (tag, int(i), s) in self._rows]
                ubs = dict(zip([k for _, _, k in keyed], self.relaxed_norms(keyed))) if keyed else {}
                for i in idx:
                    for s in (1.0, -1.0):
                        key = (tag, int(i), s)
                        if key in self._rows:
                            ub = ubs[key]
                            if ub <= current_stop():
                                bound_rest = max(bound_rest, ub)
                                pruned += 1
                                continue
                        todo.append((int(i), s))
                if not todo:
                    if bar is not None:
                        bar.update(len(idx))
                    continue
                # stage 2, batched: masks and X c of the block in one product; a vector inside its cone
                # is its own projection; otherwise the cone of its k most violated rows bounds it
                screens, XC, col = self._screen(C, todo, k_rows)
                lams = self._block_multipliers(C, todo, screens)
                for t_, ((i, s), (mmin, top, A), lam) in enumerate(zip(todo, screens, lams)):
                    if first and len(found) >= lim:  # enough: the rest is bounded by its unconstrained norm
                        bound_rest = max(bound_rest, max(float(cn[j]) for j, _ in todo[t_:]))
                        break
                    c = s * C[i]
                    key = (tag, i, s)
                    if lam is None:
                        nproj += 1
                        self._rows.pop(key, None)
                        record(i, s, float(np.linalg.norm(c)), np.array(c))
                        continue
                    ub = float(np.linalg.norm(c + A.T @ lam)) * (1.0 + 1e-12)
                    if lam.any():
                        self._rows[key] = top[lam > 0]
                    if ub <= current_stop():
                        bound_rest = max(bound_rest, ub)
                        pruned += 1
                        continue
                    val, proj, _, exact = self._project(i, c, key, 1e-13, top, s * XC[col[i]], current_stop())
                    nproj += 1
                    if not exact:  # bounded below the level that matters: pruned, not projected to the end
                        bound_rest = max(bound_rest, val)
                        pruned += 1
                        continue
                    record(i, s, val, proj)
                if bar is not None:
                    bar.update(len(idx))
                if first and len(found) >= lim:
                    if pos < len(order):
                        bound_rest = max(bound_rest, float(cn[order[pos]]))
                        pruned += 2 * (len(order) - pos)
                    break
        finally:
            if bar is not None:
                bar.close()
        found.sort(key=lambda t: -t[0])
        return ScanResult(max_value=max(best, bound_rest), best_exact=best, found=tuple(found), projections=nproj,
                          pruned=pruned, best=arg)

    def _block_multipliers(self, C: np.ndarray, todo: list[tuple[int, float]],
                           screens: list[tuple[float, np.ndarray, np.ndarray]]) -> list[np.ndarray | None]:
        """Per group of a screened block: None when ``s C_i`` lies in its cone, else the NNLS multipliers
        of its most violated rows (several ranks: rank 0's, in one broadcast for the block)."""
        lams: list[np.ndarray | None] = []
        for (i, s), (mmin, _, A) in zip(todo, screens):
            c = s * C[i]
            if mmin >= -1e-13 * self.xmax * float(np.linalg.norm(c)):
                lams.append(None)
                continue
            lams.append(nnls(A.T, -c, maxiter=50 * A.shape[0])[0])
        live = [lam for lam in lams if lam is not None]
        if self.comm.distributed and live:
            flat = self.comm.broadcast_same(np.concatenate(live))
            pos = 0
            for t, lam in enumerate(lams):
                if lam is not None:
                    lams[t] = flat[pos:pos + lam.size]
                    pos += lam.size
        return lams

    def _screen(self, C: np.ndarray, todo: list[tuple[int, float]], k_rows: int
                ) -> tuple[list[tuple[float, np.ndarray, np.ndarray]], np.ndarray, dict[int, int]]:
        """Stage 2 of the scan for a block of groups ``(i, s)``: masks and ``X c`` in one product;
        per group the smallest cone value ``min_j (2 D_i - I) x_j^T (s C_i)`` and the ``k_rows`` most
        violated rows (global ids, signed rows). Several ranks: one gather for the whole block.
        Also returns ``X_nz C_i^T`` of the block's patterns (rows ``col[i]``, this rank's rows), which
        the exact projections that follow start from."""
        uniq = sorted({i for i, _ in todo})
        col = {i: j for j, i in enumerate(uniq)}
        XG = self.gates[uniq] @ self.Xnz.T >= 0  # (b, n_nz): rows contiguous
        XC = C[uniq] @ self.Xnz.T  # (b, n_nz)
        out, packs = [], []
        for t, (i, s) in enumerate(todo):
            j = col[i]
            m = np.where(XG[j], XC[j], -XC[j])
            if s < 0:
                m = -m
            kk = min(k_rows, m.size)
            top = np.argpartition(m, kk - 1)[:kk] if kk < m.size else np.arange(m.size)
            A = np.where(XG[j, top][:, None], self.Xnz[top], -self.Xnz[top])
            if not self.comm.distributed:
                out.append((float(m.min(initial=0.0)), top, A))
                continue
            packs.append(np.hstack([np.full((top.size, 1), t, dtype=np.float64), m[top][:, None],
                                    (top + self.row_offset)[:, None].astype(np.float64), A]))
        if not self.comm.distributed:
            return out, XC, col
        allp = np.concatenate(self.comm.gather(np.concatenate(packs) if packs else np.zeros((0, 3 + self.d))))
        for t in range(len(todo)):
            rows = allp[allp[:, 0] == t]
            order = np.lexsort((rows[:, 2], rows[:, 1]))[:k_rows]
            mmin = min(0.0, float(rows[:, 1].min(initial=0.0)))
            out.append((mmin, rows[order, 2].astype(np.intp), rows[order, 3:]))
        return out, XC, col

    # ---- the dual bound ---------------------------------------------------------------------------
    def dual_bound(self, loss: Any, y: np.ndarray, beta: float, v0: np.ndarray, *,
                   max_constraint: float | None = None, progress: bool = False) -> DualBound:
        """Scale ``v0`` to dual feasibility: the largest ``s`` keeping every cone constraint
        (``s M <= beta``, ``M`` from :meth:`scan`) and the loss conjugate's domain, then the best ``s``
        below it; ``dual_value(s v0)`` is a certified lower bound on the optimum of (4)."""
        v0 = np.asarray(v0, dtype=np.float64).reshape(-1)
        if v0.shape != (self.n,):
            raise ValueError(f"dual candidate must have length n = {self.n}, got {v0.shape}")
        M = self.scan(v0, progress=progress).max_value if max_constraint is None else float(max_constraint)
        s_max = np.inf if M == 0 else beta / M
        vinf = self.comm.max(float(np.abs(v0).max(initial=0.0)))
        if np.isfinite(loss.dual_bound) and vinf > 0:
            s_max = min(s_max, loss.dual_bound / vinf)
        if not np.isfinite(s_max):
            s_max = 1e300
        if self.comm.distributed:  # the squared loss's dual from two sums over the rows of every rank
            if loss.name != "squared":
                raise ValueError(f"a dual bound over sharded rows supports the squared loss only, not {loss.name!r}")
            vy, vv = self.comm.sum(np.array([float(v0 @ y), float(v0 @ v0)]))
            s = 0.0 if vv == 0.0 else float(np.clip(vy / vv, 0.0, s_max))
            return DualBound(value=float(s * vy - 0.5 * s * s * vv), scale=s, max_constraint=float(M))
        s = float(loss.best_dual_scale(v0, y, s_max))
        return DualBound(value=float(loss.dual_value(s * v0, y)), scale=s, max_constraint=float(M))

    def polish(self, W: np.ndarray, Z: np.ndarray, *, rel_tol: float = 1e-6, scale: float = 0.0
               ) -> tuple[np.ndarray, np.ndarray, int]:
        """Project every group that becomes a neuron and leaves its cone exactly onto its cone
        (``Proj_{K_i}``); returns ``(W, Z, groups projected)``. Interior-point points violate their
        cones by ~1e-9; after this the recovered ReLU net reproduces (4) to rounding."""
        W = np.array(W, dtype=np.float64)
        Z = np.array(Z, dtype=np.float64)
        nw, nzn = np.linalg.norm(W, axis=1), np.linalg.norm(Z, axis=1)
        top = max(nw.max(initial=0.0), nzn.max(initial=0.0), float(scale))
        count = 0
        if top == 0.0:
            return W, Z, 0
        for V, norms in ((W, nw), (Z, nzn)):
            for i in np.flatnonzero(norms > rel_tol * top):
                if self.comm.min(float(self.group_values(int(i), V[i]).min(initial=0.0))) < 0:
                    V[i] = self.project(int(i), V[i], key=("polish", int(i), 0.0))[1]
                    count += 1
        return W, Z, count

    # ---- the violation --------------------------------------------------------------------------
    def cone_violation(self, W: np.ndarray, Z: np.ndarray, *, rel_tol: float = 1e-6, scale: float = 0.0) -> float:
        """Largest relative violation of ``(2 D_i - I) X w_i >= 0`` (and ``z_i``).

        ``max relu(-(2 D_i - I) X w_i) / (max_j ||x_j|| * s)`` over the groups that become neurons
        (``||w_i|| > rel_tol * s``, the recovery's threshold), ``s = max(max_j ||w_j||, scale)``;
        0 means feasible, and the number does not depend on the data's units.
        """
        W = np.asarray(W, dtype=np.float64)
        Z = np.asarray(Z, dtype=np.float64)
        nw, nzn = np.linalg.norm(W, axis=1), np.linalg.norm(Z, axis=1)
        top = max(nw.max(initial=0.0), nzn.max(initial=0.0), float(scale))
        if top == 0.0 or self.xmax == 0.0:
            return 0.0
        live = [np.flatnonzero(norms > rel_tol * top) for norms in (nw, nzn)]
        worst = 0.0
        if live[0].size + live[1].size > max(64, self.P // 2):  # dense: one operator pass for all groups
            op = self.op
            per = op.cone_violations(torch.as_tensor(W, device=op.device),
                                     torch.as_tensor(Z, device=op.device)).double().cpu().numpy()
            for k in (0, 1):
                worst = max(worst, float(per[live[k], k].max(initial=0.0)))
        else:
            for V, idx in zip((W, Z), live):
                for i in idx:
                    g = self.group_values(int(i), V[i])
                    worst = max(worst, float(np.maximum(-g, 0.0).max(initial=0.0)))
        return self.comm.max(worst) / (self.xmax * top)
