"""numba kernel of the global oracle's corner bound (``global_oracle._Bounder._corner_bound``).

For each region (a box in a face chart of the cube) it walks the ``2^(d-1)`` corners of the
box in Gray-code order, so each step changes one coordinate and updates every row's
activation ``a_k = x_k^T w`` by one addition, and returns

    max_corners  max(h(w), 0) / (q^T w),   h(w) = c^T w + sum_k R_k relu(x_k^T w),

with a rigorous bound on its floating-point error (the caller adds it).  Compiled lazily
(numba is optional); no ``fastmath`` beyond reassociation and contraction, which the
``gamma_k`` error bounds below allow (they hold for any summation order and for fused
multiply-adds), while NaN/inf semantics stay IEEE.
"""

from __future__ import annotations

import functools

import numpy as np

_U = 2.0 ** -53


@functools.lru_cache(maxsize=None)
def corner_kernel():
    from numba import njit, prange

    @njit(cache=True, inline="always")
    def gray_step(g, state, J, lo_b, hi_b):
        """Corner ``g`` of the Gray walk: ``(t, new state, coordinate, signed step)``."""
        t = 0
        while not (g >> t) & 1:
            t += 1
        state ^= 1 << t
        jj = J[t]
        step = hi_b[jj] - lo_b[jj]
        if not (state >> t) & 1:
            step = -step
        return t, state, jj, step

    @njit(parallel=True, fastmath={"reassoc", "contract"}, cache=True)
    def corner_bound(X, P, cnt, Rg, lo, hi, face, c, q, out_val, out_err, out_qmin):
        B = P.shape[0]
        d = X.shape[1]
        m = d - 1
        nv = 1 << m
        for b in prange(B):
            Kb = cnt[b]
            J = np.empty(m, np.int64)
            t = 0
            for j in range(d):
                if j != face[b]:
                    J[t] = j
                    t += 1
            a = np.empty(Kb)
            D = np.empty((m, Kb))
            s_abs = 0.0
            for k in range(Kb):
                p = P[b, k]
                acc = 0.0
                nx = 0.0
                for j in range(d):
                    acc += X[p, j] * lo[b, j]
                    nx += abs(X[p, j])
                a[k] = acc
                s_abs += abs(Rg[b, k]) * nx
                for t in range(m):
                    jj = J[t]
                    D[t, k] = X[p, jj] * (hi[b, jj] - lo[b, jj])
            lin = 0.0
            qw = 0.0
            c_abs = 0.0
            q_abs = 0.0
            for j in range(d):
                lin += c[b, j] * lo[b, j]
                qw += q[b, j] * lo[b, j]
                c_abs += abs(c[b, j])
                q_abs += abs(q[b, j])
            h = lin
            for k in range(Kb):
                h += Rg[b, k] * max(a[k], 0.0)
            hv = np.empty(nv)
            hv[0] = h
            best = max(h, 0.0) / qw
            gbest = 0
            qmin = qw
            state = 0
            for g in range(1, nv):
                t, state, jj, step = gray_step(g, state, J, lo[b], hi[b])
                if step >= 0.0:
                    for k in range(Kb):
                        a[k] += D[t, k]
                else:
                    for k in range(Kb):
                        a[k] -= D[t, k]
                lin += c[b, jj] * step
                qw += q[b, jj] * step
                h = lin
                for k in range(Kb):
                    h += Rg[b, k] * max(a[k], 0.0)
                hv[g] = h
                v = max(h, 0.0) / qw
                if v > best:
                    best = v
                    gbest = g
                if qw < qmin:
                    qmin = qw
            qmin = qmin - (nv + d + 4) * 2.0 ** -53 * q_abs
            # other directions q: towards the maximising corner (that corner's own ratio
            # becomes h / ||w||); the same corner values hv, only q^T w changes
            st = gbest ^ (gbest >> 1)
            vs = np.empty(d)
            for j in range(d):
                vs[j] = lo[b, j]
            for t in range(m):
                if (st >> t) & 1:
                    vs[J[t]] = hi[b, J[t]]
            nvs = 0.0
            nq = 0.0
            for j in range(d):
                nvs += vs[j] * vs[j]
                nq += q[b, j] * q[b, j]
            nvs = np.sqrt(nvs)
            nq = np.sqrt(nq)
            qq = np.empty(d)
            for mix in (0.5, 1.0):
                nn = 0.0
                for j in range(d):
                    qq[j] = (1.0 - mix) * q[b, j] / nq + mix * vs[j] / nvs
                    nn += qq[j] * qq[j]
                nn = np.sqrt(nn)
                qa = 0.0
                for j in range(d):
                    qq[j] = qq[j] / nn * (1.0 - 8 * d * 2.0 ** -53)
                    qa += abs(qq[j])
                qw = 0.0
                for j in range(d):
                    qw += qq[j] * lo[b, j]
                v2 = max(hv[0], 0.0) / qw
                qm2 = qw
                state = 0
                for g in range(1, nv):
                    t, state, jj, step = gray_step(g, state, J, lo[b], hi[b])
                    qw += qq[jj] * step
                    v = max(hv[g], 0.0) / qw
                    if v > v2:
                        v2 = v
                    if qw < qm2:
                        qm2 = qw
                qm2 = qm2 - (nv + d + 4) * 2.0 ** -53 * qa
                if qm2 >= 0.5 and (v2 < best or qmin < 0.5):
                    best = v2
                    qmin = qm2
            # every |w_j| <= 1: each activation went through at most nv + d roundings of
            # magnitude <= u ||x_k||_1, the row sum adds Kb more, the linear term nv + d
            out_err[b] = (nv + 2 * d + Kb + 8) * 2.0 ** -53 * (s_abs + c_abs)
            out_qmin[b] = qmin
            out_val[b] = best

    return corner_bound


def corner_bound(X, P, cnt, Rg, lo, hi, face, c, q):
    """``(value, abs error of h, certified min of q^T w)`` per region (numpy float64 in/out)."""
    B = P.shape[0]
    out_val = np.empty(B)
    out_err = np.empty(B)
    out_qmin = np.empty(B)
    corner_kernel()(X, P, cnt, Rg, lo, hi, face, c, q, out_val, out_err, out_qmin)
    return out_val, out_err, out_qmin
