"""The numba-compiled functions of ``convexdual._oracle_kernels`` (imported only when numba is).

They live at module level, not in a factory's closure: numba's on-disk cache (``cache=True``)
cannot key a function that calls closure-local jitted functions, and recompiled the corner
kernel in every new process (about 10 s on a 2-core machine, and a new cache file each time).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

_U = 2.0 ** -53


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

@njit(cache=True, inline="always")
def ratio_max(hq, Wt, cl, tmp):
    """``max_g hq[g] - cl^T Wt[:, g]`` and its corner (fast, unchecked rounding); with
    ``hq = h / q^T w`` and ``Wt = w / q^T w`` this is the largest corner ratio."""
    nv = hq.shape[0]
    for g in range(nv):
        tmp[g] = hq[g]
    for j in range(cl.shape[0]):
        cj = cl[j]
        for g in range(nv):
            tmp[g] -= cj * Wt[j, g]
    best = -np.inf
    gb = 0
    for g in range(nv):
        if tmp[g] > best:
            best = tmp[g]
            gb = g
    return best, gb

@njit(parallel=True, fastmath={"reassoc", "contract"}, cache=True)
def corner_bound(X, P, cnt, Rg, Pn, cntn, Rn, lo, hi, face, c, q, thr, iters,
                 out_val, out_err, out_qmin):
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
        c_abs = 0.0
        q_abs = 0.0
        for j in range(d):
            lin += c[b, j] * lo[b, j]
            c_abs += abs(c[b, j])
            q_abs += abs(q[b, j])
        # numerators h(w_g) of the fixed rows (decided: linear; undecided r > 0: relu)
        # at the corners in Gray order, one addition per row per corner
        hv = np.empty(nv)
        h = lin
        for k in range(Kb):
            h += Rg[b, k] * max(a[k], 0.0)
        hv[0] = h
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
            h = lin
            for k in range(Kb):
                h += Rg[b, k] * max(a[k], 0.0)
            hv[g] = h
        # the corners themselves (exact: every coordinate is lo or hi) and q^T w_g
        Wc = np.empty((nv, d))
        qw = np.empty(nv)
        qmin = np.inf
        for g in range(nv):
            st = g ^ (g >> 1)
            for j in range(d):
                Wc[g, j] = lo[b, j]
            for t in range(m):
                if (st >> t) & 1:
                    Wc[g, J[t]] = hi[b, J[t]]
            s = 0.0
            for j in range(d):
                s += q[b, j] * Wc[g, j]
            qw[g] = s
            if s < qmin:
                qmin = s
        qmin = qmin - (d + 4) * 2.0 ** -53 * q_abs
        # undecided r < 0 rows: r relu(x^T w) <= r lam x^T w for any lam in [0, 1]
        Kn = cntn[b]
        Xn = np.empty((Kn, d))
        rn = np.empty(Kn)
        sn_abs = 0.0
        for k in range(Kn):
            p = Pn[b, k]
            rn[k] = -Rn[b, k]
            nx = 0.0
            for j in range(d):
                Xn[k, j] = X[p, j]
                nx += abs(X[p, j])
            sn_abs += rn[k] * nx
        # every |w_j| <= 1: each activation went through at most nv + d roundings of
        # magnitude <= u ||x_k||_1, the row sums add Kb (Kn) more, the linear terms d + 2
        err = (nv + 2 * d + Kb + Kn + 8) * 2.0 ** -53 * (s_abs + sn_abs + c_abs)
        out_err[b] = err
        out_qmin[b] = qmin
        if qmin < 0.5:
            out_val[b] = np.inf
            continue
        lam = np.empty(Kn)
        best_lam = np.empty(Kn)
        cl = np.zeros(d)
        for k in range(Kn):
            s = 0.0
            for j in range(d):
                s += Xn[k, j] * (lo[b, j] + hi[b, j])
            lam[k] = 1.0 if s > 0.0 else 0.0
            best_lam[k] = lam[k]
            if s > 0.0:
                for j in range(d):
                    cl[j] += rn[k] * Xn[k, j]
        # the FW iterations work on hq = h / q^T w and Wt = w / q^T w (no divisions)
        hq = np.empty(nv)
        Wt = np.empty((d, nv))
        for g in range(nv):
            hq[g] = hv[g] / qw[g]
            for j in range(d):
                Wt[j, g] = Wc[g, j] / qw[g]
        tmp = np.empty(nv)
        best, gmax = ratio_max(hq, Wt, cl, tmp)
        # min over lam of max over corners (convex, piecewise linear): Frank-Wolfe on
        # its dual (weights mu on the corners); the best response to mu is
        # lam_k = 1[x_k^T m > 0], m = sum_g mu_g w_g / qw_g.  Any lam is sound; the
        # smallest value over the iterates and their running means is kept.
        if Kn > 0 and iters > 0 and best + 2.0 * err > thr:
            mv = np.empty(d)
            for j in range(d):
                mv[j] = Wt[j, gmax]
            accl = np.zeros(Kn)
            csum = np.zeros(d)
            cb = np.empty(d)
            # rows as columns, so that the activations x_k^T m vectorise over k
            XnT = np.empty((d, Kn))
            for k in range(Kn):
                for j in range(d):
                    XnT[j, k] = Xn[k, j]
            act = np.empty(Kn)
            wl = np.empty(Kn)
            for it in range(iters):
                for k in range(Kn):
                    act[k] = 0.0
                for j in range(d):
                    mj = mv[j]
                    for k in range(Kn):
                        act[k] += XnT[j, k] * mj
                for k in range(Kn):
                    lam[k] = 1.0 if act[k] > 0.0 else 0.0
                    accl[k] += lam[k]
                    wl[k] = rn[k] * lam[k]
                for j in range(d):
                    sj = 0.0
                    for k in range(Kn):
                        sj += wl[k] * XnT[j, k]
                    cl[j] = sj
                v, g = ratio_max(hq, Wt, cl, tmp)
                if v < best:
                    best = v
                    for k in range(Kn):
                        best_lam[k] = lam[k]
                for j in range(d):
                    csum[j] += cl[j]
                    cb[j] = csum[j] / (it + 1)
                vb, gb_ = ratio_max(hq, Wt, cb, tmp)
                if vb < best:
                    best = vb
                    for k in range(Kn):
                        best_lam[k] = accl[k] / (it + 1)
                if best + 2.0 * err <= thr:
                    break
                gam = 2.0 / (it + 3.0)
                for j in range(d):
                    mv[j] = (1.0 - gam) * mv[j] + gam * Wt[j, g]
        # the bound for best_lam, recomputed from scratch (its rounding is in err)
        for j in range(d):
            cl[j] = 0.0
        for k in range(Kn):
            for j in range(d):
                cl[j] += rn[k] * best_lam[k] * Xn[k, j]
        for g in range(nv):
            s = hv[g]
            for j in range(d):
                s -= cl[j] * Wc[g, j]
            hv[g] = max(s, 0.0)
        best = -np.inf
        gbest = 0
        for g in range(nv):
            v = hv[g] / qw[g]
            if v > best:
                best = v
                gbest = g
        # other directions q: towards the maximising corner (that corner's own ratio
        # becomes h / ||w||); the same corner values hv, only q^T w changes
        nvs = 0.0
        nq = 0.0
        for j in range(d):
            nvs += Wc[gbest, j] * Wc[gbest, j]
            nq += q[b, j] * q[b, j]
        nvs = np.sqrt(nvs)
        nq = np.sqrt(nq)
        qq = np.empty(d)
        for mix in (0.5, 1.0):
            nn = 0.0
            for j in range(d):
                qq[j] = (1.0 - mix) * q[b, j] / nq + mix * Wc[gbest, j] / nvs
                nn += qq[j] * qq[j]
            nn = np.sqrt(nn)
            qa = 0.0
            for j in range(d):
                qq[j] = qq[j] / nn * (1.0 - 8 * d * 2.0 ** -53)
                qa += abs(qq[j])
            v2 = -np.inf
            qm2 = np.inf
            for g in range(nv):
                s = 0.0
                for j in range(d):
                    s += qq[j] * Wc[g, j]
                if s < qm2:
                    qm2 = s
                v = hv[g] / s
                if v > v2:
                    v2 = v
            qm2 = qm2 - (d + 4) * 2.0 ** -53 * qa
            if qm2 >= 0.5 and v2 < best:
                best = v2
                qmin = qm2
        out_qmin[b] = qmin
        out_val[b] = best
