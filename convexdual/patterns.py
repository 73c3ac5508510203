"""Sign patterns (hyperplane arrangements) of a patch matrix, docs/math.md §3.

A sign pattern is ``D(u) = diag(1[X u >= 0])``. We store, for each pattern, only a
*gate* ``g`` (a vector of R^d that produces it, ``D = D(g)``); its mask over a data set,
``1[X g_i >= 0]``, is recomputed from the gate on that data when needed (docs/math.md §3),
so nothing of size ``P x n`` is kept.

Two ways to get them:

* :func:`sample_patterns`: Gaussian gates ``g ~ N(0, I_d)`` (seeded), duplicates
  removed. The resulting program (4) is a restriction of the exact one.
* :func:`enumerate_patterns`: every full-dimensional cell of the arrangement
  ``{x_j^T u = 0}``, found by incremental cell splitting with LPs. With these the
  program (4) is the exact global problem. Supported when the arrangement has at
  most ``max_patterns`` cells (checked up front with the bound of docs/math.md §3);
  larger ones are refused with an error.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass, field

import numpy as np

from convexdual._validation import as_images, check_kernel_size
from convexdual.patches import patch_matrix

__all__ = [
    "SignPatterns",
    "sample_patterns",
    "enumerate_patterns",
    "patterns_from_gates",
    "compute_masks",
    "unique_gates",
    "pattern_hashes",
    "data_key",
    "arrangement_upper_bound",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class SignPatterns:
    """A set of sign patterns, held as their gates (never as ``P x n`` masks).

    The mask of pattern ``i`` on a data set is ``1[X gates[i] >= 0]``; a
    :class:`~convexdual.problem.DualProblem` recomputes it from the gates on its own data
    whenever it is needed (:mod:`convexdual.engine`), so a problem's masks are always the gates'
    masks on that problem's inputs.

    Attributes:
        gates: ``(P, d)`` float64.
        exact: True when the gates are one interior point of every cell of the arrangement of
            the data identified by ``data_key`` (the program is then the exact problem (2)).
        num_requested: gates drawn before deduplication (sampling), or P.
        source: "sampled", "enumerated", "gates" or a caller's label.
        data_key: :func:`data_key` of the images and kernel size on which the gates were
            deduplicated (and enumerated); None when unknown (e.g. gates from a trained net).
        info: extra facts (hyperplanes, rank, bound of an enumeration, ...).
    """

    gates: np.ndarray
    exact: bool = False
    num_requested: int = 0
    source: str = "sampled"
    data_key: str | None = None
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        g = np.asarray(self.gates)
        if g.ndim != 2:
            raise ValueError(f"gates must be (P, d); got shape {g.shape}")
        if g.shape[0] == 0:
            raise ValueError("a pattern set needs at least one pattern (got P = 0); ask for num_patterns >= 1")
        if not np.all(np.isfinite(g)):
            raise ValueError("gates contain NaN/Inf; every gate must be a finite vector")
        if self.exact and self.data_key is None:
            raise ValueError("an exact (enumerated) pattern set must name the data it enumerates (data_key)")

    @property
    def num_patterns(self) -> int:
        return int(self.gates.shape[0])

    def __len__(self) -> int:
        return self.num_patterns

    def __repr__(self) -> str:
        return (f"SignPatterns(P={self.num_patterns}, d={self.gates.shape[1]}, source={self.source!r}, "
                f"exact={self.exact}, requested={self.num_requested})")

    def masks_on(self, images, kernel_size: int) -> np.ndarray:
        """Explicit ``(P, N, H, W)`` bool masks on ``images`` (small data only; memory-checked)."""
        return compute_masks(as_images(images, "images"), kernel_size, self.gates)

    def subset(self, index: np.ndarray | list[int]) -> "SignPatterns":
        idx = np.asarray(index, dtype=int)
        return SignPatterns(gates=self.gates[idx], exact=False, num_requested=len(idx),
                            source=f"{self.source}[subset]", data_key=self.data_key)

    def union(self, other: "SignPatterns") -> "SignPatterns":
        """Both sets' gates (self's first). Gates giving the same pattern are merged by
        :func:`~convexdual.problem.build_problem` on the problem's own data."""
        same = self.data_key is not None and self.data_key == other.data_key
        gates = np.concatenate([self.gates, other.gates])
        return SignPatterns(gates=gates, exact=bool(same and (self.exact or other.exact)),
                            num_requested=len(gates), source=f"{self.source}+{other.source}",
                            data_key=self.data_key if same else None, info={"deduplicated": False})


