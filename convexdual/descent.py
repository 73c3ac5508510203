"""Descent neurons: directions ``u`` with ``|r^T relu(X u)| > beta ||u||`` (docs/math.md §6).

For a residual (dual candidate) ``r`` the global dual constraint of (4) over *all*
sign patterns is ``max_{||u|| = 1} |r^T relu(X u)| <= beta``. A unit ``u`` with
``s r^T relu(X u) > beta`` (``s = +-1``) is a *descent neuron*: adding
``(sqrt(a) u, s sqrt(a))`` to the network lowers objective (2) for small ``a > 0``.

Two ways to look for one:

* :func:`cell_maxima`: over a finite pattern set, the exact maximum on each cell,
  ``max{ s c_i^T u : (2D_i - I) X u >= 0, ||u|| <= 1 } = ||Proj_{K_i}(s c_i)||`` with
  ``c_i = X^T D_i r`` (cone projection by NNLS). Over an *exactly enumerated* set this
  decides the question; over a sampled set it is exact on those cells only.
* :func:`search_descent`: a one-sided search over all of R^d: sampled gates, then
  many starts of monotone projected ascent on the unit sphere, then the exact
  maximum on the best cells found. It can only find violations, never prove there
  are none.

Everything runs through the convolution operators, so ``device="cuda"`` works; the
exact per-cell polish uses the explicit patch matrix (rows ``n``, columns ``d``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from convexdual.engine import PatternEngine, cone_projection
from convexdual.patches import conv_adjoint, conv_forward, patch_matrix
from convexdual.patterns import SignPatterns

__all__ = ["DescentCandidate", "DescentSearch", "cell_maxima", "search_descent",
           "dual_correlations"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class DescentCandidate:
    """One cell's best direction.

    Attributes:
        ratio: ``s r^T relu(X u) / beta`` at the unit vector ``u`` (> 1: a descent neuron).
        u: ``(d,)`` unit vector achieving it (evaluated directly, not only bounded).
        sign: ``s``: the sign the new neuron's output weight must have.
        gate: ``(d,)`` a gate whose pattern ``1[X gate >= 0]`` is the cell of ``u``
            (an interior point when the cell came from the ascent or from a gate).
    """

    ratio: float
    u: np.ndarray
    sign: float
    gate: np.ndarray


@dataclass(frozen=True, eq=False)
class DescentSearch:
    """Result of a descent-neuron search.

    Attributes:
        max_ratio: largest ``|r^T relu(X u)| / (beta ||u||)`` found (exact when ``exact``).
        best: the candidate achieving it (None if every correlation was 0).
        violators: distinct cells with ratio > 1 + ``margin``, best first.
        exact: True when every cell of an exact arrangement was checked: then
            ``max_ratio <= 1`` *proves* there is no descent neuron.
        num_starts: ascent runs (0 in exact mode).
        num_gates: sampled gates evaluated.
        seconds: wall time.
    """

    max_ratio: float
    best: DescentCandidate | None
    violators: tuple[DescentCandidate, ...]
    exact: bool
    num_starts: int
    num_gates: int
    seconds: float
    info: dict = field(default_factory=dict)

    @property
    def found(self) -> bool:
        return len(self.violators) > 0


def dual_correlations(images: torch.Tensor, kernel_size: int, r: torch.Tensor, U: torch.Tensor) -> torch.Tensor:
    """``r^T relu(X u_j) / ||u_j||`` for every row of ``U`` (0 for zero rows).

    Shapes:
        images ``(N, C, H, W)``, r ``(N, 1, H, W)``, U ``(m, d)`` -> ``(m,)``.
    """
    Z = conv_forward(images, U, kernel_size).clamp_min(0)
    val = (Z * r).sum(dim=(0, 2, 3))
    nrm = U.norm(dim=1)
    return torch.where(nrm > 0, val / nrm.clamp_min(1e-300), torch.zeros_like(val))


def _direct_ratio(X: np.ndarray, r: np.ndarray, u: np.ndarray, sign: float, beta: float) -> float:
    nu = float(np.linalg.norm(u))
    if nu == 0.0:
        return 0.0
    return float(sign * (r @ np.maximum(X @ u, 0.0)) / (beta * nu))



def _record(cand: "DescentCandidate", best: "DescentCandidate | None", violators: list, margin: float):
    """Keep ``cand`` among the violators if it beats ``1 + margin``; return the better of it and ``best``."""
    if cand.ratio > 1.0 + margin:
        violators.append(cand)
    return cand if best is None or cand.ratio > best.ratio else best


def _worst_first(violators: list, limit: int | None) -> list:
    """Violators by decreasing ratio, at most ``limit`` of them."""
    violators = sorted(violators, key=lambda c: -c.ratio)
    return violators if limit is None else violators[:limit]

def _polish(X: np.ndarray, r: np.ndarray, mask: np.ndarray, sign: float, beta: float,
            gate: np.ndarray) -> DescentCandidate:
    """Exact maximum of ``sign r^T relu(X u)`` on the closed cell of ``mask`` (unit ``u``)."""
    Dm = mask.astype(np.float64)
    c = sign * (X.T @ (Dm * r))
    _, p = cone_projection(X, c, signs=2.0 * Dm - 1.0)
    npn = float(np.linalg.norm(p))
    if npn == 0.0:
        return DescentCandidate(0.0, gate / max(np.linalg.norm(gate), 1e-300), sign, gate)
    u = p / npn
    # evaluate directly: relu(X u) equals D X u only up to the NNLS accuracy
    ratio = _direct_ratio(X, r, u, sign, beta)
    return DescentCandidate(ratio, u, sign, gate)


def _key(mask: np.ndarray, sign: float) -> bytes:
    return np.packbits(mask).tobytes() + (b"+" if sign > 0 else b"-")


def cell_maxima(images: np.ndarray, kernel_size: int, r: np.ndarray, beta: float, patterns: SignPatterns,
                *, margin: float = 1e-9, max_violators: int | None = None) -> DescentSearch:
    """Exact maximum of ``|r^T relu(X u)|`` on each cell of ``patterns`` (both signs).

    Cells are visited in decreasing order of the gated bound ``||X^T D_i r||`` (an upper
    bound on the cell maximum); the visit stops once that bound is below both
    ``beta`` and the best value found, so the maximum and every violator are exact.

    Args:
        images: ``(N, C, H, W)`` float64 inputs. r: residual / dual candidate ``(n,)``.
        beta: weight decay. patterns: the cells (exact enumeration or any pool).
        margin: a cell counts as violating when its ratio exceeds ``1 + margin``.
        max_violators: keep at most this many violators (all when None).

    Returns:
        DescentSearch with ``exact = patterns.exact``.
    """
    t0 = time.perf_counter()
    eng = PatternEngine(np.asarray(images, dtype=np.float64), kernel_size, patterns.gates)
    r = np.asarray(r, dtype=np.float64).reshape(-1)
    res = eng.scan(r, threshold=beta * (1.0 + margin), exact_max=True, tag="cells")

    def candidate(i: int, sign: float, proj: np.ndarray) -> DescentCandidate:
        npn = float(np.linalg.norm(proj))
        gate = patterns.gates[i]
        if npn == 0.0:
            return DescentCandidate(0.0, gate / max(np.linalg.norm(gate), 1e-300), sign, gate)
        u = proj / npn  # evaluated directly: relu(X u) equals D X u only up to the NNLS accuracy
        return DescentCandidate(_direct_ratio(eng.X, r, u, sign, beta), u, sign, gate)

    best = None if res.best is None else candidate(*res.best)
    violators: list[DescentCandidate] = []
    for _, i, sign, proj in res.found:
        best = _record(candidate(i, sign, proj), best, violators, margin)
    violators = _worst_first(violators, max_violators)
    return DescentSearch(max_ratio=0.0 if best is None else max(best.ratio, 0.0), best=best,
                         violators=tuple(violators), exact=bool(patterns.exact), num_starts=0,
                         num_gates=0, seconds=time.perf_counter() - t0,
                         info={"cells": int(eng.P), "cells_projected": int(res.projections)})


def search_descent(images: np.ndarray, kernel_size: int, r: np.ndarray, beta: float, *,
                   num_starts: int = 64, num_gates: int = 2048, steps: int = 200,
                   extra_gates: np.ndarray | None = None, seed: int | np.random.Generator | None = 0,
                   max_polish: int = 16, margin: float = 1e-9, max_violators: int | None = None,
                   device: torch.device | str = "cpu", chunk: int = 512,
                   explicit_limit: int = 4_000_000) -> DescentSearch:
    """Search all of R^d for descent neurons (one-sided: it finds, it cannot prove absence).

    1. ``num_gates`` Gaussian gates (plus ``extra_gates``, e.g. a net's filters or a
       pattern set's gates) are evaluated: ``|r^T relu(X g)| / ||g||``.
    2. ``num_starts`` runs of monotone projected ascent of ``s r^T relu(X u)`` on the
       unit sphere (backtracking step per run, at most ``steps`` iterations): half start
       from the best gates, half from fresh Gaussian directions with alternating ``s``.
    3. The ``max_polish`` best distinct cells get their exact cell maximum (cone
       projection); every reported value is evaluated directly at a unit vector.

    Args:
        images: ``(N, C, H, W)`` float64. r: residual / dual candidate ``(n,)``.
        beta: weight decay (> 0).
        seed: seeds the gates and starts (no global state).
        margin: a violator needs ratio > ``1 + margin``.
        device: where the convolutions run.
        explicit_limit: the ascent multiplies by the explicit patch matrix when
            ``n * d`` is at most this (fast on small data), else uses convolutions.

    Returns:
        DescentSearch with ``exact=False``.

    Shapes:
        ``n = N*H*W``, ``d = C*k*k``; ``extra_gates`` ``(m, d)``.
    """
    if int(num_starts) < 0 or int(num_gates) < 0 or int(steps) < 0:
        raise ValueError(f"num_starts, num_gates and steps must be >= 0; got {num_starts}, {num_gates}, {steps}")
    t0 = time.perf_counter()
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    dev = torch.device(device)
    N, C, H, W = images.shape
    d = C * kernel_size**2
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float64)).to(dev)
    r_np = np.asarray(r, dtype=np.float64).reshape(-1)
    rt = torch.from_numpy(r_np.reshape(N, 1, H, W)).to(dev)

    # 1. gates
    parts = [rng.standard_normal((int(num_gates), d))]
    if extra_gates is not None and len(extra_gates):
        eg = np.asarray(extra_gates, dtype=np.float64).reshape(-1, d)
        parts.append(eg[np.linalg.norm(eg, axis=1) > 0])
    gates = np.concatenate(parts)
    corr = np.concatenate([
        dual_correlations(x, kernel_size, rt, torch.from_numpy(gates[s:s + chunk]).to(dev)).cpu().numpy()
        for s in range(0, len(gates), chunk)
    ]) if len(gates) else np.zeros(0)
    gate_units = gates / np.maximum(np.linalg.norm(gates, axis=1, keepdims=True), 1e-300)

    # 2. ascent starts: best gates (their sign), then fresh directions (alternating sign)
    K = int(num_starts)
    k_gate = min(K // 2, len(gates))
    top = np.argsort(-np.abs(corr))[:k_gate]
    starts = [gate_units[top]]
    signs = [np.where(corr[top] >= 0, 1.0, -1.0)]
    fresh = rng.standard_normal((K - k_gate, d))
    starts.append(fresh / np.linalg.norm(fresh, axis=1, keepdims=True))
    signs.append(np.where(np.arange(K - k_gate) % 2 == 0, 1.0, -1.0))
    U0 = np.concatenate(starts)
    S0 = np.concatenate(signs)
    finals = np.zeros((0, d))
    fsigns = np.zeros(0)
    fvals = np.zeros(0)
    if K > 0:
        finals, fsigns, fvals = _ascent(x, rt, kernel_size, torch.from_numpy(U0).to(dev),
                                        torch.from_numpy(S0).to(dev), int(steps), explicit_limit)

    # 3. pool: gates (with the sign of their correlation) and ascent end points
    pool_u = np.concatenate([gate_units, finals])
    pool_s = np.concatenate([np.where(corr >= 0, 1.0, -1.0), fsigns])
    pool_v = np.concatenate([np.abs(corr), fvals]) / beta
    X = patch_matrix(images, kernel_size)
    order = np.argsort(-pool_v)
    seen: set[bytes] = set()
    best: DescentCandidate | None = None
    violators: list[DescentCandidate] = []
    polished = 0
    for j in order:
        if polished >= max_polish:
            break
        mask = X @ pool_u[j] >= 0
        key = _key(mask, pool_s[j])
        if key in seen:
            continue
        seen.add(key)
        polished += 1
        direct = DescentCandidate(_direct_ratio(X, r_np, pool_u[j], pool_s[j], beta), pool_u[j], pool_s[j], pool_u[j])
        pol = _polish(X, r_np, mask, pool_s[j], beta, pool_u[j])
        best = _record(pol if pol.ratio > direct.ratio else direct, best, violators, margin)
    violators = _worst_first(violators, max_violators)
    secs = time.perf_counter() - t0
    logger.info("descent search: %d gates, %d starts, best ratio %.6g, %d violating cells (%.2f s)",
                len(gates), K, 0.0 if best is None else best.ratio, len(violators), secs)
    return DescentSearch(max_ratio=0.0 if best is None else max(best.ratio, 0.0), best=best,
                         violators=tuple(violators), exact=False, num_starts=K, num_gates=int(len(gates)),
                         seconds=secs, info={"cells_polished": polished,
                                             "best_gate_ratio": float(np.max(np.abs(corr), initial=0.0) / beta),
                                             "best_ascent_ratio": float(np.max(fvals, initial=0.0) / beta)})


def _ascent(x: torch.Tensor, rt: torch.Tensor, k: int, U: torch.Tensor, s: torch.Tensor,
            steps: int, explicit_limit: int = 4_000_000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Monotone projected ascent of ``s_j r^T relu(X u_j)`` on the unit sphere, all runs at once.

    Each run keeps its own step (grown by 1.5 on success, halved on failure), so the
    value never decreases. Returns the end points, their signs and values. The
    explicit patch matrix is used when ``n * d <= explicit_limit`` (much faster than
    the weight-gradient convolution on small data), the convolutions otherwise.
    """
    N, C, H, W = x.shape
    d = C * k * k
    if N * H * W * d <= explicit_limit:
        Xt = torch.from_numpy(patch_matrix(x.cpu().numpy(), k)).to(x.device)
        rv = rt.reshape(-1, 1)

        def value_grad(V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            Z = Xt @ V.T  # (n, K)
            val = s * (Z.clamp_min(0) * rv).sum(dim=0)
            G = s[:, None] * (((Z > 0).to(Z.dtype) * rv).T @ Xt)
            return val, G
    else:

        def value_grad(V: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            Z = conv_forward(x, V, k)  # (N, K, H, W)
            val = s * (Z.clamp_min(0) * rt).sum(dim=(0, 2, 3))
            G = s[:, None] * conv_adjoint(x, (Z > 0).to(Z.dtype) * rt, k)
            return val, G

    val, G = value_grad(U)
    eta = torch.full_like(val, 0.5)
    for _ in range(steps):
        Gt = G - (G * U).sum(1, keepdim=True) * U  # tangent component
        gn = Gt.norm(dim=1, keepdim=True)
        active = (gn[:, 0] > 1e-14) & (eta > 1e-8)
        if not bool(active.any()):
            break
        cand = U + eta[:, None] * Gt / gn.clamp_min(1e-300)
        cand = cand / cand.norm(dim=1, keepdim=True)
        cval, cG = value_grad(cand)
        ok = active & (cval > val)
        U = torch.where(ok[:, None], cand, U)
        G = torch.where(ok[:, None], cG, G)
        val = torch.where(ok, cval, val)
        eta = torch.where(ok, (eta * 1.5).clamp_max(1.0), eta * 0.5)
    return U.cpu().numpy(), s.cpu().numpy(), val.cpu().numpy()
