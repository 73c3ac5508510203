"""Sign patterns (hyperplane arrangements) of a patch matrix, MATH.md section 3.

A sign pattern is ``D(u) = diag(1[X u >= 0])``. We store, for each pattern, a
*gate* ``g`` (a vector of R^d that produces it, ``D = D(g)``) and its mask over
the training data, shaped like the images: ``masks[i, n, h, w] = 1[(X g_i)_{nhw} >= 0]``.

Two ways to get them:

* :func:`sample_patterns`: Gaussian gates ``g ~ N(0, I_d)`` (seeded), duplicates
  removed. The resulting program (4) is a restriction of the exact one.
* :func:`enumerate_patterns`: every full-dimensional cell of the arrangement
  ``{x_j^T u = 0}``, found by incremental cell splitting with LPs. With these the
  program (4) is the exact global problem. Supported when the arrangement has at
  most ``max_patterns`` cells (checked up front with the bound of MATH.md §3);
  larger ones are refused with an error.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from convexdual._validation import as_images
from convexdual.patches import conv_forward, patch_matrix

__all__ = [
    "SignPatterns",
    "sample_patterns",
    "enumerate_patterns",
    "patterns_from_gates",
    "compute_masks",
    "arrangement_upper_bound",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class SignPatterns:
    """A set of distinct sign patterns on one data set.

    Attributes:
        gates: ``(P, d)`` float64; ``masks[i] == 1[X gates[i] >= 0]``.
        masks: ``(P, N, H, W)`` bool.
        exact: True when the set is every cell of the arrangement (exact program).
        num_requested: gates drawn before deduplication (sampling), or P.
        source: "sampled", "enumerated", "gates" or a caller's label.
    """

    gates: np.ndarray
    masks: np.ndarray
    exact: bool = False
    num_requested: int = 0
    source: str = "sampled"
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.gates.ndim != 2:
            raise ValueError(f"gates must be (P, d); got shape {self.gates.shape}")
        if self.masks.ndim != 4 or self.masks.shape[0] != self.gates.shape[0]:
            raise ValueError(
                f"masks must be (P, N, H, W) with P = {self.gates.shape[0]}; got shape {self.masks.shape}"
            )
        if self.gates.shape[0] == 0:
            raise ValueError("a pattern set needs at least one pattern (got P = 0); ask for num_patterns >= 1")

    @property
    def num_patterns(self) -> int:
        return int(self.gates.shape[0])

    def __len__(self) -> int:
        return self.num_patterns

    def row_masks(self) -> np.ndarray:
        """Masks as a ``(P, n)`` bool matrix over patch rows."""
        return self.masks.reshape(self.num_patterns, -1)

    def subset(self, index: np.ndarray | list[int]) -> "SignPatterns":
        idx = np.asarray(index, dtype=int)
        return SignPatterns(
            gates=self.gates[idx], masks=self.masks[idx], exact=False,
            num_requested=len(idx), source=f"{self.source}[subset]",
        )

    def union(self, other: "SignPatterns") -> "SignPatterns":
        """Distinct patterns of both sets (self's order first)."""
        gates = np.concatenate([self.gates, other.gates])
        masks = np.concatenate([self.masks, other.masks])
        keep = _unique_rows(masks.reshape(len(gates), -1))
        return SignPatterns(
            gates=gates[keep], masks=masks[keep], exact=self.exact or other.exact,
            num_requested=len(gates), source=f"{self.source}+{other.source}",
        )


def compute_masks(images: np.ndarray, kernel_size: int, gates: np.ndarray, chunk: int = 256) -> np.ndarray:
    """``1[X g >= 0]`` for every gate, in float64, chunked over gates.

    Shapes:
        images ``(N, C, H, W)``, gates ``(P, d)`` -> ``(P, N, H, W)`` bool.
    """
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float64))
    out = np.empty((gates.shape[0],) + (images.shape[0],) + images.shape[2:], dtype=bool)
    for s in range(0, gates.shape[0], chunk):
        g = torch.from_numpy(np.ascontiguousarray(gates[s : s + chunk], dtype=np.float64))
        out[s : s + chunk] = (conv_forward(x, g, kernel_size) >= 0).permute(1, 0, 2, 3).numpy()
    return out