def data_key(images: np.ndarray, kernel_size: int) -> str:
    """A fingerprint (sha256) of the images and the kernel size: which data a pattern set belongs to."""
    x = np.ascontiguousarray(images, dtype=np.float64)
    h = hashlib.sha256()
    h.update(repr((x.shape, int(kernel_size))).encode())
    h.update(x.tobytes())
    return h.hexdigest()


def compute_masks(images: np.ndarray, kernel_size: int, gates: np.ndarray, *,
                  memory_limit_mb: float | None = None) -> np.ndarray:
    """``1[X g >= 0]`` for every gate: explicit masks for small problems (tests, enumeration).

    Shapes:
        images ``(N, C, H, W)``, gates ``(P, d)`` -> ``(P, N, H, W)`` bool.

    Raises:
        MemoryBudgetError: ``P x n`` bytes do not fit ``memory_limit_mb``.
    """
    from convexdual.engine import check_memory

    images = np.asarray(images, dtype=np.float64)
    gates = np.asarray(gates, dtype=np.float64)
    N, _, H, W = images.shape
    check_memory(gates.shape[0] * N * H * W, memory_limit_mb, f"explicit masks of {gates.shape[0]} patterns",
                 "explicit masks are for small problems; use the problem's engine (masks from gates)")
    X = patch_matrix(images, kernel_size)
    out = (X @ gates.T >= 0).T
    return np.ascontiguousarray(out).reshape(gates.shape[0], N, H, W)


def _check_d(images: np.ndarray, kernel_size: int) -> int:
    return int(images.shape[1] * kernel_size * kernel_size)


