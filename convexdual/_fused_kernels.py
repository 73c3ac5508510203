"""Fused CPU kernels (numba) for the pattern operator's hot loop.

For a block of patch rows ``X (b, d)``, gates ``GT (d, P)`` and weights ``VT (d, P)``
the kernels compute, without ever writing a ``b x P`` matrix to main memory:

* ``forward``: ``yhat_j = sum_i 1[x_j . g_i >= 0] (x_j . v_i)``;
* ``adjoint``: ``A[:, i] += sum_j 1[x_j . g_i >= 0] r_j x_j`` (i.e. ``(X^T D_i r)^T``);
* ``fused_sq``: both, with ``r = yhat - y`` in between (one gradient of the squared loss);
* ``fused_hinge``: ``fused_sq`` for ``V = W - Z`` plus the hinge penalty on cone violations of
  ``W`` and ``Z`` (the minibatch gradient of the paper's Adam + hinge training).

The source is generated for the concrete ``d`` (unrolled over the ``d`` columns) and a
register block of ``R`` rows, so the inner loop over patterns vectorises and each
gate/weight load feeds ``R`` fused multiply-adds. Compiled kernels are memoised per
``(d, R)`` in the process, and numba's on-disk cache keeps the machine code between
processes: the generated source is written once to a cache folder
(``$CONVEXDUAL_CACHE`` or ``~/.cache/convexdual``; ``CONVEXDUAL_CACHE=off`` disables it) and
imported from there, so a new process loads the kernels instead of compiling them for ~10 s.
numba is optional: :func:`numba_available` says whether these kernels can be used.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from typing import Any, Callable

__all__ = ["numba_available", "build_kernels"]


def numba_available() -> bool:
    return importlib.util.find_spec("numba") is not None


def _src(d: int, R: int) -> str:
    ks = range(d)
    rs = range(R)
    L: list[str] = []
    a = L.append
    # ---------------------------------------------------------------- forward part
    def phase1(indent: str, with_v: bool, store: bool = True) -> None:
        for r in rs:
            for k in ks:
                a(f"{indent}x{r}_{k} = X[j + {r}, {k}]")
            if with_v:
                a(f"{indent}yh{r} = zero")
        a(f"{indent}for i in range(P):")
        ii = indent + "    "
        for k in ks:
            a(f"{ii}g{k} = G{k}[i]")
            if with_v:
                a(f"{ii}v{k} = V{k}[i]")
        for r in rs:
            a(f"{ii}s{r} = " + " + ".join(f"x{r}_{k} * g{k}" for k in ks))
            a(f"{ii}m{r} = one if s{r} >= zero else zero")
            if store:  # the adjoint sweep reads the masks back; forward alone does not
                a(f"{ii}M[{r}, i] = m{r}")
            if with_v:
                a(f"{ii}f{r} = " + " + ".join(f"x{r}_{k} * v{k}" for k in ks))
                a(f"{ii}yh{r} += m{r} * f{r}")

    def phase2(indent: str) -> None:
        for r in rs:
            for k in ks:
                a(f"{indent}c{r}_{k} = rr{r} * X[j + {r}, {k}]")
        a(f"{indent}for i in range(P):")
        ii = indent + "    "
        for r in rs:
            a(f"{ii}m{r} = M[{r}, i]")
        for k in ks:
            a(f"{ii}A{k}[i] += " + " + ".join(f"c{r}_{k} * m{r}" for r in rs))

    def header(name: str, args: str) -> None:
        a("@njit(parallel=True, fastmath=True, error_model='numpy', cache=CACHE)")
        a(f"def {name}({args}):")
        a("    n = X.shape[0]; P = GT.shape[1]; T = out.shape[0]")
        a("    zero = X[0, 0] * 0")
        a("    one = zero + 1")
        a("    nb = (n + R - 1) // R")
        a("    per = (nb + T - 1) // T")
        a("    for t in prange(T):")
        a("        M = np.empty((R, P), X.dtype)")
        for k in ks:
            a(f"        G{k} = GT[{k}]")

    # forward: out (T, n_pad)?  we write yhat directly (rows are disjoint per thread)
    header("forward", "X, GT, VT, out, yhat")
    for k in ks:
        a(f"        V{k} = VT[{k}]")
    a("        for bj in range(t * per, min(nb, (t + 1) * per)):")
    a("            j = bj * R")
    phase1("            ", True, store=False)
    for r in rs:
        a(f"            yhat[j + {r}] = yh{r}")
    a("")
    header("adjoint", "X, GT, rvec, out")
    for k in ks:
        a(f"        A{k} = out[t, {k}]")
    a("        for bj in range(t * per, min(nb, (t + 1) * per)):")
    a("            j = bj * R")
    phase1("            ", False)
    for r in rs:
        a(f"            rr{r} = rvec[j + {r}]")
    phase2("            ")
    a("")
    def residual_rows() -> None:
        # the row-block loop of the fused gradients: yhat and the weighted residual rr = (yhat - y) wgt
        a("        for bj in range(t * per, min(nb, (t + 1) * per)):")
        a("            j = bj * R")
        phase1("            ", True)
        for r in rs:
            a(f"            yhat[j + {r}] = yh{r}")
            a(f"            rr{r} = (yh{r} - y[j + {r}]) * wgt[j + {r}]")

    header("fused_sq", "X, GT, VT, y, out, yhat")
    for k in ks:
        a(f"        V{k} = VT[{k}]")
        a(f"        A{k} = out[t, {k}]")
    residual_rows()
    phase2("            ")
    a("")
    # fused_hinge: the minibatch gradient of the paper's hinge-penalised (4), for W and Z at once
    header("fused_hinge", "X, GT, VT, WT, ZT, y, wgt, lam, out, outz, yhat, hval")
    a("        HV = np.zeros(P, X.dtype)")
    a("        C = np.empty((R, P), X.dtype)")
    for k in ks:
        a(f"        V{k} = VT[{k}]")
        a(f"        W{k} = WT[{k}]")
        a(f"        Z{k} = ZT[{k}]")
        a(f"        AW{k} = out[t, {k}]")
        a(f"        AZ{k} = outz[t, {k}]")
    residual_rows()
    for r in rs:
        a(f"            lw{r} = lam * wgt[j + {r}]")
    ind = "                "
    # per weight (W: +1 on the data residual, Z: -1) two sweeps over the patterns, shaped like
    # fused_sq's: coefficients C (R, P) from the weights, then the accumulation from C. One sweep
    # doing both reads and writes too many streams for the loop to vectorise (measured 5x slower).
    for name, src_w, acc, sgn in (("w", "W", "AW", ""), ("z", "Z", "AZ", "-")):
        a("            for i in range(P):")
        for k in ks:
            a(f"{ind}{name}{k} = {src_w}{k}[i]")
        for r in rs:
            a(f"{ind}m{r} = M[{r}, i]")
            a(f"{ind}sg{r} = m{r} + m{r} - one")
            a(f"{ind}a{r} = sg{r} * (" + " + ".join(f"x{r}_{k} * {name}{k}" for k in ks) + ")")
            a(f"{ind}h{r} = lw{r} * (a{r} < zero)")
            a(f"{ind}C[{r}, i] = {sgn}rr{r} * m{r} - sg{r} * h{r}")
        a(f"{ind}HV[i] -= " + " + ".join(f"h{r} * a{r}" for r in rs))
        a("            for i in range(P):")
        for r in rs:
            a(f"{ind}c{r} = C[{r}, i]")
        for k in ks:
            a(f"{ind}{acc}{k}[i] += " + " + ".join(f"c{r} * x{r}_{k}" for r in rs))
    a("        hval[t] = HV.sum()")
    a("")
    # violation: per pattern the largest cone violation max_j relu(-(2 D_i - I) x_j^T w_i), for W and Z
    header("violation", "X, GT, WT, ZT, out")
    a("        OW = out[t, 0]")
    a("        OZ = out[t, 1]")
    for k in ks:
        a(f"        W{k} = WT[{k}]")
        a(f"        Z{k} = ZT[{k}]")
    a("        for bj in range(t * per, min(nb, (t + 1) * per)):")
    a("            j = bj * R")
    for r in rs:
        for k in ks:
            a(f"            x{r}_{k} = X[j + {r}, {k}]")
    a("            for i in range(P):")
    ind = "                "
    a(f"{ind}vw = OW[i]")
    a(f"{ind}vz = OZ[i]")
    for r in rs:
        a(f"{ind}s{r} = " + " + ".join(f"x{r}_{k} * G{k}[i]" for k in ks))
        a(f"{ind}aw{r} = " + " + ".join(f"x{r}_{k} * W{k}[i]" for k in ks))
        a(f"{ind}az{r} = " + " + ".join(f"x{r}_{k} * Z{k}[i]" for k in ks))
        # violated: on the gate's side (s >= 0) a < 0, off it a > 0; the violation is |a| then
        a(f"{ind}vw = max(vw, -aw{r} if s{r} >= zero else aw{r})")
        a(f"{ind}vz = max(vz, -az{r} if s{r} >= zero else az{r})")
    a(f"{ind}OW[i] = vw")
    a(f"{ind}OZ[i] = vz")
    src = "\n".join(L)
    return src.replace("def fused_sq(X, GT, VT, y, out, yhat):", "def fused_sq(X, GT, VT, y, wgt, out, yhat):")


def _cache_dir() -> Any:
    import os
    from pathlib import Path

    if os.environ.get("CONVEXDUAL_CACHE", "").lower() in ("off", "0", "none"):
        return None
    root = Path(os.environ.get("CONVEXDUAL_CACHE") or Path.home() / ".cache" / "convexdual") / "kernels"
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / ".write-test"
        probe.write_text("ok")
        probe.unlink()
        return root
    except OSError:
        return None


@functools.lru_cache(maxsize=None)
def build_kernels(d: int, R: int = 4) -> dict[str, Callable[..., Any]]:
    """Compile (or load from numba's disk cache) the three kernels for patch dimension ``d``
    and row block ``R``.

    Kernel contracts (all arrays C-contiguous, one float dtype; ``n`` a multiple of ``R``,
    pad with zero rows otherwise):

    * ``forward(X (n,d), GT (d,P), VT (d,P), out (T,d,P), yhat (n,))``
    * ``adjoint(X, GT, r (n,), out (T,d,P))``: adds into ``out[t]`` per thread ``t``.
    * ``fused_sq(X, GT, VT, y (n,), wgt (n,), out, yhat)``: ``r = (yhat - y) * wgt``.
    * ``fused_hinge(X, GT, VT, WT, ZT, y, wgt, lam, out, outz (T,d,P), yhat, hval (T,))``: with
      ``V = W - Z`` and ``a = (2 D_i - I) X w_i``, the gradients in ``W`` (``out``) and ``Z``
      (``outz``) of ``1/2 ||wgt^(1/2) (yhat - y)||^2 + lam sum wgt relu(-a)`` (and the same for ``Z``),
      the hinge value summed into ``hval[t]`` per thread.
    * ``violation(X, GT, WT, ZT, out (T,2,P))``: ``out[t, 0, i] = max(out[t, 0, i], max_j
      -(2 D_i - I) x_j^T w_i)`` over the thread's rows (``out[t, 1]`` for ``Z``); start from zeros.
    """
    import hashlib
    import importlib.util as iu

    import numpy as np
    from numba import njit, prange

    src = _src(int(d), int(R))
    folder = _cache_dir()
    if folder is not None:
        header = "import numpy as np\nfrom numba import njit, prange\nCACHE = True\nR = %d\n" % int(R)
        body = header + src
        tag = hashlib.sha1(body.encode()).hexdigest()[:12]
        path = folder / f"fused_d{int(d)}_R{int(R)}_{tag}.py"
        if not path.is_file():
            from convexdual._io import atomic_write_text

            atomic_write_text(path, body)  # another process may be reading or writing it too
        name = f"convexdual_fused_d{int(d)}_R{int(R)}_{tag}"
        mod = sys.modules.get(name)
        if mod is None:
            spec = iu.spec_from_file_location(name, path)
            mod = iu.module_from_spec(spec)
            sys.modules[name] = mod  # numba's cache re-imports the module by name
            spec.loader.exec_module(mod)  # type: ignore[union-attr]
        return {"forward": mod.forward, "adjoint": mod.adjoint, "fused_sq": mod.fused_sq,
                "fused_hinge": mod.fused_hinge, "violation": mod.violation}
    ns: dict[str, Any] = {"np": np, "njit": njit, "prange": prange, "R": int(R), "CACHE": False}
    exec(compile(src, f"<convexdual fused kernels d={d} R={R}>", "exec"), ns)  # noqa: S102
    return {name: ns[name] for name in ("forward", "adjoint", "fused_sq", "fused_hinge", "violation")}
