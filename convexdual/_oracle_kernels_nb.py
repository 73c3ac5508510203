"""The numba-compiled functions of ``convexdual._oracle_kernels`` (imported only when numba is).

They live at module level, not in a factory's closure: numba's on-disk cache (``cache=True``)
cannot key a function that calls closure-local jitted functions, and recompiled the corner
kernel in every new process (about 10 s on a 2-core machine, and a new cache file each time).
"""

from __future__ import annotations

import numpy as np
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


@njit(cache=True)
def small_lstsq(Es, f):
    """Least squares on few columns: Cholesky of the normal equations, or LAPACK's
    ``lstsq`` when the columns are (nearly) dependent."""
    d, na = Es.shape
    G = np.empty((na, na))
    g = np.empty(na)
    for a in range(na):
        s = 0.0
        for r in range(d):
            s += Es[r, a] * f[r]
        g[a] = s
        for b2 in range(a + 1):
            s = 0.0
            for r in range(d):
                s += Es[r, a] * Es[r, b2]
            G[a, b2] = s
    Lc = np.zeros((na, na))
    for a in range(na):
        for b2 in range(a + 1):
            s = G[a, b2]
            for t in range(b2):
                s -= Lc[a, t] * Lc[b2, t]
            if a == b2:
                if s <= 1e-10 * G[a, a] or na > d:
                    return np.linalg.lstsq(Es, f, -1.0)[0]
                Lc[a, a] = np.sqrt(s)
            else:
                Lc[a, b2] = s / Lc[b2, b2]
    z = np.empty(na)
    for a in range(na):
        s = g[a]
        for t in range(a):
            s -= Lc[a, t] * z[t]
        z[a] = s / Lc[a, a]
    for a in range(na - 1, -1, -1):
        s = z[a]
        for t in range(a + 1, na):
            s -= Lc[t, a] * z[t]
        z[a] = s / Lc[a, a]
    return z

@njit(cache=True)
def nnls(E, f, mu, iters):
    """Lawson-Hanson active set for ``min ||E mu - f||, mu >= 0`` (in place).

    Any ``mu >= 0`` it returns gives a sound bound to the caller; convergence only
    decides how tight the bound is (iterations are capped)."""
    d, m = E.shape
    act = np.zeros(m, np.bool_)
    for j in range(m):
        mu[j] = 0.0
    res = f.copy()
    scale = 0.0
    for j in range(d):
        scale += f[j] * f[j]
    tol = 1e-14 * (np.sqrt(scale) + 1e-300)
    for outer in range(iters):
        jm = -1
        wm = tol
        for j in range(m):
            if not act[j]:
                s = 0.0
                for t in range(d):
                    s += E[t, j] * res[t]
                if s > wm:
                    wm = s
                    jm = j
        if jm < 0:
            break
        act[jm] = True
        for inner in range(iters):
            na = 0
            for j in range(m):
                if act[j]:
                    na += 1
            idx = np.empty(na, np.int64)
            t = 0
            for j in range(m):
                if act[j]:
                    idx[t] = j
                    t += 1
            Es = np.empty((d, na))
            for t in range(na):
                for r in range(d):
                    Es[r, t] = E[r, idx[t]]
            z = small_lstsq(Es, f)
            ok = True
            for t in range(na):
                if z[t] <= 0.0:
                    ok = False
            if ok:
                for t in range(na):
                    mu[idx[t]] = z[t]
                break
            alpha = 1.0
            for t in range(na):
                if z[t] <= 0.0:
                    den = mu[idx[t]] - z[t]
                    if den > 0.0:
                        a = mu[idx[t]] / den
                        if a < alpha:
                            alpha = a
            for t in range(na):
                j = idx[t]
                mu[j] = mu[j] + alpha * (z[t] - mu[j])
                if mu[j] <= 1e-300 or (z[t] <= 0.0 and mu[j] <= 1e-15 * abs(z[t])):
                    mu[j] = 0.0
                    act[j] = False
        for r in range(d):
            s = f[r]
            for j in range(m):
                s -= E[r, j] * mu[j]
            res[r] = s
    return mu

@njit(parallel=True, fastmath={"reassoc", "contract"}, cache=True)
def fan_bound(X, U, cntu, Ru, c, cabs, thr, nrows, iters, out_val):
    """Per region: ``max`` over the sign patterns ``s`` of its ``k`` undecided rows of
    ``||g_s + A_s^T mu_s||``, ``mu_s >= 0`` from non-negative least squares, where
    ``g_s = c + sum_{s_t = 1} Ru_t x_t`` and the rows of ``A_s`` are ``+-x_t`` (the cone
    ``A_s w >= 0`` of the pattern); ``inf`` once a pattern exceeds ``thr``.  See
    ``convexdual._oracle_kernels.fan_bound``."""
    B = U.shape[0]
    d = X.shape[1]
    for b in prange(B):
        k = cntu[b]
        E = np.zeros((d, k))
        gam = (nrows + 2 * k + 2 * d + 8) * 2.0 ** -53
        mu = np.empty(k)
        cs = np.empty(d)
        f = np.empty(d)
        best = 0.0
        for pat in range(1 << k):
            for j in range(d):
                cs[j] = c[b, j]
            for t in range(k):
                p = U[b, t]
                if (pat >> t) & 1:
                    for j in range(d):
                        E[j, t] = X[p, j]
                        cs[j] += Ru[b, t] * X[p, j]
                else:
                    for j in range(d):
                        E[j, t] = -X[p, j]
            for j in range(d):
                f[j] = -cs[j]
            nnls(E, f, mu, iters)
            # max {cs^T w : A w >= 0, ||w|| <= 1} <= ||cs + A^T mu|| for any mu >= 0
            nv = 0.0
            ne = 0.0
            for j in range(d):
                v = cs[j]
                a = cabs[b, j]
                for t in range(k):
                    v += E[j, t] * mu[t]
                    a += abs(E[j, t]) * mu[t]
                nv += v * v
                ne += (gam * a) * (gam * a)
            val = (np.sqrt(nv) + np.sqrt(ne)) * (1.0 + (d + 4) * 2.0 ** -53)
            if val > best:
                best = val
            if best > thr:
                best = np.inf
                break
        out_val[b] = best
