"""Certified global maximiser of ``|sum_p r_p relu(x_p^T u)|`` over the unit ball.

This is the descent-neuron oracle of docs/math.md §6 over *all* sign patterns:
given the patch rows ``X`` (n, d) and a residual ``r`` (n,),

    M* = max_{||u||_2 <= 1} | f(u) |,     f(u) = sum_p r_p relu(x_p^T u),

is computed by branch and bound with a proof (a certified upper bound ``upper`` and an
attained value ``lower``).  ``M* <= beta`` is the dual feasibility of the residual for the
full problem (2); a ``u`` with ``|f(u)| > beta`` is a descent neuron.

Method
------
``f`` and ``-f`` are positively homogeneous, so ``M* = max(max f, max -f)`` over the unit
sphere, and both maxima are >= 0 (``u = 0``).  The sphere is covered by the cones over the
``2d`` faces ``{u : u_i = s}`` (``s = +-1``) of the cube ``||u||_inf = 1``; a *region* is a
box ``B`` in a face together with the sign ``+f`` / ``-f`` being maximised, and stands for
the cone ``K_B = {t u : u in B, t >= 0}``.  Its value is ``max { g(w) : w in K_B, ||w|| <= 1 }``
with ``g = +-f``.

Upper bound of a region (all linear, then one exact cone-support computation):

* interval arithmetic gives ``[lo_p, hi_p] = [x_p^T c - |x_p|^T h, x_p^T c + |x_p|^T h]``
  (centre ``c``, half-widths ``h``) for ``a_p = x_p^T u`` over ``u in B``;
* decided rows (``lo_p >= 0``: ``relu(a) = a``; ``hi_p <= 0``: ``relu(a) = 0``) are exact;
* undecided rows with ``r_p > 0``: the concave envelope (chord)
  ``relu(a) <= alpha (a - lo)``, ``alpha = hi / (hi - lo)``;
* undecided rows with ``r_p < 0``: ``r_p relu(a) = min_{lambda in [0,1]} lambda r_p a``, so any
  ``lambda`` gives a linear upper bound; ``lambda`` is chosen by the centre's sign, the
  sign at the bound's own maximiser, and a few sign-gradient (bisection-like) steps on the
  convex function ``lambda -> bound`` (each iterate is sound; the smallest is kept).  With the
  optimal ``lambda`` this relaxation is exact when no ``r_p > 0`` row is undecided (minimax),
  which is what lets B&B close regions whose maximiser lies on a kink;
* on a face, ``s u_i = 1``, so every affine function of ``u in B`` is a *linear* function of
  ``w in K_B``: the relaxation is ``g(w) <= c^T w`` on ``K_B``;
* ``max {c^T w : w in K_B, ||w|| <= 1} = ||Proj_{K_B}(c)||`` is computed *exactly*
  (not term by term): fixing ``w_i = s tau`` the projection decouples into clips
  ``w_j = clip(c_j, lo_j tau, hi_j tau)`` and ``tau`` solves a 1-D monotone piecewise-linear
  equation (breakpoints sorted, solved on its piece).  The reported value is the *dual*
  bound ``||c - z||`` for the explicit polar-cone point
  ``z = sum_j mu_j^+ (e_j - hi_j s e_i) + mu_j^- (lo_j s e_i - e_j) - mu_0 s e_i``,
  ``mu >= 0``, which is a valid upper bound for *any* ``tau``
  (``c^T w = (c-z)^T w + z^T w <= ||c - z||``) and equals the exact support at the optimal ``tau``.

Corner bound (``corners``, on by default for ``2 <= d <= 11``): with the undecided
``r_p > 0`` rows kept exact and the others linear as above, the upper function ``h`` is
convex on the face, and ``h(w)^+ / (q^T w)`` (``||q|| <= 1``, ``q^T w > 0`` on the box) is
quasi-convex, so its maximum over the box is at one of the ``2^(d-1)`` corners and bounds
``g`` on ``K_B`` intersected with the ball (``t <= 1/||w|| <= 1/(q^T w)``).  The region's
bound is the smaller of the two (``_Bounder._corner_bound``; numba kernel in
``convexdual/_oracle_kernels.py``).

A fully decided region is therefore solved exactly, and its maximiser
``Proj_{K_B}(c) / ||.||`` (evaluated as a lower-bound candidate) closes it.

Lower bounds: multi-start fixed-point local search (``u <- X^T (r * 1[Xu > 0])``) at the
start; then every evaluated region's box centre and relaxation maximisers.  Search is
best-first over regions (largest upper bound first), batched: each step bounds up to
``batch`` regions with a few dense products ``X @ C^T`` (torch; CPU or CUDA), prunes those
whose bound is ``<= threshold`` and bisects the rest along the coordinate with the
largest ``width_j * sum_{undecided} |r_p x_pj|``.  ``threshold = lower (1+eps)``, or
``max(beta, lower) (1+eps)`` when ``beta`` is given (only the decision is needed then);
with ``beta`` the search stops as soon as a descent neuron is certified.

Floating-point soundness
------------------------
Box edges are floats and children share the float midpoint, so the boxes cover each face
exactly.  Every per-row linear upper bound computed in float64 (interval endpoints,
chords, lambda-terms) is within ``gamma |r_p| ||x_p||_1`` of a valid one at every ``u`` of
the face (``||u||_inf = 1``), and the cone-support evaluation is sound for whatever
(float) ``tau`` and ``mu >= 0`` come out; its remaining rounding (the final sums and the
square root) is bounded by ``gamma_box`` times the same expression with absolute values.
Preprocessing (dropping zero rows, scaling rows to unit norm, merging equal rows) changes
``f`` by at most ``n u ||r||_1``-type terms.  Each region's bound is inflated by
``gamma_box * (abs expression) + margin``, ``margin = 8 (n + 8 d + 32) 2^-53
sum_p |r_p| ||x_p||_1``, which dominates the standard ``gamma_k = k u / (1 - k u)`` bounds of
all these operations by a factor >= 4; a child's bound is never allowed above its parent's.
``upper`` is the max of the bounds of all open and pruned regions, so it is a certified
upper bound on ``M*`` (up to the validity of IEEE float64 arithmetic in numpy/torch, no
fused or reduced-precision modes: TF32 is not used, everything is float64).
``lower`` is ``|f(argmax)|`` re-evaluated in float64 on the *original* ``X, r`` with the
unit vector ``argmax``; "descent" is declared only when ``lower - margin > beta``.
"proved" means ``upper <= lower (1 + eps) + 2 margin``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import torch

__all__ = ["OracleResult", "global_max_correlation", "brute_force_max_correlation",
           "evaluate_correlation"]

_U = 2.0 ** -53


@dataclass(frozen=True)
class OracleResult:
    """Outcome of :func:`global_max_correlation`.

    Attributes:
        upper: certified upper bound on ``M* = max_{||u||<=1} |sum_p r_p relu(x_p^T u)|``.
        lower: ``|f(argmax)|`` evaluated in float64 on the original data (attained).
        argmax: unit vector ``u`` attaining ``lower`` (with ``sign``).
        sign: +1 when ``f(argmax) = +lower`` (``f+`` attains it), -1 for ``f-``.
        nodes: regions bounded.
        seconds: wall time.
        status: "proved" (``upper <= lower (1+eps)``, or with ``beta``: ``upper <= beta (1+eps)``),
            "descent" (``beta`` given and ``lower > beta``: a certified descent neuron) or
            "budget" (time/node/memory budget exhausted; ``upper`` is still certified).
        verdict: with ``beta``: "feasible" (``M* <= beta (1+eps)`` proved), "descent" or
            None (undecided); without ``beta``: None.
        beta, eps: as given.
        margin: absolute floating-point safety margin added to every region's bound.
        open_regions: regions left unexplored (0 when the search finished).
        history: tuples ``(seconds, nodes, upper, lower)`` sampled during the search.
        stats: timing breakdown and counters (seconds per phase, rows after merging, ...).
    """

    upper: float
    lower: float
    argmax: np.ndarray
    sign: int
    nodes: int
    seconds: float
    status: str
    verdict: str | None = None
    beta: float | None = None
    eps: float = 1e-6
    margin: float = 0.0
    open_regions: int = 0
    history: tuple = field(default=(), repr=False)
    stats: dict = field(default_factory=dict, repr=False)

    @property
    def gap(self) -> float:
        """Relative certified gap ``(upper - lower) / max(upper, tiny)``."""
        return float((self.upper - self.lower) / max(abs(self.upper), 1e-300))


def evaluate_correlation(X: np.ndarray, r: np.ndarray, U: np.ndarray) -> np.ndarray:
    """``f(u) = r^T relu(X u)`` for the columns of ``U`` (d, k) (or one vector), float64."""
    X = np.asarray(X, dtype=np.float64)
    r = np.asarray(r, dtype=np.float64)
    U = np.asarray(U, dtype=np.float64)
    return r @ np.maximum(X @ U, 0.0)


# ----------------------------------------------------------------------------- preprocessing


def _prepare(X: np.ndarray, r: np.ndarray):
    norms = np.linalg.norm(X, axis=1)
    keep = (norms > 0) & (r != 0)
    if not np.any(keep):
        return np.zeros((0, X.shape[1])), np.zeros(0)
    Xh = X[keep] / norms[keep, None]
    rh = r[keep] * norms[keep]
    uniq, inv = np.unique(Xh, axis=0, return_inverse=True)
    rr = np.zeros(len(uniq))
    np.add.at(rr, np.asarray(inv).ravel(), rh)
    nz = rr != 0
    return np.ascontiguousarray(uniq[nz]), rr[nz]


def _local_search(X, r, rng, starts=256, iters=40, extra=None, deadline=None, **kw):
    """Fixed-point ascent ``u <- X^T (s r * 1[X u > 0])``; returns (value, u, sign).

    ``deadline`` (a ``time.perf_counter()`` value) stops the iterations early."""
    d = X.shape[1]
    U0 = rng.standard_normal((d, starts))
    signs = kw.get("signs", (1.0, -1.0))
    if extra is not None:
        U0 = np.concatenate([U0, np.asarray(extra).reshape(d, -1)], axis=1)
    best = (-np.inf, None, 1)
    for sg in signs:
        U = U0 / np.maximum(np.linalg.norm(U0, axis=0), 1e-300)
        for it in range(iters):
            if deadline is not None and it > 0 and time.perf_counter() > deadline:
                break
            A = X @ U
            v = sg * (r @ np.maximum(A, 0.0))
            k = int(np.argmax(v))
            if v[k] > best[0]:
                best = (float(v[k]), U[:, k].copy(), int(sg))
            C = X.T @ (sg * r[:, None] * (A > 0))
            nrm = np.linalg.norm(C, axis=0)
            ok = nrm > 0
            if not np.any(ok):
                break
            U = np.where(ok[None, :], C / np.where(ok, nrm, 1.0)[None, :], U)
    return best


def _cell_maxima(X, R, c, U):
    """Per sign pattern ``s`` of the rows ``U`` (``bits[t]``: row ``U[t]`` active), the vector
    ``v_s = g_s + A_s^T mu`` with ``g_s = c + sum_{active} R_p x_p``, the cone
    ``A_s u >= 0`` (rows ``+-x_p``) and ``mu >= 0`` by non-negative least squares (scipy):
    ``||v_s||`` is the maximum of ``g_s^T u`` over the cone and the unit ball, ``v_s / ||v_s||``
    its maximiser.  The python twin of the numba fan-bound kernel, for the few calls of the
    tip probe.  Yields ``(bits, v_s)``."""
    from scipy.optimize import nnls

    k = len(U)
    for pat in range(1 << k):
        bits = ((pat >> np.arange(k)) & 1).astype(bool)
        g = c + R[U[bits]] @ X[U[bits]]
        if k:
            E = np.where(bits[:, None], X[U], -X[U]).T
            yield bits, g + E @ nnls(E, -g, maxiter=50 * (k + 1))[0]
        else:
            yield bits, g


def _tip_search(X, r, seeds, max_rows=10, tol=1e-7, steps=16, deadline=None, chunk_elems=2 ** 22):
    """Lower-bound candidates around given directions (a trained net's neurons, "tips").

    A trained net's neuron ``u`` usually lies on several rows' hyperplanes (``x_p^T u = 0``),
    where ``f`` has a kink: it can be a maximum within the net's own sign pattern and still
    increase in a neighbouring pattern's cell, which the fixed-point local search (it follows
    one pattern) does not see.  For each seed and sign, each sign pattern ``s`` of the rows
    on the seed's hyperplanes (at most ``max_rows``, the closest) gives the maximiser of its
    linear piece over its cone, ``v_s = g_s + A_s^T mu`` (non-negative least squares, as the
    fan bound); where that exceeds ``f(u)``, the points ``u + t (v_s/||v_s|| - u)`` for ``t``
    from 1e-6 to 1 are evaluated.  Returns ``(value, u, sign)`` of the best point (value on
    ``X, r``; the caller re-evaluates it on the original data), or ``(-inf, None, 1)``.
    Costs ``O(seeds 2^k)`` small least-squares problems and one ``X W`` product per seed
    (in column chunks of about ``chunk_elems`` row-column pairs); ``deadline`` (a ``time.perf_counter()``
    value) stops before the next seed.
    """
    d = X.shape[1]
    norms = np.linalg.norm(X, axis=1)
    ts = np.concatenate([[0.0], np.geomspace(1e-6, 1.0, steps)])
    best = (-np.inf, None, 1)
    chunk = max(1, int(chunk_elems) // max(1, X.shape[0]))
    for u in np.asarray(seeds, dtype=np.float64).reshape(-1, d):
        if deadline is not None and time.perf_counter() > deadline:
            break
        nu = np.linalg.norm(u)
        if not nu > 0:
            continue
        u = u / nu
        a = X @ u
        rel = np.abs(a) / np.maximum(norms, 1e-300)
        U = np.nonzero(rel <= tol)[0]
        if len(U) > max_rows:
            U = U[np.argsort(rel[U], kind="stable")[:max_rows]]
        on = np.zeros(len(a), dtype=bool)
        on[U] = True
        pos = (a > 0) & ~on
        cols = [u]
        for sg in (1.0, -1.0):
            R = sg * r
            c = R[pos] @ X[pos]
            f_u = float(R @ np.maximum(a, 0.0))
            for _, v in _cell_maxima(X, R, c, U):
                nv = np.linalg.norm(v)
                if nv > f_u * (1.0 + 1e-12) and nv > 0:
                    cols.append(u[:, None] + (v / nv - u)[:, None] * ts[None, 1:])
        W = np.concatenate([c.reshape(d, -1) for c in cols], axis=1)
        W = W / np.maximum(np.linalg.norm(W, axis=0), 1e-300)
        F = np.concatenate([r @ np.maximum(X @ W[:, a:a + chunk], 0.0) for a in range(0, W.shape[1], chunk)])
        for sg in (1.0, -1.0):
            k = int(np.argmax(sg * F))
            if sg * F[k] > best[0]:
                best = (float(sg * F[k]), W[:, k].copy(), int(sg))
    return best


# ----------------------------------------------------------------------------- bounds


def _cone_support(c, lo, hi, onehot, fs):
    """Sound upper bound on ``max {c^T w : w in K_B, ||w|| <= 1}`` and the primal point.

    ``K_B = {w : s w_i >= 0, lo_j s w_i <= w_j <= hi_j s w_i (j != i)}``.  Returns
    (value, abs-expression for the rounding margin, primal point w (B, d), not normalised).
    """
    a = fs * (c * onehot).sum(1)
    zero = torch.zeros((), dtype=c.dtype, device=c.device)
    cc = torch.where(onehot, zero, c)
    Lo = torch.where(onehot, zero, lo)
    Hi = torch.where(onehot, zero, hi)
    # breakpoints of tau -> clip(c_j, Lo_j tau, Hi_j tau)
    with torch.no_grad():
        tH = torch.where(Hi != 0, cc / torch.where(Hi != 0, Hi, 1.0), zero)
        tL = torch.where(Lo != 0, cc / torch.where(Lo != 0, Lo, 1.0), zero)
        T = torch.cat([torch.zeros_like(a)[:, None], tH, tL], 1).clamp_min(0.0)
        T = torch.nan_to_num(T, nan=0.0, posinf=0.0, neginf=0.0)
        T, _ = torch.sort(T, dim=1)
        K = T.shape[1]
        tt = T[:, :, None]
        mup = torch.relu(cc[:, None, :] - Hi[:, None, :] * tt)
        mum = torch.relu(Lo[:, None, :] * tt - cc[:, None, :])
        G = T - a[:, None] - (Hi[:, None, :] * mup).sum(-1) + (Lo[:, None, :] * mum).sum(-1)
        k = (G < 0).sum(1) - 1
        has = k >= 0
        kk = k.clamp_min(0)
        Tk = T.gather(1, kk[:, None]).squeeze(1)
        last = kk >= K - 1
        Tk1 = T.gather(1, (kk + 1).clamp_max(K - 1)[:, None]).squeeze(1)
        tmid = torch.where(last, Tk + 1.0 + Tk.abs(), 0.5 * (Tk + Tk1))
        actp = cc > Hi * tmid[:, None]
        actm = Lo * tmid[:, None] > cc
        num = a + torch.where(actp, Hi * cc, zero).sum(1) + torch.where(actm, Lo * cc, zero).sum(1)
        den = 1.0 + torch.where(actp, Hi * Hi, zero).sum(1) + torch.where(actm, Lo * Lo, zero).sum(1)
        tau = num / den
        tau = torch.maximum(tau, Tk)
        tau = torch.where(last, tau, torch.minimum(tau, Tk1))
        tau = torch.where(has, tau, zero)
        tau = torch.nan_to_num(tau, nan=0.0, posinf=0.0, neginf=0.0).clamp_min(0.0)
    t = tau[:, None]
    mup = torch.relu(cc - Hi * t)
    mum = torch.relu(Lo * t - cc)
    first = torch.relu(a + (Hi * mup).sum(1) - (Lo * mum).sum(1))
    rest = cc - mup + mum
    val = torch.sqrt(first * first + (rest * rest).sum(1))
    fa = a.abs() + (Hi.abs() * mup).sum(1) + (Lo.abs() * mum).sum(1)
    ra = cc.abs() + mup + mum
    err = torch.sqrt(fa * fa + (ra * ra).sum(1))
    w = torch.minimum(torch.maximum(cc, Lo * t), Hi * t)
    w = torch.where(onehot, (fs * tau)[:, None], w)
    return val, err, w


def _pack_rows(mask, R):
    """Gather the rows of each region: ``mask`` (n, B) -> ``(P, Rg, cnt, (b_idx, p_idx, slot))``.

    Region ``b``'s ``K_b`` selected rows go to ``P[b, :K_b]`` (row indices) and
    ``Rg[b, :K_b]`` (their ``R``); ``K = max_b K_b``, padding has index 0 and ``R = 0``, so
    every later pass costs ``B K`` instead of ``n B``.
    """
    Bs = mask.shape[1]
    dev = mask.device
    cnt = mask.sum(0)
    K = int(cnt.max())
    b_idx, p_idx = torch.nonzero(mask.T, as_tuple=True)           # sorted by region
    start = torch.cumsum(cnt, 0) - cnt
    slot = torch.arange(len(b_idx), device=dev) - start[b_idx]
    P = torch.zeros((Bs, K), dtype=torch.long, device=dev)
    P[b_idx, slot] = p_idx
    Rg = torch.zeros((Bs, K), dtype=torch.float64, device=dev)
    Rg[b_idx, slot] = R[p_idx, b_idx]
    return P, Rg, cnt, (b_idx, p_idx, slot)


class _Bounder:
    """Batched region bounds on a torch device."""

    def __init__(self, Xh, rh, device, lam_iters, split_rule="slack", eval_top=128,
                 lam_max_rows=None, corners=False, margin=0.0, corners_numba=True,
                 corner_iters=32, fan_rows=0):
        self.dev = torch.device(device)
        self.X = torch.as_tensor(Xh, dtype=torch.float64, device=self.dev)
        self.Xa = self.X.abs()
        self.r = torch.as_tensor(rh, dtype=torch.float64, device=self.dev)
        self.d = Xh.shape[1]
        self.lam_iters = int(lam_iters)
        self.split_rule = split_rule
        self.eval_top = eval_top
        self.lam_max_rows = lam_max_rows
        self.gamma_box = 16.0 * (4 * self.d + 16) * _U
        self.corners = bool(corners)
        self.margin = float(margin)
        self.corner_stats = [0, 0]
        self.corner_iters = int(corner_iters)
        from convexdual._fused_kernels import numba_available

        # the fan bound runs in the numba kernel on the host (CUDA included: its regions are few)
        self.fan_rows = int(fan_rows) if numba_available() else 0
        self.fan_stats = [0, 0]
        self.Xnp = np.ascontiguousarray(Xh, dtype=np.float64)
        if self.corners:
            # per face i: the 2^(d-1) corners of the chart box as 0/1 selectors of hi over lo
            # for the coordinates j != i (column i stays 0: lo_i = hi_i = s), in the Gray
            # order of the numba kernel (corner g has the bits of g ^ (g >> 1))
            d = self.d
            nv = 2 ** (d - 1)
            gray = torch.arange(nv) ^ (torch.arange(nv) >> 1)
            bits = ((gray[:, None] >> torch.arange(d - 1)[None, :]) & 1).double()
            tab = torch.zeros((d, nv, d), dtype=torch.float64)
            for i in range(d):
                cols = [j for j in range(d) if j != i]
                tab[i][:, cols] = bits
            self.vtab = tab.to(self.dev)
            self.corners_numba = self.dev.type == "cpu" and numba_available() and corners_numba

    def _refine_lambda(self, X, conc, R, L, H, c0s, ws, bs, es, los, his, ohs, fss, thr):
        """Per-row Illinois regula falsi on the lambdas of the undecided ``r_p < 0`` rows.

        Works on the gathered rows only: region ``b``'s ``K_b`` undecided negative rows are
        packed into ``(B', K)`` (``K = max_b K_b``, padding rows have ``R = 0``), so every
        pass costs ``B' K`` instead of ``n B'``.  Every iterate is a sound bound (any
        ``lambda in [0, 1]``); the smallest is kept.
        """
        Bs = conc.shape[1]
        dev = X.device
        P, Rg, _, (b_idx, p_idx, slot) = _pack_rows(conc, R)
        K = P.shape[1]
        Xg = X[P]                                                  # (B', K, d)
        bnd = torch.zeros((Bs, K), dtype=torch.float64, device=dev)
        bnd[b_idx, slot] = torch.maximum(L[p_idx, b_idx].abs(), H[p_idx, b_idx].abs())
        bnd = Rg.abs() * bnd
        conc_s = Rg != 0
        lam_lo = torch.zeros_like(Rg)
        lam_hi = torch.ones_like(Rg)
        h_lo = h_hi = None
        last_side = torch.zeros_like(Rg)

        def lin(lam):
            return c0s + torch.bmm((Rg * lam)[:, None, :], Xg).squeeze(1)

        def act(w):
            return torch.bmm(Xg, w[:, :, None]).squeeze(2)

        for it in range(self.lam_iters + 2):
            if it == 0:
                lam_s = (act(ws) > 0).to(torch.float64)
            elif it == 1:
                lam_s = torch.zeros_like(Rg)
            elif it == 2:
                lam_s = torch.ones_like(Rg)
            else:
                dh = h_hi - h_lo
                pos_dh = dh > 0
                sec = lam_lo - h_lo * (lam_hi - lam_lo) / torch.where(pos_dh, dh, 1.0)
                sec = torch.where(pos_dh, sec, 0.5 * (lam_lo + lam_hi))
                lam_s = torch.minimum(torch.maximum(sec, lam_lo), lam_hi)
                lam_s = torch.where(h_lo >= 0, lam_lo, torch.where(h_hi <= 0, lam_hi, lam_s))
            v, e, wv = _cone_support(lin(lam_s), los, his, ohs, fss)
            better = v < bs
            bs = torch.where(better, v, bs)
            es = torch.where(better, e, es)
            ws = torch.where(better[:, None], wv, ws)
            if it == 0:
                continue
            g = Rg * act(wv)
            if it == 1:
                h_lo = g
                continue
            if it == 2:
                h_hi = g
            else:
                up = (g > 0) & conc_s
                dn = (g <= 0) & conc_s
                lam_hi = torch.where(up, lam_s, lam_hi)
                lam_lo = torch.where(dn, lam_s, lam_lo)
                h_hi = torch.where(up, g, h_hi)
                h_lo = torch.where(dn, g, h_lo)
                # Illinois: the end kept twice in a row has its value halved
                h_lo = torch.where(up & (last_side > 0), 0.5 * h_lo, h_lo)
                h_hi = torch.where(dn & (last_side < 0), 0.5 * h_hi, h_hi)
                last_side = torch.where(up, 1.0, torch.where(dn, -1.0, last_side))
            fixed = (h_lo >= 0) | (h_hi <= 0)
            possible = (torch.where(fixed, 0.0, lam_hi - lam_lo) * bnd).sum(1)
            open_ = bs + self.gamma_box * es > thr
            if not bool((open_ & (bs - possible <= thr) & (possible > 1e-15 * bs)).any()):
                break
        return bs, es, ws

    def _corner_bound(self, X, R, coef, chord, conc, lo, hi, face, cen, thr):
        """Bound of the regions through the corners of their chart boxes.

        With the undecided ``r_p > 0`` rows kept exact (``relu``, convex) and every other row
        linear (decided rows exactly, undecided ``r_p < 0`` rows through
        ``r_p relu(a) <= r_p lambda_p a``, any ``lambda_p in [0, 1]``), ``h(w) >= g(w)`` is
        convex on the face, so for a unit ``q`` with ``q^T w > 0`` on the box,
        ``h(w)^+ / (q^T w)`` is quasi-convex there and its maximum over the box is at a
        corner; it bounds ``g`` on ``K_B`` intersected with the ball because
        ``g(t w) = t g(w)``, ``t <= 1 / ||w|| <= 1 / (q^T w)``.

        ``lambda`` minimises the maximum over the corners (a convex, piecewise-linear
        function of ``lambda``): it starts at the box centre's signs and takes
        ``corner_iters`` Frank-Wolfe steps on the dual (weights ``mu`` on the corners, best
        response ``lambda_p = 1[x_p^T m > 0]``, ``m = sum_g mu_g w_g / q^T w_g``); the
        smallest value over the iterates and their running means is kept, and stops once
        the region is pruned.  ``q`` is the box centre's direction (shrunk by ``1 - 8 d u``
        so that ``||q|| <= 1`` survives rounding); two more directions, halfway to and at
        the maximising corner's, are tried on the final corner values and the smallest
        ratio kept (any unit ``q`` with ``q^T w > 0`` gives a bound).  Returns ``inf``
        where the certified ``min q^T w`` is below 1/2 (not used there).  Rounding: the
        final value is recomputed from scratch for the kept ``lambda``; with ``E`` the
        certified absolute error of ``h`` at a corner and ``q^T w >= 1/2``, the true ratio
        is at most ``(value + 2 E) (1 + 1e-12)``; the caller's ``margin`` is added on top.
        """
        Bs = R.shape[1]
        dev = X.device
        d = self.d
        c_lin = coef.T @ X                                                # (B', d)
        P, Rg, cnt, _ = _pack_rows(chord, R)
        Pn, Rn, cntn, _ = _pack_rows(conc, R)
        q = cen / torch.linalg.vector_norm(cen, dim=1, keepdim=True) * (1.0 - 8 * d * _U)
        thr_k = float(thr) - self.margin
        if self.corners_numba:
            from convexdual._oracle_kernels import corner_bound

            val, err, qmin = (torch.from_numpy(t) for t in corner_bound(
                self.Xnp, P.numpy(), cnt.numpy(), Rg.numpy(), Pn.numpy(), cntn.numpy(),
                Rn.numpy(), lo.numpy(), hi.numpy(), face.numpy(), c_lin.numpy(), q.numpy(),
                thr_k, self.corner_iters))
        else:
            val, err, qmin = self._corner_bound_torch(X, P, cnt, Rg, Pn, cntn, Rn, lo, hi,
                                                      face, c_lin, q, thr_k)
        sound = (val + 2.0 * err) * (1.0 + 1e-12) + self.margin
        return torch.where(qmin >= 0.5, sound, torch.full_like(sound, math.inf))

    def _fan_bound(self, R, pos, und, thr):
        """``convexdual._oracle_kernels.fan_bound`` of regions with few undecided rows: exact
        at a maximiser where their hyperplanes meet (a "tip"), so the regions around a trained
        net's neurons close.  Same row classification as the other bounds (a misclassified
        row costs at most ``gamma |r_p| ||x_p||_1``, inside ``margin``)."""
        from convexdual._oracle_kernels import fan_bound

        zero = torch.zeros((), dtype=torch.float64, device=R.device)
        c = torch.where(pos, R, zero).T @ self.X
        cabs = torch.where(pos | und, R.abs(), zero).T @ self.Xa
        U, Ru, cnt, _ = _pack_rows(und, R)
        val = fan_bound(self.Xnp, U.cpu().numpy(), cnt.cpu().numpy(), Ru.cpu().numpy(),
                        c.cpu().numpy(), cabs.cpu().numpy(),
                        float(thr) - self.margin if np.isfinite(thr) else np.inf)
        return torch.as_tensor(val, device=R.device) + self.margin

    def _corner_bound_torch(self, X, P, cnt, Rg, Pn, cntn, Rn, lo, hi, face, c_lin, q, thr):
        """The numba kernel's computation, batched in torch (CUDA, or no numba)."""
        Bs = P.shape[0]
        dev = X.device
        d = self.d
        K, Kn = P.shape[1], Pn.shape[1]
        nv = self.vtab.shape[1]
        val = torch.empty(Bs, dtype=torch.float64, device=dev)
        qmin = torch.empty(Bs, dtype=torch.float64, device=dev)
        s_abs = (Rg.abs() * self.Xa.sum(1)[P]).sum(1) + (Rn.abs() * self.Xa.sum(1)[Pn]).sum(1)
        err = (nv + 2 * d + cnt + cntn + 8).double() * _U * (s_abs + c_lin.abs().sum(1))
        # elements of the largest intermediate (chunk, K, corners): 32 MB on CPU, 512 MB on CUDA
        cap = 2 ** 26 if dev.type == "cuda" else 2 ** 22
        step = max(1, cap // max(1, (K + Kn + d) * nv))
        for a in range(0, Bs, step):
            b = min(Bs, a + step)
            ar = torch.arange(b - a, device=dev)
            W = lo[a:b, None, :] + self.vtab[face[a:b]] * (hi[a:b] - lo[a:b])[:, None, :]
            A = torch.bmm(X[P[a:b]], W.transpose(1, 2)).relu_()        # (b-a, K, nv)
            hv = torch.bmm(Rg[a:b, None, :], A).squeeze(1) + (W @ c_lin[a:b, :, None]).squeeze(2)
            qw = (W @ q[a:b, :, None]).squeeze(2)
            qm = qw.min(1).values - (d + 4) * _U * q[a:b].abs().sum(1)
            ok = qm >= 0.5
            qws = torch.where(ok[:, None], qw, torch.ones_like(qw))
            Xn = X[Pn[a:b]]                                                # (b-a, Kn, d)
            rn = -Rn[a:b]
            e2 = 2.0 * err[a:b]

            def ev(cl):
                v, g = ((hv - (W @ cl[:, :, None]).squeeze(2)) / qws).max(1)
                return v, g

            def lin(lam):
                return torch.bmm((rn * lam)[:, None, :], Xn).squeeze(1)

            lam = (torch.bmm(Xn, (lo[a:b] + hi[a:b])[:, :, None]).squeeze(2) > 0).double()
            best_lam = lam.clone()
            best, g = ev(lin(lam))
            active = ok & (cntn[a:b] > 0) & (best + e2 > thr)
            if self.corner_iters > 0 and bool(active.any()):
                mv = W[ar, g] / qws[ar, g][:, None]
                accl = torch.zeros_like(lam)
                csum = torch.zeros_like(mv)
                for it in range(self.corner_iters):
                    lam = (torch.bmm(Xn, mv[:, :, None]).squeeze(2) > 0).double()
                    accl += lam
                    cl = lin(lam)
                    v, g = ev(cl)
                    upd = active & (v < best)
                    best = torch.where(upd, v, best)
                    best_lam = torch.where(upd[:, None], lam, best_lam)
                    csum += cl
                    vb, _ = ev(csum / (it + 1))
                    upd = active & (vb < best)
                    best = torch.where(upd, vb, best)
                    best_lam = torch.where(upd[:, None], accl / (it + 1), best_lam)
                    active = active & (best + e2 > thr)
                    if not bool(active.any()):
                        break
                    gam = 2.0 / (it + 3.0)
                    mv = (1.0 - gam) * mv + gam * W[ar, g] / qws[ar, g][:, None]
            # the bound for best_lam, recomputed from scratch
            hv = torch.relu(hv - (W @ lin(best_lam)[:, :, None]).squeeze(2))
            v1, kmax = (hv / qws).max(1)
            # other directions q, towards the maximising corner (as the numba kernel)
            vs = W[ar, kmax]
            vs = vs / torch.linalg.vector_norm(vs, dim=1, keepdim=True)
            q1 = q[a:b] / torch.linalg.vector_norm(q[a:b], dim=1, keepdim=True)
            for mix in (0.5, 1.0):
                qq = (1.0 - mix) * q1 + mix * vs
                qq = qq / torch.linalg.vector_norm(qq, dim=1, keepdim=True) * (1.0 - 8 * d * _U)
                qw2 = (W @ qq[:, :, None]).squeeze(2)
                qm2 = qw2.min(1).values - (d + 4) * _U * qq.abs().sum(1)
                v2 = (hv / torch.where(qm2[:, None] >= 0.5, qw2, torch.ones_like(qw2))).max(1).values
                take = ok & (qm2 >= 0.5) & (v2 < v1)
                v1 = torch.where(take, v2, v1)
                qm = torch.where(take, qm2, qm)
            val[a:b] = torch.where(ok, v1, torch.full_like(v1, math.inf))
            qmin[a:b] = qm
        return val, err, qmin

    def __call__(self, lo_np, hi_np, face_np, fs_np, sg_np, thr=-np.inf):
        dev = self.dev
        lo = torch.as_tensor(lo_np, device=dev)
        hi = torch.as_tensor(hi_np, device=dev)
        face = torch.as_tensor(face_np, device=dev, dtype=torch.long)
        fs = torch.as_tensor(fs_np, device=dev, dtype=torch.float64)
        sg = torch.as_tensor(sg_np, device=dev, dtype=torch.float64)
        X, Xa = self.X, self.Xa
        B, d = lo.shape
        onehot = torch.nn.functional.one_hot(face, d).bool()
        cen = 0.5 * (lo + hi)
        half = 0.5 * (hi - lo)
        mid = X @ cen.T                     # (m, B)
        rad = Xa @ half.T
        L = mid - rad
        H = mid + rad
        R = self.r[:, None] * sg[None, :]
        zero = torch.zeros((), dtype=torch.float64, device=dev)
        pos = L >= 0
        und = (~pos) & (H > 0)
        chord = und & (R > 0)
        conc = und & (R < 0)
        alpha = torch.where(chord, H / torch.where(chord, H - L, 1.0), zero)
        Ra = R * alpha
        k0 = (-Ra * L).sum(0)               # >= 0, constant term of the chords
        # lambda of the undecided r_p < 0 rows: the box centre's activation (refined below);
        # per row exactly one of {decided, chord, lambda} terms is nonzero, so one product
        cen_on = conc & (mid > 0)
        lin_rows = pos | cen_on
        c = torch.where(lin_rows, R, Ra).T @ X
        kf = (k0 * fs)[:, None]
        c = c + onehot * kf
        has_conc = conc.any(0)
        best, err, w = _cone_support(c, lo, hi, onehot, fs)
        need = has_conc & (best + self.gamma_box * err > thr)
        if self.lam_max_rows is not None:
            need = need & (conc.sum(0) <= self.lam_max_rows)
        if self.lam_iters > 0 and bool(need.any()):
            idx = torch.nonzero(need).squeeze(1)
            c0 = torch.where(pos[:, idx], R[:, idx], Ra[:, idx]).T @ X + onehot[idx] * kf[idx]
            bs, es, ws = self._refine_lambda(X, conc[:, idx], R[:, idx], L[:, idx], H[:, idx],
                                             c0, w[idx], best[idx], err[idx], lo[idx],
                                             hi[idx], onehot[idx], fs[idx], thr)
            best = best.clone()
            err = err.clone()
            w = w.clone()
            best[idx] = bs
            err[idx] = es
            w[idx] = ws
        ub = best + self.gamma_box * err
        if self.corners:
            vneed = (ub > thr) & chord.any(0)
            if bool(vneed.any()):
                idx = torch.nonzero(vneed).squeeze(1)
                Ri = R[:, idx]
                vb = self._corner_bound(X, Ri, torch.where(pos[:, idx], Ri, zero), chord[:, idx],
                                        conc[:, idx], lo[idx], hi[idx], face[idx], cen[idx], thr)
                self.corner_stats[0] += len(idx)
                self.corner_stats[1] += int((vb <= thr).sum())
                ub = ub.clone()
                ub[idx] = torch.minimum(ub[idx], vb)
        nund = und.sum(0)
        if self.fan_rows > 0:
            need = (ub > thr) & (nund <= self.fan_rows)
            if bool(need.any()):
                idx = torch.nonzero(need).squeeze(1)
                fb = self._fan_bound(R[:, idx], pos[:, idx], und[:, idx], thr)
                self.fan_stats[0] += len(idx)
                self.fan_stats[1] += int((fb <= thr).sum())
                ub = ub.clone()
                ub[idx] = torch.minimum(ub[idx], fb)
        if self.split_rule == "slack":
            # bisect the coordinate whose halving removes the most relaxation slack: row p's
            # slack (at most |r_p| H_p |L_p| / (H_p - L_p) for the best linear bound) shrinks
            # in proportion to its interval radius, of which coordinate j holds |x_pj| h_j.
            sl = torch.where(und, R.abs() * H * (-L) / torch.where(und, (H - L) * rad, 1.0), zero)
            score = (sl.T @ Xa + 1e-300) * half
        else:
            # width_j * sum_und |r_p x_pj|
            score = (torch.where(und, R.abs(), zero).T @ Xa + 1e-300) * (hi - lo)
        score = torch.where(onehot, torch.full_like(score, -1.0), score)
        split = torch.argmax(score, 1)
        # lower-bound candidates (relaxation maximisers and box centres) of the regions
        # with the largest bounds only
        if self.eval_top is not None and B > self.eval_top:
            top = torch.topk(ub, self.eval_top).indices
            W = torch.cat([w[top], cen[top]], 0)
            sgall = sg[top].repeat(2)
        else:
            W = torch.cat([w, cen], 0)
            sgall = sg.repeat(2)
        nw = torch.linalg.vector_norm(W, dim=1)
        W = W / torch.where(nw > 0, nw, 1.0)[:, None]
        vals = torch.relu(X @ W.T).T @ self.r          # f+(W)
        vals = vals * sgall
        j = int(torch.argmax(vals))
        return (ub.cpu().numpy(), split.cpu().numpy(), float(vals[j]), W[j].cpu().numpy(),
                int(sgall[j]), nund.cpu().numpy())


class _OpenSet:
    """Open regions as column arrays ``(lo, hi, face, fsg, sgn, ub)``, best first in batches.

    The regions with the ``M`` largest bounds are kept in a sorted pool and handed out a batch
    at a time; children go to a pending list.  Everything is merged and re-partitioned (a
    refill, O(open regions)) only when the pool runs out or ``M`` children are pending.  The
    order is best-first up to that delay; which region is bounded when never affects
    soundness.  ``max_ub`` is exact at every step.

    ``M`` is ``k`` batches with ``k`` set from measured costs: the last refill's time over
    ``overhead`` times the mean time of bounding a batch (``note_step``), so refills take about
    ``overhead`` of the bounding time and the order is otherwise as close to best-first as that
    allows (16 batches until both are measured).  A fixed pool (16 batches, later at least
    1/8 of the open set) had spent 37-45% of a run on refills at 2-3 M open regions on the CPU;
    on CUDA, with 32,768-region batches, 1/8 of the open set meant bounding ~500 k stale
    regions between refills, and 1.2 M nodes reached 2.06 beta where the CPU path's 1 M
    reached 1.27 beta on the same instance.
    """

    def __init__(self, cols, batch, pool_batches=16, overhead=0.05):
        self.batch = int(batch)
        self.k0 = int(pool_batches)
        self.overhead = float(overhead)
        self.t_refill = None
        self.t_step = None
        self.M = self.batch * self.k0
        self.main = list(cols)
        self.main_max = float(self.main[5].max()) if len(self.main[5]) else -np.inf
        self.pool = None
        self.ptr = 0
        self.pending = []
        self.n_pending = 0
        self.pending_max = -np.inf

    def note_step(self, seconds):
        """Record the time one batch took to bound (a running mean)."""
        s = float(seconds)
        self.t_step = s if self.t_step is None else 0.9 * self.t_step + 0.1 * s

    def __len__(self):
        pool = 0 if self.pool is None else len(self.pool[5]) - self.ptr
        return len(self.main[5]) + pool + self.n_pending

    def max_ub(self):
        m = max(self.main_max, self.pending_max)
        if self.pool is not None and self.ptr < len(self.pool[5]):
            m = max(m, float(self.pool[5][self.ptr]))
        return m

    def add(self, cols):
        if len(cols[5]):
            self.pending.append(cols)
            self.n_pending += len(cols[5])
            self.pending_max = max(self.pending_max, float(cols[5].max()))

    def _refill(self):
        parts = [self.main]
        if self.pool is not None and self.ptr < len(self.pool[5]):
            parts.append([c[self.ptr:] for c in self.pool])
        parts += self.pending
        t0 = time.perf_counter()
        cols = [np.concatenate([q[k] for q in parts]) for k in range(6)]
        ub = cols[5]
        k = self.k0
        if self.t_refill is not None and self.t_step:
            # a refill comes every k/2 batches at the earliest (a batch adds up to 2 batches
            # of children to the pending list)
            k = int(min(4096, max(1, math.ceil(2.0 * self.t_refill / (self.overhead * self.t_step)))))
        self.M = self.batch * k
        if len(ub) <= self.M:
            sel = np.argsort(-ub, kind="stable")
            self.pool = [c[sel] for c in cols]
            self.main = [c[:0] for c in cols]
        else:
            part = np.argpartition(-ub, self.M)[:self.M]
            sel = part[np.argsort(-ub[part], kind="stable")]
            keep = np.ones(len(ub), dtype=bool)
            keep[sel] = False
            self.pool = [c[sel] for c in cols]
            self.main = [c[keep] for c in cols]
        self.ptr = 0
        self.pending = []
        self.n_pending = 0
        self.pending_max = -np.inf
        self.main_max = float(self.main[5].max()) if len(self.main[5]) else -np.inf
        self.t_refill = time.perf_counter() - t0

    def take(self):
        if (self.pool is None or self.ptr >= len(self.pool[5]) or self.n_pending >= self.M):
            self._refill()
        a, b = self.ptr, min(self.ptr + self.batch, len(self.pool[5]))
        self.ptr = b
        return [c[a:b] for c in self.pool]


# ----------------------------------------------------------------------------- search


def global_max_correlation(X, r, *, beta=None, eps=1e-6, time_limit=None, max_nodes=None,
                           device="cpu", seed=0, batch=None, lam_iters=None,
                           max_open=3_000_000, history_every=0.25,
                           num_threads=None, split_rule="slack", eval_top="auto",
                           lam_max_rows="auto", corners="auto",
                           corner_iters=32, seeds=None, fan_rows=0) -> OracleResult:
    """Certified ``M* = max_{||u||_2<=1} |sum_p r_p relu(x_p^T u)|`` by branch and bound.

    Args:
        X: ``(n, d)`` patch rows (float64).
        r: ``(n,)`` residual.
        beta: optional threshold; the search then only decides ``M* <= beta (1+eps)``
            ("feasible") versus ``M* > beta`` ("descent", stops at the first certified one).
        eps: relative tolerance of the proof.
        time_limit: seconds (None: unlimited); max_nodes: regions (None: unlimited).
        device: torch device for the batched bounds ("cpu", "cuda", ...).
        seed: for the multi-start local search.
        batch: regions bounded per step (default 1024 on CPU, 32768 on CUDA, fewer when
            ``batch * rows`` would exceed 2^21 (CPU) / 2^27 (CUDA); at least 8).
        lam_iters: iterations of the lambda refinement for undecided ``r_p < 0`` rows
            (bisection-like; default 32 for <= 256 merged rows, else 8).
        max_open: open regions allowed before stopping with status "budget".
        num_threads: torch intra-op threads for this call (restored afterwards); None
            leaves the setting alone.  On a loaded CPU, 1 is often ~10x faster.
        split_rule: "slack" (bisect the coordinate removing the most relaxation slack) or
            "width" (``width_j * sum_und |r_p x_pj|``, the rule before v2).
        eval_top: lower-bound candidates are evaluated for this many regions of each batch
            (those with the largest bounds); None: all; "auto": all for <= 1,024 merged rows
            (cheap there, and the incumbent drives the pruning in bracket mode), else 128.
        lam_max_rows: the lambda refinement runs only on regions with at most this many
            undecided ``r_p < 0`` rows (others keep the lambda of the box centre's signs);
            "auto": 8; None: every region (the behaviour before v2, ~3-6x slower per node
            on n = 1,280 for a small gain per node).
        corners: also bound each region through the corners of its chart box, with the
            undecided ``r_p > 0`` rows exact (see ``_Bounder._corner_bound``), and keep the
            smaller bound.  "auto": on for ``2 <= d <= 11`` (``2^(d-1)`` corners per region);
            True allows ``d <= 16``.  On the 20-digit 8x8 target it lowered the certified
            upper bound at 120 s from 3.17 beta to 1.69 beta (docs/global_oracle.md).
        corner_iters: Frank-Wolfe steps optimising the corner bound's lambdas of the
            undecided ``r_p < 0`` rows (0: the box centre's signs, the bound before v4).
        seeds: optional ``(m, d)`` directions, typically a trained net's neurons (``certify``
            and ``generate_patterns`` pass them): before the branch and bound, the cells of
            the sign patterns around each seed's kink are probed for a larger ``|f|``
            (``_tip_search``, within the first 10% of ``time_limit``).  Only the lower
            bound (and so "descent") can change.  On the
            20-digit 8x8 target this found a certified descent neuron that 10 minutes of
            branch and bound had not (docs/global_oracle.md).
        fan_rows: regions with at most this many undecided rows also get the fan bound
            (``convexdual._oracle_kernels.fan_bound``; needs numba), exact at a maximiser
            where those rows' hyperplanes meet; 0 (default): off.

    Returns:
        :class:`OracleResult`.  See the module docstring for the soundness argument.
    """
    if num_threads is not None:
        from convexdual._threads import torch_threads

        with torch_threads(num_threads):
            return global_max_correlation(X, r, beta=beta, eps=eps, time_limit=time_limit,
                                          max_nodes=max_nodes, device=device, seed=seed,
                                          batch=batch, lam_iters=lam_iters, max_open=max_open,
                                          history_every=history_every, num_threads=None,
                                          split_rule=split_rule, eval_top=eval_top,
                                          lam_max_rows=lam_max_rows, corners=corners,
                                          corner_iters=corner_iters, seeds=seeds, fan_rows=fan_rows)
    t0 = time.perf_counter()
    X = np.ascontiguousarray(np.asarray(X, dtype=np.float64))
    r = np.ascontiguousarray(np.asarray(r, dtype=np.float64)).ravel()
    if X.ndim != 2 or r.shape[0] != X.shape[0]:
        raise ValueError(f"X must be (n, d) and r (n,); got {X.shape} and {r.shape}")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(r))):
        raise ValueError("X and r must be finite")
    if beta is not None and not (np.isfinite(beta) and beta >= 0):
        raise ValueError("beta must be a finite number >= 0")
    if split_rule not in ("slack", "width"):
        raise ValueError(f"split_rule must be 'slack' or 'width', got {split_rule!r}")
    if not (eval_top is None or eval_top == "auto" or (int(eval_top) == eval_top and eval_top >= 1)):
        raise ValueError(f"eval_top must be 'auto', None or an integer >= 1, got {eval_top!r}")
    if not (lam_max_rows is None or lam_max_rows == "auto"
            or (int(lam_max_rows) == lam_max_rows and lam_max_rows >= 0)):
        raise ValueError(f"lam_max_rows must be 'auto', None or an integer >= 0, got {lam_max_rows!r}")
    n, d = X.shape
    if d < 1:
        raise ValueError("d must be >= 1")
    if corners not in ("auto", True, False):
        raise ValueError(f"corners must be 'auto', True or False, got {corners!r}")
    if corners == "auto":
        corners = 2 <= d <= 11
    elif corners and not 2 <= d <= 16:
        raise ValueError(f"corners=True needs 2 <= d <= 16 (2^(d-1) corners per region); d = {d}")
    if not (isinstance(corner_iters, (int, np.integer)) and not isinstance(corner_iters, bool)
            and corner_iters >= 0):
        raise ValueError(f"corner_iters must be an integer >= 0, got {corner_iters!r}")
    if not (isinstance(fan_rows, (int, np.integer)) and not isinstance(fan_rows, bool) and 0 <= fan_rows <= 16):
        raise ValueError(f"fan_rows must be an integer in [0, 16] (2^fan_rows patterns per region), got {fan_rows!r}")
    if seeds is not None:
        seeds = np.asarray(seeds, dtype=np.float64)
        if seeds.ndim == 1:
            seeds = seeds[None, :]
        if seeds.ndim != 2 or seeds.shape[1] != d or not np.all(np.isfinite(seeds)):
            raise ValueError(f"seeds must be a finite (m, d={d}) array of directions, got shape {seeds.shape}")
    S = float(np.sum(np.abs(r) * np.abs(X).sum(1)))
    margin = 8.0 * (n + 8 * d + 32) * _U * S
    eps = float(eps)
    stats = {"rows_in": n, "seconds_bound": 0.0, "seconds_select": 0.0, "seconds_split": 0.0,
             "seconds_local_search": 0.0, "seconds_eval": 0.0}
    dev = torch.device(device)

    Xh, rh = _prepare(X, r)
    if batch is None:
        # about 2^21 (CPU) / 2^27 (CUDA) row-region pairs per step: the (rows x batch) float64
        # temporaries stay in the tens of MB on CPU for n up to ~10^6 rows
        cap = 2 ** 27 if dev.type == "cuda" else 2 ** 21
        batch = int(min(32768 if dev.type == "cuda" else 1024,
                        max(8, cap // max(1, Xh.shape[0]))))
    stats["batch"] = batch
    stats["rows_merged"] = int(Xh.shape[0])
    rng = np.random.default_rng(seed)

    def exact(u, sg):
        u = np.asarray(u, dtype=np.float64)
        nu = np.linalg.norm(u)
        if not nu > 0:
            return -np.inf, u
        u = u / nu
        return float(sg * evaluate_correlation(X, r, u)), u

    def improve(u, sg, incumbent):
        """The incumbent ``(value, u, sign)``, replaced by candidate ``u`` (exact value) and
        its fixed-point ascent when they are better."""
        ev, eu = exact(u, sg)
        if not ev > incumbent[0]:
            return incumbent
        best = (ev, eu, sg)
        _, pu, psg = _local_search(Xh, rh, rng, starts=0, iters=20, extra=eu[:, None], signs=(sg,))
        if pu is not None:
            pv, pu = exact(pu, psg)
            if pv > best[0]:
                best = (pv, pu, psg)
        return best

    # lower bound: local search
    ts = time.perf_counter()
    if Xh.shape[0] == 0:
        u0 = np.zeros(d)
        u0[0] = 1.0
        best_val, best_u = exact(u0, 1)
        best_sg = 1 if best_val >= 0 else -1
        best_val = abs(best_val)
    else:
        extra = np.stack([Xh.T @ rh, -(Xh.T @ rh)], 1)
        starts = int(min(256, max(8, 2 ** 22 // max(1, Xh.shape[0]))))
        dl = None if time_limit is None else t0 + 0.05 * float(time_limit)
        v, u, sgn = _local_search(Xh, rh, rng, starts=starts, extra=extra, deadline=dl)
        best_val, best_u = exact(u, sgn)
        best_sg = sgn
        if not np.isfinite(best_val):
            u0 = np.zeros(d)
            u0[0] = 1.0
            best_val, best_u = exact(u0, 1)
            best_sg = 1
            if best_val < 0:
                best_val, best_sg = -best_val, -1
    if seeds is not None and Xh.shape[0]:
        dl = None if time_limit is None else t0 + 0.1 * float(time_limit)
        v, u, sgn = _tip_search(Xh, rh, seeds, max_rows=10, deadline=dl)
        if u is not None:
            best_val, best_u, best_sg = improve(u, sgn, (best_val, best_u, best_sg))
    stats["seconds_local_search"] = time.perf_counter() - ts

    def descent_found():
        return beta is not None and best_val - margin > beta

    def threshold():
        ref = best_val if beta is None else max(beta, best_val)
        return ref * (1.0 + eps) + 2.0 * margin

    history = []
    nodes = 0
    pruned_max = -np.inf
    status = None
    if Xh.shape[0] == 0:
        # f == 0 up to the preprocessing error
        pruned_max = margin
        lo = np.zeros((0, d))
    else:
        faces = [(i, s) for i in range(d) for s in (1.0, -1.0)]
        nf = len(faces)
        lo = np.full((2 * nf, d), -1.0)
        hi = np.full((2 * nf, d), 1.0)
        face = np.zeros(2 * nf, dtype=np.int64)
        fsg = np.zeros(2 * nf)
        sgn = np.zeros(2 * nf)
        for k, (sg_) in enumerate((1.0, -1.0)):
            for q, (i, s) in enumerate(faces):
                j = k * nf + q
                lo[j, i] = hi[j, i] = s
                face[j], fsg[j], sgn[j] = i, s, sg_
        ub = np.full(2 * nf, np.inf)
        openset = _OpenSet((lo, hi, face, fsg, sgn, ub), batch)
        if lam_iters is None:
            lam_iters = 32 if Xh.shape[0] <= 256 else 8
        if lam_max_rows == "auto":
            lam_max_rows = 8
        if eval_top == "auto":
            eval_top = None if Xh.shape[0] <= 1024 else 128
        bounder = _Bounder(Xh, rh, dev, lam_iters, split_rule, eval_top, lam_max_rows,
                           corners=corners, margin=margin, corner_iters=corner_iters,
                           fan_rows=fan_rows)
        last_hist = -1.0
        while True:
            now = time.perf_counter() - t0
            up_now = max(pruned_max, openset.max_ub())
            if now - last_hist >= history_every:
                history.append((now, nodes, up_now, best_val))
                last_hist = now
            if descent_found():
                status = "descent"
                break
            if len(openset) == 0:
                status = "proved"
                break
            if beta is None and up_now <= best_val * (1.0 + eps) + 2.0 * margin:
                status = "proved"
                break
            if (time_limit is not None and now >= time_limit) or \
                    (max_nodes is not None and nodes >= max_nodes) or len(openset) > max_open:
                status = "budget"
                break
            ts = time.perf_counter()
            blo, bhi, bface, bfs, bsg, bub = openset.take()
            stats["seconds_select"] += time.perf_counter() - ts
            ts = time.perf_counter()
            nub, split, cval, cu, csg, nund = bounder(blo, bhi, bface, bfs, bsg,
                                                      threshold() - margin)
            openset.note_step(time.perf_counter() - ts)
            stats["seconds_bound"] += time.perf_counter() - ts
            nodes += len(bub)
            nub = np.minimum(nub + margin, bub)
            if cval > best_val:
                ts = time.perf_counter()
                best_val, best_u, best_sg = improve(cu, csg, (best_val, best_u, best_sg))
                stats["seconds_eval"] += time.perf_counter() - ts
            ts = time.perf_counter()
            thr = threshold()
            alive = nub > thr
            if np.any(~alive):
                pruned_max = max(pruned_max, float(nub[~alive].max()))
            if np.any(alive):
                a = np.nonzero(alive)[0]
                blo, bhi, split, nub = blo[a], bhi[a], split[a], nub[a]
                bface, bfs, bsg = bface[a], bfs[a], bsg[a]
                rows = np.arange(len(a))
                l_s = blo[rows, split]
                h_s = bhi[rows, split]
                m_s = 0.5 * (l_s + h_s)
                ok = (m_s > l_s) & (m_s < h_s)
                if np.any(~ok):   # cannot be split in float64: freeze its bound
                    pruned_max = max(pruned_max, float(nub[~ok].max()))
                    rows, split, m_s = rows[ok], split[ok], m_s[ok]
                    blo, bhi, nub, bface, bfs, bsg = (blo[ok], bhi[ok], nub[ok], bface[ok],
                                                      bfs[ok], bsg[ok])
                    rows = np.arange(len(blo))
                hi1 = bhi.copy()
                hi1[rows, split] = m_s
                lo2 = blo.copy()
                lo2[rows, split] = m_s
                openset.add((np.concatenate([blo, lo2]), np.concatenate([hi1, bhi]),
                             np.concatenate([bface, bface]), np.concatenate([bfs, bfs]),
                             np.concatenate([bsg, bsg]), np.concatenate([nub, nub])))
            stats["seconds_split"] += time.perf_counter() - ts
    if status is None:
        status = "proved"
    n_open = 0 if Xh.shape[0] == 0 else len(openset)
    up = max(pruned_max, openset.max_ub() if n_open else -np.inf)
    up = max(up, best_val)      # an upper bound below an attained value can only be rounding
    verdict = None
    if beta is not None:
        if status == "descent":
            verdict = "descent"
        elif status == "proved" and up <= beta * (1.0 + eps) + 2.0 * margin:
            verdict = "feasible"
        elif best_val - margin > beta:
            verdict, status = "descent", "descent"
    seconds = time.perf_counter() - t0
    history.append((seconds, nodes, up, best_val))
    stats["seconds_total"] = seconds
    if Xh.shape[0]:
        stats["corner_regions"], stats["corner_pruned"] = bounder.corner_stats
        stats["fan_regions"], stats["fan_pruned"] = bounder.fan_stats
    return OracleResult(upper=float(up), lower=float(best_val), argmax=np.asarray(best_u),
                        sign=int(best_sg), nodes=int(nodes), seconds=float(seconds),
                        status=status, verdict=verdict, beta=beta, eps=eps, margin=float(margin),
                        open_regions=int(n_open), history=tuple(history), stats=stats)


# ----------------------------------------------------------------------------- reference


def _cells(A, tol):
    """Sign vectors (+-1 per row) of all full-dimensional cells of the central arrangement
    of the (nonzero) rows of ``A`` (m, k), rank(A) = k.  Recursion over the vertices
    (1-D intersections): every cell of a pointed arrangement has an extreme ray, and the
    cells at a ray ``v`` are the sign of the other rows at ``v`` times the cells of the
    rows through ``v`` restricted to ``v^perp``."""
    m, k = A.shape
    if k == 1:
        s = np.sign(A[:, 0]).astype(int)
        return {tuple(s), tuple(-s)}
    if m == k:        # k independent rows: every sign vector is a cell
        return {tuple(int(v) for v in t) for t in np.array(np.meshgrid(*[[-1, 1]] * k)).reshape(k, -1).T}
    out = set()
    An = A / np.linalg.norm(A, axis=1, keepdims=True)
    subs = np.array(list(combinations(range(m), k - 1)), dtype=int)
    _, sv, Vt = np.linalg.svd(An[subs])              # batched: (C, k-1, k)
    ok = sv[:, -1] > 1e-9 * np.maximum(sv[:, 0], 1.0)
    seen = []
    for q in np.nonzero(ok)[0]:
        v = Vt[q, -1]
        if seen and np.any(np.abs(np.abs(np.asarray(seen) @ v) - 1.0) < 1e-12):
            continue
        seen.append(v)
        Q = Vt[q, :-1].T                              # basis of v^perp, (k, k-1)
        for vv in (v, -v):
            a = An @ vv
            zero = np.abs(a) <= tol
            s = np.sign(a).astype(int)
            Z = np.nonzero(zero)[0]
            for t in _cells(An[Z] @ Q, tol):
                s2 = s.copy()
                s2[Z] = t
                out.add(tuple(s2))
    return out


def brute_force_max_correlation(X, r, *, tol=1e-9, return_cells=False):
    """Exact ``M*`` for tiny problems by enumerating every cell of the arrangement.

    Independent of :func:`global_max_correlation`: the rows are projected onto their row
    space (rank k), every full-dimensional cell (sign vector ``s``) is enumerated through
    the arrangement's vertices (see :func:`_cells`), and in each cell, where
    ``f(u) = c^T u`` with ``c = X^T (r * 1[s > 0])``, the maximum of ``+-c^T u`` over the
    cell cone intersected with the unit ball is ``||Proj_K(+-c)|| = dist(+-c, K polar)``, a
    non-negative least-squares problem (scipy NNLS) on the cone's generators ``-s_p x_p``.
    Exponential in d; meant for d <= 4 and n <= ~15.
    """
    from scipy.optimize import nnls

    X = np.asarray(X, dtype=np.float64)
    r = np.asarray(r, dtype=np.float64).ravel()
    norms = np.linalg.norm(X, axis=1)
    keep = norms > 1e-300
    X, r = X[keep], r[keep]
    if X.shape[0] == 0:
        return (0.0, []) if return_cells else 0.0
    Uu, sv, Vt = np.linalg.svd(X, full_matrices=False)
    k = int(np.sum(sv > 1e-10 * sv[0]))
    Q = Vt[:k].T                      # (d, k)
    Y = X @ Q                         # (n, k)
    cells = _cells(Y, tol)
    best = 0.0
    for s in cells:
        s = np.asarray(s)
        D = (s > 0).astype(float)
        c = Y.T @ (r * D)
        Gm = -(s[:, None] * Y).T      # (k, n): polar generators as columns
        for cs in (c, -c):
            _, res = nnls(Gm, cs, maxiter=50 * Gm.shape[1] + 100)
            best = max(best, float(res))
    if return_cells:
        return best, [np.asarray(s) for s in cells]
    return best