def _unique_rows(flat_masks: np.ndarray) -> np.ndarray:
    """Indices of the first occurrence of each distinct boolean row, in order."""
    packed = np.packbits(flat_masks, axis=1)
    _, first = np.unique(packed, axis=0, return_index=True)
    return np.sort(first)


def _check_d(images: np.ndarray, kernel_size: int) -> int:
    return int(images.shape[1] * kernel_size * kernel_size)


def patterns_from_gates(images, kernel_size: int, gates: np.ndarray, *, source: str = "gates") -> SignPatterns:
    """Distinct patterns produced by the given gates ``(m, d)`` (e.g. a net's filters)."""
    images = as_images(images, "images")
    gates = np.asarray(gates, dtype=np.float64)
    d = _check_d(images, kernel_size)
    if gates.ndim != 2 or gates.shape[1] != d:
        raise ValueError(f"gates must have shape (m, {d}) for C*k*k = {d}; got {gates.shape}")
    masks = compute_masks(images, kernel_size, gates)
    keep = _unique_rows(masks.reshape(len(gates), -1))
    return SignPatterns(gates=gates[keep], masks=masks[keep], exact=False,
                        num_requested=len(gates), source=source)


def sample_patterns(images, kernel_size: int, num_patterns: int, seed: int | np.random.Generator | None = 0) -> SignPatterns:
    """Sample sign patterns with Gaussian gates ``g ~ N(0, I_d)``; drop duplicates.

    Args:
        images: inputs ``(N, H, W)`` or ``(N, C, H, W)``.
        kernel_size: odd k.
        num_patterns: gates to draw (>= 1). Fewer patterns remain when some
            coincide; ``len(result)`` and ``result.num_requested`` say how many.
        seed: int seed or a ``numpy.random.Generator``.
    """
    if isinstance(num_patterns, bool) or not isinstance(num_patterns, (int, np.integer)) or num_patterns < 1:
        raise ValueError(f"num_patterns must be an int >= 1, got {num_patterns!r}")
    images = as_images(images, "images")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    d = _check_d(images, kernel_size)
    gates = rng.standard_normal((int(num_patterns), d))
    pats = patterns_from_gates(images, kernel_size, gates, source="sampled")
    logger.info("sampled %d gates -> %d distinct sign patterns", num_patterns, len(pats))
    return SignPatterns(gates=pats.gates, masks=pats.masks, exact=False,
                        num_requested=int(num_patterns), source="sampled")


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
    network (MATH.md §4). Cost is one small LP per (cell, hyperplane) pair, so this
    is for tiny problems: the distinct hyperplanes ``h`` and the rank ``r`` of the
    patch matrix must give ``2 sum_{k<r} C(h-1, k) <= max_patterns``; otherwise a
    ValueError says how large the bound is. Typical supported sizes: one 3x3 image
    with k = 3 (r = 9, at most 512 cells), a few images with ``d = C*k*k <= 2``.

    Returns:
        SignPatterns with ``exact=True``; each gate is a strict interior point of its cell.
    """
    from scipy.optimize import linprog

    images = as_images(images, "images")
    X = patch_matrix(images, kernel_size)
    H, index, sign = _distinct_hyperplanes(X)
    h = H.shape[0]
    if h == 0:
        gates = np.zeros((1, X.shape[1]))
        return SignPatterns(gates=gates, masks=compute_masks(images, kernel_size, gates),
                            exact=True, num_requested=1, source="enumerated")
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
    return SignPatterns(gates=gates, masks=masks, exact=True, num_requested=len(gates),
                        source="enumerated", info={"hyperplanes": h, "rank": r, "bound": bound})
