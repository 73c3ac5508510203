"""Restricted, Gram-compressed versions of program (4) as Clarabel data. Builds; never solves.

Program (4) with the squared loss is

    min  1/2 || A u - y ||^2 + beta * sum_k ||u_k||     s.t.  (2 D_k - I) X u_k >= 0

where the groups ``k`` are pairs ``(pattern i, sign s)`` (``s = +1`` for ``w_i``,
``s = -1`` for ``z_i``) and ``A = [s_k D_{i_k} X]``. This module emits a
*restricted* version of it for the solvers of :mod:`convexdual.solvers.working_set` and
:mod:`convexdual.solvers.active_set`:

* only a **working set of groups** (the others are fixed at zero);
* only a **working set of cone rows** per group (a relaxation of the cones);
* the data term either **compressed**: ``1/2 u^T G u - b^T u + 1/2 ||y||^2`` with the
  Gram blocks ``G_{kl} = s_k s_l X^T D_{i_k} D_{i_l} X`` and ``b_k = s_k X^T D_{i_k} y``
  (a ``P d``-sized quadratic objective, no ``n``-row residual at all), or
  **explicit**: a residual variable ``r = A u - y`` with ``n`` equality rows (the
  plain program's form, kept to measure the compression against).

Gram blocks depend only on pairs of patterns, so :class:`PatternGram` computes each
pair once (``(m_a * m_b) @ [x_j x_j^T]``) and reuses it as the working set grows.

The data are Clarabel's standard form: ``min 1/2 x^T P x + q^T x`` s.t. ``A x + s = b``,
``s`` in the listed cones. Variables: ``x = [u_1..u_S (d each), t_1..t_S, r (n, explicit only)]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from convexdual.problem import DualProblem

__all__ = ["PatternGram", "RestrictedProgram", "build_restricted", "group_weights"]


class PatternGram:
    """Cache of ``X^T D_a D_b X`` (``(d, d)``) for pattern pairs, computed on demand.

    Args:
        X: patch matrix ``(n, d)``.
        masks: a callable ``i -> (n,)`` bool mask of pattern ``i`` (e.g. ``DualProblem.mask``), or
            a ``(P, n)`` 0/1 array.
        chunk: pattern pairs per matrix product (at most ``max_bytes`` of masks at once).
        max_bytes: memory budget of the precomputed outer products and of a chunk.

    Shapes:
        ``outer`` is ``(n, d*d)``: row ``j`` is ``vec(x_j x_j^T)`` (None when over budget).
    """

    def __init__(self, X: np.ndarray, masks, chunk: int = 256, max_bytes: float = 2**28) -> None:
        self.X = X
        self.mask = masks if callable(masks) else (lambda i, _m=masks: np.asarray(_m[i], dtype=bool))
        self.d = int(X.shape[1])
        n = X.shape[0]
        # the (n, d*d) table of row outer products is the fast path; for large d it would
        # not fit the budget, and each block is then X^T diag(m_a m_b) X on its own
        self.outer = None
        if n * self.d * self.d * 8 <= max_bytes:
            self.outer = (X[:, :, None] * X[:, None, :]).reshape(n, self.d * self.d)
        self.chunk = max(1, min(int(chunk), int(max_bytes // (8 * max(n, 1)))))
        self._blocks: dict[tuple[int, int], np.ndarray] = {}

    @property
    def num_cached(self) -> int:
        return len(self._blocks)

    def _fill(self, pairs: list[tuple[int, int]]) -> None:
        if self.outer is None:
            for i, j in pairs:
                self._blocks[(i, j)] = self.X.T @ (self.X * (self.mask(i) & self.mask(j))[:, None])
            return
        for start in range(0, len(pairs), self.chunk):
            part = pairs[start:start + self.chunk]
            both = np.stack([self.mask(i) & self.mask(j) for i, j in part]).astype(np.float64)
            prod = both @ self.outer  # (len, d*d)
            for (i, j), blk in zip(part, prod.reshape(len(part), self.d, self.d)):
                self._blocks[(i, j)] = blk

    def matrix(self, patterns: np.ndarray) -> np.ndarray:
        """``[X^T D_a D_b X]_{a, b in patterns}``, dense ``(p*d, p*d)``, symmetric."""
        patterns = np.asarray(patterns, dtype=np.intp)
        uniq = sorted(set(patterns.tolist()))
        missing = [(a, b) for ia, a in enumerate(uniq) for b in uniq[ia:] if (a, b) not in self._blocks]
        if missing:
            self._fill(missing)
        p, d = len(patterns), self.d
        G = np.empty((p * d, p * d))
        for k, a in enumerate(patterns):
            for m in range(k, p):
                b = patterns[m]
                blk = self._blocks[(a, b) if a <= b else (b, a)]
                blk = blk if a <= b else blk.T
                G[k * d:(k + 1) * d, m * d:(m + 1) * d] = blk
                if m != k:
                    G[m * d:(m + 1) * d, k * d:(k + 1) * d] = blk.T
        return G


@dataclass(frozen=True, eq=False)
class RestrictedProgram:
    """Clarabel data of a restricted program (4) and how to read a solution back.

    Attributes:
        P, q, A, b: Clarabel's ``min 1/2 x^T P x + q^T x, A x + s = b`` (P upper triangular CSC).
        cone_sizes: ``(zero rows, nonnegative rows, [SOC sizes])`` in that order.
        pattern, sign: ``(S,)`` the groups: pattern index and +1 (w) / -1 (z).
        rows: per group, the cone rows (indices into the patch rows) in the program.
        d: group size.
        offset: constant to add to Clarabel's objective to get the value of the
            restricted (4) (``1/2 ||y||^2`` for the compressed form, else 0).
        compressed: which data term was used.
    """

    P: sp.csc_matrix
    q: np.ndarray
    A: sp.csc_matrix
    b: np.ndarray
    cone_sizes: tuple[int, int, tuple[int, ...]]
    pattern: np.ndarray
    sign: np.ndarray
    rows: tuple[np.ndarray, ...]
    d: int
    offset: float
    compressed: bool

    @property
    def num_groups(self) -> int:
        return int(self.pattern.shape[0])

    @property
    def num_cone_rows(self) -> int:
        return int(sum(len(r) for r in self.rows))

    def cones(self) -> list:
        """The Clarabel cone objects (imports clarabel)."""
        import clarabel

        zero, nonneg, socs = self.cone_sizes
        out = []
        if zero:
            out.append(clarabel.ZeroConeT(zero))
        if nonneg:
            out.append(clarabel.NonnegativeConeT(nonneg))
        out.extend(clarabel.SecondOrderConeT(k) for k in socs)
        return out

    def split(self, x: np.ndarray) -> np.ndarray:
        """The groups' weights ``(S, d)`` from Clarabel's ``x``."""
        S, d = self.num_groups, self.d
        return np.asarray(x[: S * d], dtype=np.float64).reshape(S, d)


def group_weights(P: int, d: int, pattern: np.ndarray, sign: np.ndarray, U: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scatter group weights ``U (S, d)`` into full ``W, Z`` of shape ``(P, d)`` (zeros elsewhere)."""
    W = np.zeros((P, d))
    Z = np.zeros((P, d))
    pos = sign > 0
    W[pattern[pos]] = U[pos]
    Z[pattern[~pos]] = U[~pos]
    return W, Z


