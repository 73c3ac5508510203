"""Benchmark of the pattern operator and the torch solvers (issue 3).

Parts (``--part``):
* ``pass``: memory bandwidth (numpy/torch copy) and seconds per full fused pass
  (forward + adjoint) at the paper's MNIST scale (600 x 28x28, k = 3, P = 8,000;
  random data), for the numba and torch backends. The bound is one read of n*P float32.
* ``hinge``: one minibatch gradient of ``adam_hinge`` at the paper's size (25 images of
  28x28, k = 3, P = 8,000; random data), float64 and float32: autograd on dense ``rows x P``
  masks (the step before the fused kernel, written out here as the reference), the torch path
  of ``PatternOperator.hinge_gradient`` (chunked) and its numba kernel; and the cone
  violation of 16,000 dense groups over all 600 images, one group at a time (the engine's
  loop for sparse iterates) against one ``cone_violations`` pass. Each measurement runs in its
  own process, so its peak resident memory is its own. JSON + PNG.
* ``solvers``: on identical instances in one run (5 digits / P = 20 and 20 digits 8x8 /
  P = 100; k = 3, sigma 0.5, beta = 0.02 beta_max): plain Clarabel (CVXPY; its optimum is
  the reference), clarabel-ws, active_set, fista (gated relaxation: a lower-bound method),
  adam_hinge, primal Adam (``train_primal``, objective (2)), and pyscnn's augmented
  Lagrangian and R-FISTA when ``pyscnn`` is installed. Times to 1e-3 and 1e-6 relative
  suboptimality; JSON + PNG (see :mod:`bench_solvers`).

Usage: OPENBLAS_NUM_THREADS=1 python benchmarks/bench_first_order.py --part pass --rows-fraction 1
       OPENBLAS_NUM_THREADS=1 python benchmarks/bench_first_order.py --part hinge
       OPENBLAS_NUM_THREADS=1 python benchmarks/bench_first_order.py --part solvers
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).parent / "results"


def bandwidth() -> dict:
    a = np.ones(2**27)  # 1 GiB
    b = np.empty_like(a)
    best_copy = 0.0
    for _ in range(4):
        t = time.perf_counter(); np.copyto(b, a); dt = time.perf_counter() - t
        best_copy = max(best_copy, 2 * a.nbytes / dt / 1e9)
    ta = torch.from_numpy(a)
    best_read = 0.0
    for _ in range(4):
        t = time.perf_counter(); ta.sum(); dt = time.perf_counter() - t
        best_read = max(best_read, a.nbytes / dt / 1e9)
    return {"numpy_copy_GBps_read_plus_write": best_copy, "torch_sum_read_GBps": best_read}


def full_pass(frac: int, threads: int) -> dict:
    from convexdual.operators import PatternOperator

    N, H, P, k = 600 // frac, 28, 8000, 3
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, 1, H, H)).astype(np.float32)
    gates = rng.standard_normal((P, k * k))
    V = 0.01 * rng.standard_normal((P, k * k))
    y = rng.standard_normal(N * H * H)
    out = {"N": N, "scale_factor_to_600": frac, "P": P, "threads": threads}
    for backend in ("numba", "torch"):
        op = PatternOperator(x, k, gates, dtype=torch.float32, backend=backend, memory_budget_mb=256,
                             num_threads=threads if backend == "numba" else None)
        Vt = torch.as_tensor(V, dtype=torch.float32)
        rt = torch.as_tensor(y, dtype=torch.float32)
        calls = {"full_pass": lambda: op.gradient_sq(V, y),  # forward + adjoint, fused: one gradient
                 "forward": lambda: op.forward(Vt),          # one application of sum_i D_i X v_i
                 "adjoint": lambda: op.adjoint(rt)}          # one application of (X^T D_i r)_i
        for what, call in calls.items():
            call()  # compile / warm up
            times = []
            for _ in range(2):
                t = time.perf_counter(); call(); times.append(time.perf_counter() - t)
            out[f"{backend}_seconds_per_{what}_at_600_images"] = min(times) * frac
    return out


HINGE_METHODS = ("autograd", "torch", "numba")


def _hinge_case(method: str, dtype: str) -> dict:
    """One measurement (in a child process): seconds of one minibatch gradient and peak RSS."""
    import resource

    from convexdual.operators import PatternOperator

    torch.set_num_threads(1)
    dt = getattr(torch, dtype)
    rng = np.random.default_rng(0)
    N, H, P, b = 600, 28, 8000, 25
    x = rng.standard_normal((N, 1, H, H))
    gates = rng.standard_normal((P, 9))
    W, Z = 1e-2 * rng.standard_normal((P, 9)), 1e-2 * rng.standard_normal((P, 9))
    y = torch.as_tensor(rng.standard_normal(N * H * H), dtype=dt)
    images = list(range(b))
    out: dict = {"method": method, "dtype": dtype, "images": b, "P": P}
    if method == "violation_per_group":
        from convexdual.engine import PatternEngine

        eng = PatternEngine(x, 3, gates, backend="numba")
        eng.cone_violation(W[:1], Z[:1])  # warm up; then time 200 of the 16,000 groups and scale
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        t = time.perf_counter()
        for i in range(100):
            for V in (W, Z):
                eng.group_values(i, V[i]).min()
        sec = (time.perf_counter() - t) * P / 100
        out.update(seconds=sec, measured="200 of 16,000 groups, scaled")
    elif method == "violation_pass":
        op = PatternOperator(x, 3, gates, dtype=dt, backend="numba")
        op.cone_violations(W[:8].repeat(P // 8, 0), Z[:8].repeat(P // 8, 0))  # compile / warm up
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        t = time.perf_counter()
        op.cone_violations(W, Z)
        out.update(seconds=time.perf_counter() - t)
    else:
        op = PatternOperator(x, 3, gates, dtype=dt, backend="numba" if method == "numba" else "torch")
        Wt, Zt = torch.as_tensor(W, dtype=dt), torch.as_tensor(Z, dtype=dt)
        if method == "numba":
            op.hinge_gradient(Wt, Zt, y, 1.0, images[:1])  # compile / warm up
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        t = time.perf_counter()
        if method == "autograd":
            Wg, Zg = Wt.clone().requires_grad_(True), Zt.clone().requires_grad_(True)
            Xb = torch.cat([op.patches(i, i + 1) for i in images])
            M = (Xb @ op.gates.T >= 0).to(dt)
            S = 2 * M - 1
            XW, XZ = Xb @ Wg.T, Xb @ Zg.T
            r = ((XW - XZ) * M).sum(1) - y[:len(Xb)]
            (0.5 * (r * r).sum() + torch.relu(-S * XW).sum() + torch.relu(-S * XZ).sum()).backward()
        else:
            op.hinge_gradient(Wt, Zt, y, 1.0, images)
        out.update(seconds=time.perf_counter() - t)
    out.update(peak_rss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
               rss_before_gb=base)
    return out


def hinge_part() -> dict:
    import subprocess
    import sys

    rows = []
    cases = [(m, d) for d in ("float64", "float32") for m in HINGE_METHODS]
    cases += [("violation_per_group", "float64"), ("violation_pass", "float64")]
    for method, dtype in cases:
        cmd = [sys.executable, __file__, "--part", "hinge-case", "--method", method, "--dtype", dtype]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    by = {(r["method"], r["dtype"]): r for r in rows}
    ratios = {f"{d}_autograd_over_{m}": by[("autograd", d)]["seconds"] / by[(m, d)]["seconds"]
              for d in ("float64", "float32") for m in ("torch", "numba")}
    ratios["violation_per_group_over_pass"] = (by[("violation_per_group", "float64")]["seconds"]
                                               / by[("violation_pass", "float64")]["seconds"])
    return {"cases": rows, "ratios": ratios, "threads": 1,
            "note": "one minibatch of 25 images (19,600 rows) x 8,000 patterns; the violation over all "
                    "600 images (470,400 rows) for 16,000 groups. Random data; one thread; the machine may "
                    "be shared (ratios of one run are what to read)"}


def plot_hinge(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    rows = res["cases"]
    labels = [r["method"].replace("_", "\n") + "\n" + r["dtype"] for r in rows]
    xs = np.arange(len(rows))
    axes[0].bar(xs, [r["seconds"] for r in rows], color="C0")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("seconds (log)")
    axes[0].set_title("one adam_hinge minibatch gradient / one violation check")
    axes[1].bar(xs, [r["peak_rss_gb"] for r in rows], color="C1")
    axes[1].set_ylabel("peak resident memory (GB)")
    axes[1].set_title("peak memory of the measuring process")
    for ax in axes:
        ax.set_xticks(xs)
        ax.set_xticklabels(labels, fontsize=7)
    fig.tight_layout()
    from convexdual.plotting import save

    save(fig, path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=["pass", "solvers", "hinge", "hinge-case"], default="pass")
    ap.add_argument("--method", default="numba", help="(hinge-case) " + ", ".join(HINGE_METHODS)
                    + ", violation_per_group, violation_pass")
    ap.add_argument("--dtype", default="float64", help="(hinge-case) float64 or float32")
    ap.add_argument("--rows-fraction", type=int, default=1, help="run 600/F images and scale the time by F")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--adam-seconds", type=float, default=60.0, help="time budget of each Adam baseline (main instance)")
    ap.add_argument("--quick", action="store_true", help="small instance only (smoke run)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    OUT.mkdir(parents=True, exist_ok=True)
    if a.part == "hinge-case":
        print(json.dumps(_hinge_case(a.method, a.dtype)))
        return
    if a.part == "hinge":
        from convexdual._io import atomic_write_json

        res = hinge_part()
        atomic_write_json(OUT / "hinge_gradient.json", res, indent=2)
        plot_hinge(res, OUT / "hinge_gradient.png")
        print(json.dumps(res["ratios"], indent=2))
        return
    if a.part == "pass":
        bw = bandwidth()
        fp = full_pass(a.rows_fraction, a.threads)
        n_p = 600 * 784 * 8000
        bound = n_p * 4 / 1e9 / max(bw.values())
        res = {"bandwidth": bw, "pass": fp, "bound_seconds_one_read_nP_float32": bound,
               "ratio_numba_to_bound": fp["numba_seconds_per_full_pass_at_600_images"] / bound,
               "ratio_torch_to_bound": fp["torch_seconds_per_full_pass_at_600_images"] / bound,
               "note": "full_pass = one gradient (forward + adjoint, fused); forward / adjoint = one "
                       "application of the operator each; the bound is one read of n*P float32 values"}
        for b in ("numba", "torch"):
            for what in ("forward", "adjoint"):
                res[f"ratio_{b}_{what}_to_bound"] = fp[f"{b}_seconds_per_{what}_at_600_images"] / bound
        (OUT / "operator_pass.json").write_text(json.dumps(res, indent=2))
        print(json.dumps(res, indent=2))
    else:
        import sys

        sys.path.insert(0, str(Path(__file__).parent))
        from bench_solvers import run_solvers

        run_solvers(OUT, adam_seconds=a.adam_seconds, quick=a.quick)


if __name__ == "__main__":
    main()