def pattern_hashes(images: np.ndarray, kernel_size: int, gates: np.ndarray, *, chunk_mb: float = 64.0,
                   progress: bool = False, desc: str = "hashing patterns") -> list[bytes]:
    """A 128-bit BLAKE2b digest of each gate's mask ``1[X g >= 0]`` on ``images`` (equal masks,
    equal digests). Streams over chunks of gates: at most ``chunk_mb`` of masks exist at once."""
    x = np.ascontiguousarray(images, dtype=np.float64)
    gates = np.asarray(gates, dtype=np.float64)
    X = patch_matrix(x, kernel_size)
    n = X.shape[0]
    step = int(max(1, min(max(len(gates), 1), chunk_mb * 2**20 // max(9 * n, 1))))
    out: list[bytes] = []
    from tqdm.auto import tqdm

    with tqdm(total=len(gates), desc=desc, disable=not progress, leave=False, dynamic_ncols=True) as bar:
        for s in range(0, len(gates), step):
            M = X @ gates[s:s + step].T >= 0  # (n, c)
            packed = np.ascontiguousarray(np.packbits(M, axis=0).T)  # (c, ceil(n/8))
            out.extend(hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in packed)
            bar.update(min(step, len(gates) - s))
    return out


def unique_gates(images: np.ndarray, kernel_size: int, gates: np.ndarray, *, chunk_mb: float = 64.0,
                 progress: bool = False, desc: str = "deduplicating patterns") -> np.ndarray:
    """Indices (in order) of the first gate of each distinct pattern ``1[X g >= 0]`` on ``images``,
    by :func:`pattern_hashes` (the ``P x n`` mask matrix is never formed)."""
    seen: set[bytes] = set()
    keep: list[int] = []
    for j, key in enumerate(pattern_hashes(images, kernel_size, gates, chunk_mb=chunk_mb, progress=progress,
                                           desc=desc)):
        if key not in seen:
            seen.add(key)
            keep.append(j)
    return np.asarray(keep, dtype=np.intp)


def patterns_from_gates(images, kernel_size: int, gates: np.ndarray, *, source: str = "gates",
                        progress: bool = False) -> SignPatterns:
    """Distinct patterns produced by the given gates ``(m, d)`` on ``images`` (e.g. a net's filters)."""
    images = as_images(images, "images")
    k = check_kernel_size(kernel_size, images.shape[2], images.shape[3])
    gates = np.asarray(gates, dtype=np.float64)
    d = _check_d(images, k)
    if gates.ndim != 2 or gates.shape[1] != d:
        raise ValueError(f"gates must have shape (m, {d}) for C*k*k = {d}; got {gates.shape}")
    keep = unique_gates(images, k, gates, progress=progress)
    return SignPatterns(gates=gates[keep], exact=False, num_requested=len(gates), source=source,
                        data_key=data_key(images, k))


def sample_patterns(images, kernel_size: int, num_patterns: int, seed: int | np.random.Generator | None = 0, *,
                    memory_limit_mb: float | None = None, progress: bool = False) -> SignPatterns:
    """Sample sign patterns with Gaussian gates ``g ~ N(0, I_d)``; drop duplicates.

    Streaming: masks are hashed chunk by chunk (:func:`unique_gates`), never held for all gates.

    Args:
        images: inputs ``(N, H, W)`` or ``(N, C, H, W)``.
        kernel_size: odd k, at most the image size.
        num_patterns: gates to draw (>= 1). Fewer patterns remain when some coincide;
            ``len(result)`` and ``result.num_requested`` say how many.
        seed: int seed or a ``numpy.random.Generator``.
        memory_limit_mb: refuse (before allocating) when the gates do not fit.
        progress: a tqdm bar over the gates.
    """
    from convexdual.engine import check_memory

    if isinstance(num_patterns, bool) or not isinstance(num_patterns, (int, np.integer)) or num_patterns < 1:
        raise ValueError(f"num_patterns must be an int >= 1, got {num_patterns!r}")
    images = as_images(images, "images")
    k = check_kernel_size(kernel_size, images.shape[2], images.shape[3])
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    d = _check_d(images, k)
    check_memory(int(num_patterns) * d * 8 * 2, memory_limit_mb, f"{int(num_patterns):,} gates of dimension {d}",
                 "ask for fewer patterns")
    gates = rng.standard_normal((int(num_patterns), d))
    keep = unique_gates(images, k, gates, progress=progress, desc="sampling patterns")
    logger.info("sampled %d gates -> %d distinct sign patterns", num_patterns, len(keep))
    return SignPatterns(gates=gates[keep], exact=False, num_requested=int(num_patterns), source="sampled",
                        data_key=data_key(images, k), info={"unique": int(len(keep))})


def arrangement_upper_bound(num_hyperplanes: int, rank: int) -> int:
    """Cells of a central arrangement of h hyperplanes in rank r: ``2 sum_{k<r} C(h-1, k)``."""
    h, r = int(num_hyperplanes), int(rank)
    if h == 0:
        return 1
    return 2 * sum(math.comb(h - 1, k) for k in range(min(r, h)))


def _distinct_hyperplanes(X: np.ndarray, tol: float = 1e-12):
    """Unit normals of the distinct hyperplanes of the rows of X, with orientations.

    Returns ``(H, index, sign)`` where row j of X is ``sign[j] * |x_j| * H[index[j]]``
    (``index[j] = -1`` for zero rows, which lie on every cell's closure and are
    always ``1[0 >= 0] = 1``).
    """
    norms = np.linalg.norm(X, axis=1)
    nz = norms > tol * max(1.0, norms.max(initial=0.0))
    U = np.zeros_like(X)
    U[nz] = X[nz] / norms[nz, None]
    # canonical orientation: first nonzero entry positive
    sign = np.ones(len(X))
    for j in np.flatnonzero(nz):
        first = np.flatnonzero(np.abs(U[j]) > 1e-9)[0]
        if U[j, first] < 0:
            sign[j] = -1.0
            U[j] = -U[j]
    keys = np.round(U[nz], 9)
    _, inv_unique, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    H = U[nz][inv_unique]
    index = np.full(len(X), -1)
    index[nz] = inverse.ravel()
    return H, index, sign


def enumerate_patterns(images, kernel_size: int, max_patterns: int = 4096) -> SignPatterns:
    """Every sign pattern of the data's patch matrix (all full-dimensional cells).

    With these, program (4) is the exact training problem (2) for a wide enough
    network (docs/math.md §4). Cost is one small LP per (cell, hyperplane) pair, so this
    is for tiny problems: the distinct hyperplanes ``h`` and the rank ``r`` of the
    patch matrix must give ``2 sum_{k<r} C(h-1, k) <= max_patterns``; otherwise a
    ValueError says how large the bound is. Typical supported sizes: one 3x3 image
    with k = 3 (r = 9, at most 512 cells), a few images with ``d = C*k*k <= 2``.

    Returns:
        SignPatterns with ``exact=True``; each gate is a strict interior point of its cell.
    """
    from scipy.optimize import linprog

    images = as_images(images, "images")
    kernel_size = check_kernel_size(kernel_size, images.shape[2], images.shape[3])
    key = data_key(images, kernel_size)
    X = patch_matrix(images, kernel_size)
    H, index, sign = _distinct_hyperplanes(X)
    h = H.shape[0]
    if h == 0:
        gates = np.zeros((1, X.shape[1]))
        return SignPatterns(gates=gates, exact=True, num_requested=1, source="enumerated", data_key=key)
    # work in the row space (rank r)
    _, svals, Vt = np.linalg.svd(H, full_matrices=False)
    r = int(np.sum(svals > 1e-10 * svals[0]))
    V = Vt[:r].T  # (d, r)
    Hr = H @ V  # (h, r)
    bound = arrangement_upper_bound(h, r)
    if bound > max_patterns:
        raise ValueError(
            f"exact enumeration refused: the patch matrix has {h} distinct hyperplanes of rank {r}, "
            f"so up to {bound} sign patterns (limit max_patterns={max_patterns}). Use fewer/smaller "
            "images or fewer channels, raise max_patterns, or sample patterns with sample_patterns()"
        )

    def split_point(signs: np.ndarray, t: int, side: float) -> np.ndarray | None:
        # find u with signs[j] * Hr[j] u >= 1 (j < t) and side * Hr[t] u >= 1
        A = np.vstack([-(signs[:, None] * Hr[:t]), -side * Hr[t][None]])
        res = linprog(np.zeros(r), A_ub=A, b_ub=-np.ones(t + 1), bounds=[(None, None)] * r, method="highs")
        if res.status == 0:
            return res.x
        return None

    # cells: list of (signs over processed hyperplanes, interior point in R^r)
    cells: list[tuple[np.ndarray, np.ndarray]] = [
        (np.array([1.0]), Hr[0] / np.dot(Hr[0], Hr[0])),
        (np.array([-1.0]), -Hr[0] / np.dot(Hr[0], Hr[0])),
    ]
    for t in range(1, h):
        new_cells = []
        for signs, p in cells:
            val = float(Hr[t] @ p)
            scale = float(np.min(signs * (Hr[:t] @ p)))  # current margin on old hyperplanes (>= 1)
            if abs(val) > 1e-9 * max(1.0, np.linalg.norm(p)):
                side = np.sign(val)
                # make p a margin-1 point of this side too
                p_here = p / min(scale, abs(val)) if min(scale, abs(val)) > 0 else p
                new_cells.append((np.append(signs, side), p_here))
                q = split_point(signs, t, -side)
                if q is not None:
                    new_cells.append((np.append(signs, -side), q))
            else:
                for side in (1.0, -1.0):
                    q = split_point(signs, t, side)
                    if q is not None:
                        new_cells.append((np.append(signs, side), q))
        cells = new_cells
        if len(cells) > max_patterns:  # pragma: no cover - the bound above prevents it
            raise ValueError(f"more than max_patterns={max_patterns} cells")
    cell_signs = np.array([c[0] for c in cells])  # (P, h)
    gates = np.array([V @ c[1] for c in cells])  # (P, d)
    masks = compute_masks(images, kernel_size, gates)
    # the masks from the gates must equal the cell sign vectors: check (strict margins)
    flat = masks.reshape(len(gates), -1)
    nz = index >= 0
    expected = np.ones_like(flat)
    expected[:, nz] = (cell_signs[:, index[nz]] * sign[nz][None, :]) > 0
    if not np.array_equal(flat, expected):  # pragma: no cover - numerical safety net
        raise RuntimeError("enumerated gates do not reproduce their cells; the data may be ill-conditioned")
    logger.info("enumerated %d sign patterns (%d hyperplanes, rank %d)", len(gates), h, r)
    return SignPatterns(gates=gates, exact=True, num_requested=len(gates), data_key=key,
                        source="enumerated", info={"hyperplanes": h, "rank": r, "bound": bound})