def build_restricted(problem: DualProblem, pattern: np.ndarray, sign: np.ndarray, rows: list[np.ndarray] | tuple,
                     *, compressed: bool = True, gram: PatternGram | None = None,
                     cone_scale: np.ndarray | None = None, xty: np.ndarray | None = None,
                     row_coefs: list[np.ndarray] | None = None) -> RestrictedProgram:
    """Emit program (4) restricted to the given groups and cone rows (squared loss only).

    Args:
        problem: the full program; must use the squared loss.
        pattern, sign: ``(S,)`` the working groups (pattern index, +1 for w / -1 for z).
        rows: per group, indices of the patch rows whose cone constraint is imposed.
        compressed: Gram form of the data term (``P d``-sized) instead of the ``n``-row residual.
        gram: a :class:`PatternGram` to reuse across calls (made on the fly if None); any
            object with the same ``matrix(patterns)`` method will do.
        cone_scale: optional ``(n,)`` positive row scales for the cone rows (1/||x_j||
            puts every row on the same footing; feasibility is unchanged).
        xty: optional ``(S, d)`` precomputed ``X^T D_{i_k} y`` per group (unsigned), e.g. from a
            caller's cache; computed from the row masks when None (compressed form only).
        row_coefs: optional, per group, the cone rows themselves, ``(len(rows[k]), d)``: the signed
            (and scaled) rows ``(2 D_i - I) x_j`` (e.g. gathered from the ranks that hold them, see
            :meth:`~convexdual.engine.PatternEngine.cone_rows_many`); then ``cone_scale`` is not used.

    Returns:
        A :class:`RestrictedProgram`.

    Raises:
        ValueError: non-squared loss, or groups/rows of the wrong shape.
    """
    if problem.loss.name != "squared":
        raise ValueError(f"the restricted program supports the squared loss only; got {problem.loss.name!r}")
    pattern = np.asarray(pattern, dtype=np.intp)
    sign = np.asarray(sign, dtype=np.float64)
    if pattern.ndim != 1 or pattern.shape != sign.shape or len(rows) != len(pattern):
        raise ValueError("pattern, sign and rows must describe the same number of groups")
    X, y = problem.X, problem.y
    n, d, S = problem.n, problem.d, len(pattern)
    nu, nt = S * d, S
    nr = 0 if compressed else n
    nvar = nu + nt + nr

    # --- objective --------------------------------------------------------------
    q = np.zeros(nvar)
    q[nu:nu + nt] = problem.beta
    if compressed:
        gram = gram if gram is not None else PatternGram(X, problem.mask)
        G = gram.matrix(pattern) * np.repeat(sign, d)[:, None] * np.repeat(sign, d)[None, :]
        Pm = sp.triu(sp.csc_matrix(G), format="csc")
        Pm.resize(nvar, nvar)
        if xty is None:
            xty = np.stack([X[problem.mask(int(i))].T @ y[problem.mask(int(i))] for i in pattern])
        by = np.asarray(xty, dtype=np.float64) * sign[:, None]  # (S, d): s_k X^T D_k y
        q[:nu] = -by.reshape(-1)
        offset = 0.5 * float(y @ y)
    else:
        Pm = sp.csc_matrix((np.ones(n), (np.arange(nu + nt, nvar), np.arange(nu + nt, nvar))), shape=(nvar, nvar))
        offset = 0.0

    blocks, rhs = [], []
    # --- zero cone: r - A_S u = -y (explicit form only) ------------------------------
    if not compressed:
        AS = (problem.masks(pattern)[:, :, None] * X[None]) * sign[:, None, None]  # (S, n, d)
        AS = AS.transpose(1, 0, 2).reshape(n, nu)
        Z0 = sp.hstack([sp.csc_matrix(-AS), sp.csc_matrix((n, nt)), sp.identity(n, format="csc")], format="csc")
        blocks.append(Z0)
        rhs.append(-y)
    # --- nonnegative cone: (2 D_k - I) X u_k >= 0 on the working rows ----------------
    data, ri, ci = [], [], []
    r0 = 0
    for k in range(S):
        rk = np.asarray(rows[k], dtype=np.intp)
        if rk.size == 0:
            continue
        if row_coefs is not None:
            coef = -np.asarray(row_coefs[k], dtype=np.float64)
        else:
            coef = -(np.where(problem.mask(int(pattern[k]))[rk], 1.0, -1.0)[:, None] * X[rk])
            if cone_scale is not None:
                coef = coef * cone_scale[rk][:, None]
        data.append(coef.reshape(-1))
        ri.append(np.repeat(np.arange(r0, r0 + rk.size), d))
        ci.append(np.tile(np.arange(k * d, (k + 1) * d), rk.size))
        r0 += rk.size
    num_nonneg = r0
    if num_nonneg:
        blocks.append(sp.csc_matrix((np.concatenate(data), (np.concatenate(ri), np.concatenate(ci))),
                                    shape=(num_nonneg, nvar)))
        rhs.append(np.zeros(num_nonneg))
    # --- second-order cones: ||u_k|| <= t_k ------------------------------------------
    soc_rows = np.arange(S * (d + 1))
    t_rows = soc_rows[:: d + 1]
    u_rows = np.delete(soc_rows, np.s_[:: d + 1])
    soc_cols = np.concatenate([nu + np.arange(S), np.arange(nu)])
    soc = sp.csc_matrix((-np.ones(S * (d + 1)), (np.concatenate([t_rows, u_rows]), soc_cols)),
                        shape=(S * (d + 1), nvar))
    blocks.append(soc)
    rhs.append(np.zeros(S * (d + 1)))
    A = sp.vstack(blocks, format="csc")
    b = np.concatenate(rhs)
    return RestrictedProgram(P=Pm, q=q, A=A, b=b, cone_sizes=(nr, num_nonneg, (d + 1,) * S),
                             pattern=pattern, sign=sign, rows=tuple(np.asarray(r, dtype=np.intp) for r in rows),
                             d=d, offset=offset, compressed=compressed)
