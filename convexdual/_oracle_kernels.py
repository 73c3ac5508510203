"""numba kernel of the global oracle's corner bound (``global_oracle._Bounder._corner_bound``).

For each region (a box in a face chart of the cube) it walks the ``2^(d-1)`` corners of the
box in Gray-code order, so each step changes one coordinate and updates every row's
activation ``a_k = x_k^T w`` by one addition, and returns

    max_corners  max(h(w), 0) / (q^T w),
    h(w) = c^T w + sum_{k: R_k > 0} R_k relu(x_k^T w) + sum_{k: R_k < 0} R_k lam_k x_k^T w,

with a rigorous bound on its floating-point error (the caller adds it).  The ``lam_k`` in
[0, 1] of the undecided ``R_k < 0`` rows start at the box centre's signs and are then
optimised by Frank-Wolfe steps on the dual of ``min_lam max_corners`` (the corner values
of the fixed rows are computed once; each step costs ``O(K d + 2^(d-1) d)``); the value
for the kept ``lam`` is recomputed from scratch, so the iterations need no rounding
analysis.  The compiled code is in ``_oracle_kernels_nb`` (imported lazily: numba is
optional); no ``fastmath`` beyond reassociation and contraction, which the
``gamma_k`` error bounds below allow (they hold for any summation order and for fused
multiply-adds), while NaN/inf semantics stay IEEE.
"""

from __future__ import annotations

import functools

import numpy as np


@functools.lru_cache(maxsize=None)
def corner_kernel():
    from convexdual._oracle_kernels_nb import corner_bound

    return corner_bound


def corner_bound(X, P, cnt, Rg, Pn, cntn, Rn, lo, hi, face, c, q, thr=np.inf, iters=0):
    """``(value, abs error of h, certified min of q^T w)`` per region (numpy float64 in/out).

    ``P, cnt, Rg``: the undecided ``r > 0`` rows of each region (kept exact); ``Pn, cntn,
    Rn``: the undecided ``r < 0`` rows (linearised with the optimised lambda, ``iters``
    Frank-Wolfe steps, stopping early once ``value + 2 err <= thr``); ``c``: the linear
    term of the decided rows."""
    B = P.shape[0]
    out_val = np.empty(B)
    out_err = np.empty(B)
    out_qmin = np.empty(B)
    corner_kernel()(X, P, cnt, Rg, Pn, cntn, Rn, lo, hi, face, c, q, float(thr), int(iters),
                    out_val, out_err, out_qmin)
    return out_val, out_err, out_qmin


def fan_bound(X, U, cntu, Ru, c, cabs, thr=np.inf, iters=64):
    """Bound of regions with few undecided rows that is exact at a maximiser on their kink.

    On region ``b``, with decided rows summed into ``c[b]`` (the rows with ``x^T u >= 0``)
    and ``k`` undecided rows ``U[b, :k]`` (values ``Ru``), ``f`` equals the linear
    ``g_s^T u`` on the part of the region in the cone ``K_s = {s_t x_t^T u >= 0}`` of each
    sign pattern ``s``.  So ``max_region f <= max_s max_{K_s, ||u|| <= 1} g_s^T u``, and that
    is ``||g_s + A_s^T mu||`` at the non-negative least-squares ``mu`` (any ``mu >= 0`` gives
    an upper bound).  The box itself is dropped, so the bound does not shrink with the
    region; but when the region holds a point ``u*`` where all its undecided hyperplanes meet
    and ``f`` has a local maximum (a trained net's neuron at ``|f| = beta``), ``u*`` is the
    maximum of every pattern's linear piece over its convex cone, so the bound equals
    ``f(u*)``: the regions around such a "tip" close, which bisection alone never achieves
    (the other bounds keep an excess proportional to the width).  ``cabs``: the absolute
    sums behind ``c`` (for the rounding allowance).  Returns ``inf`` where a pattern exceeds
    ``thr``."""
    out = np.empty(U.shape[0])
    if U.shape[0]:
        from convexdual._oracle_kernels_nb import fan_bound as kernel

        kernel(np.ascontiguousarray(X), np.ascontiguousarray(U), np.ascontiguousarray(cntu),
               np.ascontiguousarray(Ru), np.ascontiguousarray(c), np.ascontiguousarray(cabs),
               float(thr), X.shape[0], int(iters), out)
    return out
