"""Benchmark of the certified descent-neuron oracle (convexdual.global_oracle, issue 16).

Three parts (``--part``), each writing its own JSON + PNG under ``benchmarks/results/``;
every run has one torch thread (``--threads``).  The method before v2 (commit 34d7b50) is
loaded from git (``git show``) and run on the same instance with the same budget where the
part says so ("old"), so old/new ratios come from one run on the same (shared) machine.

``digits`` (``global_oracle.json``/``.png``): sklearn 8x8 digits, normalised by the global
mean/std, Gaussian noise sigma 0.5, kernel 3 (d = 9), patch rows
``X = patch_matrix(noisy (N,1,8,8), 3)`` (n = 64 N), targets the clean centre pixels.
Residual: the least-squares residual ``r = y - X w_ls`` of the best linear filter;
``beta = 0.02 * max over 256 Gaussian gates g of ||X^T D(g) y||``.  Per N:
``decide`` (beta given: is there a descent neuron?), ``bracket`` (no beta; certified
``[lower, upper]`` on ``M*`` against time, new and old) and ``decide_scaled`` (the residual
scaled so that the local-search value is ``beta / 2``: can ``M* <= beta`` be *proved*? new
and old).

``certify`` (``global_oracle_certify.json``/``.png``): the issue's target instance, 20
digits of 8x8 with the demo's settings (``load_digits_dataset(20, 24, seed=0)``, noise 0.5
seed 1, 100 sampled patterns seed 0, ``beta = 0.02 beta_max``), solved by column generation
(``generate_patterns``, clarabel-ws, descent-search pricing) to its convex optimum; the
oracle decides ``max |r^T relu(Xu)| <= beta (1 + 1e-6)`` (``eps = 2.5e-7``, as
``generate_patterns(oracle="global")`` calls it) on the optimal residual.  Reports the
certified upper bound against time and the certified global gap of (2) it gives
(``engine.dual_bound(..., max_constraint=upper)``, as ``generate_patterns`` does).  The
instance is cached in ``global_oracle_certify_N20.npz``.

``mnist`` (``global_oracle_mnist.json``/``.png``): real MNIST 28x28 (bundled mnist-5k,
``load_bundled_mnist(N, seed=0)``), noise 0.5, k = 3, n = 784 N rows, least-squares
residual; bracket mode (no beta): the certified relative gap ``(upper - lower) / upper`` on
``M*`` at 600 s and 1800 s (when the budget reaches them), nodes and the time split;
``--mnist-ref-budgets`` also runs v3 (``corner_iters=0``) on the same problem in the same
process.

In ``certify``, "v3" is the same oracle with ``corner_iters=0`` (the corner bound with the
box centre's lambdas, before the Frank-Wolfe refinement) and "v2" with ``corners=False``.

Usage: ``python benchmarks/bench_global_oracle.py --part digits|certify|mnist [...]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from convexdual.global_oracle import global_max_correlation
from convexdual.patches import patch_matrix

OUT = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]
V1_COMMIT = "34d7b50"


def load_v1():
    """The oracle as of commit 34d7b50 (before v2), from git, as a module."""
    src = subprocess.run(["git", "show", f"{V1_COMMIT}:convexdual/global_oracle.py"], cwd=ROOT,
                         check=True, capture_output=True, text=True).stdout
    name = "convexdual._global_oracle_v1"
    spec = importlib.util.spec_from_loader(name, loader=None)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    exec(compile(src, f"{V1_COMMIT}:convexdual/global_oracle.py", "exec"), mod.__dict__)
    return mod

def make_problem(N, seed=0):
    from sklearn.datasets import load_digits

    dig = load_digits().images.astype(np.float64)
    rng = np.random.default_rng(seed)
    imgs = dig[rng.choice(len(dig), N, replace=False)]
    mu, sd = dig.mean(), dig.std()
    clean = (imgs - mu) / sd
    noisy = clean + 0.5 * rng.standard_normal(clean.shape)
    X = patch_matrix(noisy[:, None], 3)
    y = clean.reshape(-1)
    w, *_ = np.linalg.lstsq(X, y, rcond=None)
    r = y - X @ w
    G = rng.standard_normal((9, 256))
    beta = 0.02 * max(float(np.linalg.norm(X.T @ (y * (X @ G[:, k] >= 0)))) for k in range(256))
    return X, y, r, beta


def gap_at(history, t):
    """Certified relative gap (upper - lower) / upper at time t (last sample <= t)."""
    rows = [h for h in history if h[0] <= t]
    if not rows:
        return None
    _, nodes, up, lo = rows[-1]
    if not np.isfinite(up):
        return None
    return {"seconds": t, "nodes": int(nodes), "upper": up, "lower": lo,
            "rel_gap": (up - lo) / up if up > 0 else 0.0}


def summary(res):
    st = dict(res.stats)
    tot = st.get("seconds_total", res.seconds)
    return {
        "status": res.status, "verdict": res.verdict, "upper": res.upper, "lower": res.lower,
        "rel_gap": res.gap, "nodes": res.nodes, "seconds": res.seconds,
        "nodes_per_second": res.nodes / max(res.seconds, 1e-9),
        "open_regions": res.open_regions, "margin": res.margin, "beta": res.beta,
        "time_split": {k: v for k, v in st.items() if k.startswith("seconds_")},
        "time_fraction_bound": st.get("seconds_bound", 0.0) / max(tot, 1e-9),
        "rows": {"in": st.get("rows_in"), "after_merge": st.get("rows_merged")},
    }


def upper_at(history, t):
    """(upper, lower, nodes) of the last history sample at or before t (None if none)."""
    rows = [h for h in history if h[0] <= t]
    if not rows or not np.isfinite(rows[-1][2]):
        return None
    return {"seconds": t, "nodes": int(rows[-1][1]), "upper": rows[-1][2], "lower": rows[-1][3]}


def settings(args, **extra):
    import torch

    dev = getattr(args, "device", "cpu")
    if dev.startswith("cuda") and torch.cuda.is_available():
        extra = {"gpu": torch.cuda.get_device_name(torch.device(dev)), **extra}
    return {"eps": 1e-6, "torch_threads": args.threads, "device": dev,
            "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "loadavg_start": os.getloadavg(), "old_method": f"git {V1_COMMIT}", **extra}


def write(name, out):
    OUT.mkdir(parents=True, exist_ok=True)
    out["settings"]["loadavg_now"] = os.getloadavg()
    (OUT / name).write_text(json.dumps(out, indent=2, default=float))


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


# ----------------------------------------------------------------------------- digits


def part_digits(args, v1):
    sizes = [int(s) for s in args.sizes.split(",")]
    out = {"settings": settings(args, data="sklearn digits 8x8, global mean/std, noise 0.5, k=3 (d=9)",
                                residual="least-squares residual y - X w_ls",
                                beta="0.02 * max_{256 gates} ||X^T D(g) y||",
                                long_s=args.long, short_s=args.short), "runs": {}}
    curves = {}
    for N in sizes:
        X, y, r, beta = make_problem(N)
        long_s = args.long
        entry = {"n": int(X.shape[0]), "d": int(X.shape[1]), "beta": beta,
                 "r_norm": float(np.linalg.norm(r)), "long_s": long_s}
        t = time.perf_counter()
        dec = global_max_correlation(X, r, beta=beta, time_limit=args.short, num_threads=args.threads)
        entry["decide"] = summary(dec)
        print(f"N={N} n={X.shape[0]} decide: {dec.status} lower={dec.lower:.4g} beta={beta:.4g} "
              f"({dec.seconds:.2f}s, {dec.nodes} nodes)", flush=True)
        for tag, mod in (("new", None), ("old", v1)):
            G = global_max_correlation if mod is None else mod.global_max_correlation
            br = G(X, r, time_limit=long_s, num_threads=args.threads)
            e = summary(br)
            e["at_short"] = gap_at(br.history, args.short)
            e["at_long"] = gap_at(br.history, long_s + 10)
            e["history"] = [list(h) for h in br.history[:: max(1, len(br.history) // 400)]]
            entry[f"bracket_{tag}"] = e
            curves[(N, tag)] = np.asarray(br.history, dtype=float)
            print(f"N={N} bracket {tag}: {br.status} [{br.lower:.6g}, {br.upper:.6g}] gap={br.gap:.3g} "
                  f"nodes={br.nodes} ({br.nodes / br.seconds:.0f}/s) open={br.open_regions} "
                  f"s={br.seconds:.1f}", flush=True)
            write("global_oracle.json", {**out, "runs": {**out["runs"], str(N): entry}})
        ref = max(entry["bracket_new"]["lower"], entry["bracket_old"]["lower"])
        scale = 0.5 * beta / ref
        for tag, mod in (("new", None), ("old", v1)):
            G = global_max_correlation if mod is None else mod.global_max_correlation
            sc = G(X, scale * r, beta=beta, time_limit=args.long, num_threads=args.threads)
            e = summary(sc)
            e["scale"] = scale
            e["attained_over_beta"] = 0.5
            entry[f"decide_scaled_{tag}"] = e
            print(f"N={N} scaled {tag}: {sc.status} verdict={sc.verdict} upper/beta={sc.upper / beta:.4g} "
                  f"({sc.seconds:.1f}s, {sc.nodes} nodes)", flush=True)
        bn, bo = entry["bracket_new"], entry["bracket_old"]
        entry["ratios_new_over_old"] = {
            "bracket_rel_gap_at_short": (bn["at_short"]["rel_gap"] / bo["at_short"]["rel_gap"]
                                         if bn["at_short"] and bo["at_short"] and bo["at_short"]["rel_gap"] > 0
                                         else None),
            "bracket_rel_gap_at_end": bn["rel_gap"] / bo["rel_gap"] if bo["rel_gap"] > 0 else None,
            "bracket_nodes_per_second": bn["nodes_per_second"] / bo["nodes_per_second"],
            "scaled_seconds": entry["decide_scaled_new"]["seconds"] / entry["decide_scaled_old"]["seconds"],
            "scaled_nodes": entry["decide_scaled_new"]["nodes"] / max(1, entry["decide_scaled_old"]["nodes"]),
        }
        entry["wall_seconds"] = time.perf_counter() - t
        out["runs"][str(N)] = entry
        write("global_oracle.json", out)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for k, N in enumerate(sizes):
        for tag, ls in (("new", "-"), ("old", ":")):
            h = curves[(N, tag)]
            ok = np.isfinite(h[:, 2]) & (h[:, 2] > 0)
            gap = (h[ok, 2] - h[ok, 3]) / h[ok, 2]
            ax.plot(h[ok, 0], np.maximum(gap, 1e-9), color=f"C{k}", ls=ls, label=f"N={N} (n={64 * N}) {tag}")
    ax.set_xlabel(f"seconds (wall clock, {args.threads} torch thread, shared machine)")
    ax.set_ylabel("certified relative gap (upper - lower) / upper on M*")
    ax.set_yscale("log")
    ax.set_title("Global oracle, 8x8 digits, LS residual: new (v2) vs old (34d7b50)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / "global_oracle.png", dpi=120)


# ----------------------------------------------------------------------------- certify


def certify_instance(path):
    """The demo-settings N=20 problem solved by column generation (cached at ``path``)."""
    import convexdual as cd
    from convexdual.data import add_noise, load_digits_dataset
    from convexdual.pattern_generation import GenerationOptions, generate_patterns

    split = load_digits_dataset(20, 24, seed=0)
    clean = split.train
    noisy = add_noise(clean, "gaussian", 0.5, seed=1)
    sampled = cd.sample_patterns(noisy, 3, 100, seed=0)
    beta = 0.02 * cd.beta_max(noisy, clean, 3, sampled)
    if path.is_file():
        z = np.load(path)
        gates = z["gates"]
    else:
        prob = cd.build_problem(noisy, clean, 3, beta, patterns=sampled)
        g = generate_patterns(prob, solver="clarabel-ws", options=GenerationOptions(oracle="search"))
        print(g.summary(), flush=True)
        gates = g.patterns.gates
    prob = cd.build_problem(noisy, clean, 3, beta, patterns=cd.patterns_from_gates(noisy, 3, gates))
    res = cd.solve(prob, solver="clarabel-ws")
    r = prob.loss.dual_candidate(prob.predict(res.W, res.Z) - prob.y)
    if not path.is_file():
        np.savez(path, gates=gates)
    X = patch_matrix(prob.inputs, 3)
    return prob, res, X, r, beta


def part_certify(args, v1):
    import convexdual as cd  # noqa: F401

    prob, res, X, r, beta = certify_instance(OUT / "global_oracle_certify_N20.npz")
    p = float(res.objective)
    margin, o_eps = 1e-6, 2.5e-7

    def global_gap(upper):
        g = prob.engine.dual_bound(prob.loss, prob.y, prob.beta, r, max_constraint=max(float(upper), 0.0))
        return {"upper_over_beta": upper / beta, "global_lower_bound": float(g.value),
                "global_gap": p - float(g.value), "global_gap_relative": (p - float(g.value)) / abs(p)}

    out = {"settings": settings(args, data="demo settings: 20 sklearn digits 8x8 (seed 0), noise 0.5 "
                                "(seed 1), k=3, beta = 0.02 beta_max over 100 sampled patterns",
                                convex_optimum="generate_patterns (clarabel-ws, descent-search pricing)",
                                oracle_call="beta*(1+1e-6), eps=2.5e-7 (as generate_patterns(oracle='global'))",
                                budget_new_s=args.long20, budget_v3_s=args.v3_20, budget_v2_s=args.v2_20,
                                max_open=args.max_open,
                                budget_old_s=args.old20,
                                budget_new_cpu_s=args.cpu20, batch_new=args.batch, budget_seeded_s=args.seeded20),
           "n": int(X.shape[0]), "P": int(prob.P), "beta": beta, "objective": p,
           "status": res.status.value, "runs": {}}
    curves = {}
    name = args.certify_out
    seeds = np.concatenate([np.asarray(res.W), np.asarray(res.Z)])
    for tag, mod, budget, kw in (("seeded", None, args.seeded20, {"seeds": seeds}),
                                 ("new", None, args.long20, {"device": args.device, "batch": args.batch}),
                                 ("new_cpu", None, args.cpu20, {"device": "cpu"}),
                                 ("v3", None, args.v3_20, {"corner_iters": 0}),
                                 ("v2", None, args.v2_20, {"corners": False}),
                                 ("old", v1, args.old20, {})):
        if budget <= 0:
            continue
        G = global_max_correlation if mod is None else mod.global_max_correlation
        if mod is None:
            kw = {**kw, "max_open": args.max_open}
        o = G(X, r, beta=beta * (1 + margin), eps=o_eps, time_limit=budget, num_threads=args.threads, **kw)
        e = summary(o)
        e["history"] = [list(h) for h in o.history[:: max(1, len(o.history) // 400)]]
        e["checkpoints"] = {}
        for t in (60, 120, 300, 600, 1800):
            if t <= budget + 1:
                a = upper_at(o.history, t)
                if a is not None:
                    e["checkpoints"][str(t)] = {**a, **global_gap(a["upper"])}
        e["final"] = global_gap(o.upper) if np.isfinite(o.upper) else None
        if o.verdict == "descent":
            # independent re-evaluation of the descent neuron on the explicit patch matrix
            u = np.asarray(o.argmax, dtype=np.float64)
            f = float(o.sign) * float(np.asarray(r).ravel() @ np.maximum(np.asarray(X) @ (u / np.linalg.norm(u)), 0.0))
            e["descent"] = {"f_over_beta": f / beta, "oracle_lower_over_beta": o.lower / beta,
                            "threshold_over_beta": (1 + margin), "sign": int(o.sign), "u": u.tolist()}
        out["runs"][tag] = e
        curves[tag] = np.asarray(o.history, dtype=float)
        print(f"certify N=20 {tag}: {o.status} verdict={o.verdict} upper/beta={o.upper / beta:.4f} "
              f"lower/beta={o.lower / beta:.6f} nodes={o.nodes} ({o.nodes / o.seconds:.0f}/s) "
              + (f"global gap {e['final']['global_gap_relative']:.3g} rel" if e["final"] else ""), flush=True)
        write(f"{name}.json", out)
    for ref in ("old", "v2", "v3", "new_cpu"):
        if "new" in out["runs"] and ref in out["runs"]:
            ratios = {}
            for t, a in out["runs"][ref]["checkpoints"].items():
                b = out["runs"]["new"]["checkpoints"].get(t)
                if b:
                    ratios[t] = {f"upper_excess_new_over_{ref}": (b["upper_over_beta"] - 1) / (a["upper_over_beta"] - 1),
                                 f"nodes_new_over_{ref}": b["nodes"] / max(1, a["nodes"]),
                                 f"global_gap_new_over_{ref}": b["global_gap"] / a["global_gap"]}
            out[f"ratios_at_same_time_vs_{ref}"] = ratios
            write(f"{name}.json", out)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    for tag, ls, col in (("new", "-", "C0"), ("new_cpu", "-", "C1"), ("v3", "-.", "C0"), ("v2", "--", "C0"),
                         ("old", ":", "C0")):
        if tag in curves:
            h = curves[tag]
            ok = np.isfinite(h[:, 2])
            where = f", {args.device}" if tag == "new" and args.device != "cpu" else ""
            ax.plot(h[ok, 0], h[ok, 2] / beta, col, ls=ls, label=f"certified upper / beta ({tag}{where})")
    ax.axhline(1.0, color="k", lw=0.8, label="beta (proof needs upper <= beta (1+1e-6))")
    ax.set_xlabel(f"seconds (wall clock, {args.threads} torch thread, shared machine)")
    ax.set_ylabel("max_u |r^T relu(X u)| / beta")
    ax.set_yscale("log")
    ax.set_title("Certify the column-generation optimum, 20 digits 8x8 (n=1280): new vs v3 / v2 / old", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / f"{name}.png", dpi=120)


# ----------------------------------------------------------------------------- mnist


def mnist_problem(N, seed=0):
    from convexdual.data.mnist import load_bundled_mnist

    split = load_bundled_mnist(N, 10, seed=seed)
    rng = np.random.default_rng(seed)
    clean = split.train
    noisy = clean + 0.5 * rng.standard_normal(clean.shape)
    X = patch_matrix(noisy[:, None], 3)
    y = clean.reshape(-1)
    w, *_ = np.linalg.lstsq(X, y, rcond=None)
    return X, y - X @ w


def part_mnist(args, v1):
    sizes = [int(s) for s in args.mnist_sizes.split(",")]
    budgets = [float(b) for b in args.mnist_budgets.split(",")]
    out = {"settings": settings(args, data="bundled MNIST 28x28 (mnist-5k), train mean/std, noise 0.5, k=3",
                                residual="least-squares residual y - X w_ls", mode="bracket (no beta)",
                                budgets_s=budgets), "runs": {}}
    curves = {}
    name = args.mnist_out or "global_oracle_mnist"
    refs = [float(b) for b in args.mnist_ref_budgets.split(",")] if args.mnist_ref_budgets else [0.0] * len(sizes)
    for N, budget, ref_budget in zip(sizes, budgets, refs):
        X, r = mnist_problem(N)
        for tag, b, kw in (("new", budget, {"device": args.device}), ("v3", ref_budget, {"corner_iters": 0})):
            if b <= 0:
                continue
            o = global_max_correlation(X, r, time_limit=b, num_threads=args.threads, **kw)
            e = summary(o)
            e["n"] = int(X.shape[0])
            e["batch"] = o.stats.get("batch")
            e["at_600"] = gap_at(o.history, 600) if b >= 600 else None
            e["at_1800"] = gap_at(o.history, 1800) if b >= 1800 else "not run"
            e["history"] = [list(h) for h in o.history[:: max(1, len(o.history) // 400)]]
            key = str(N) if tag == "new" else f"{N}_v3"
            out["runs"][key] = e
            if tag == "new":
                curves[N] = np.asarray(o.history, dtype=float)
            else:
                new = out["runs"][str(N)]
                out["runs"][key]["ratios_new_over_v3"] = {
                    "rel_gap_at_end": new["rel_gap"] / e["rel_gap"] if e["rel_gap"] > 0 else None,
                    "nodes": new["nodes"] / max(1, e["nodes"])}
            print(f"mnist N={N} n={X.shape[0]} {tag}: {o.status} [{o.lower:.6g}, {o.upper:.6g}] gap={o.gap:.3g} "
                  f"nodes={o.nodes} ({o.nodes / o.seconds:.1f}/s) batch={o.stats.get('batch')} "
                  f"split={ {k: round(v, 1) for k, v in o.stats.items() if k.startswith('seconds_')} }", flush=True)
            write(f"{name}.json", out)
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    for k, (N, h) in enumerate(curves.items()):
        ok = np.isfinite(h[:, 2]) & (h[:, 2] > 0)
        ax.plot(h[ok, 0], (h[ok, 2] - h[ok, 3]) / h[ok, 2], f"C{k}", label=f"N={N} (n={784 * N})")
    ax.set_xlabel(f"seconds (wall clock, {args.threads} torch thread, shared machine)")
    ax.set_ylabel("certified relative gap (upper - lower) / upper on M*")
    ax.set_title("Global oracle on real MNIST 28x28 (k=3, LS residual)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / f"{name}.png", dpi=120)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=("digits", "certify", "mnist"), default="digits")
    ap.add_argument("--long", type=float, default=120.0, help="digits: bracket / scaled budget")
    ap.add_argument("--long20", type=float, default=600.0, help="certify: budget of the new method")
    ap.add_argument("--old20", type=float, default=120.0, help="certify: budget of the old method")
    ap.add_argument("--max-open", type=int, default=12_000_000,
                    help="certify: open regions allowed (new and v2; ~190 bytes each)")
    ap.add_argument("--v2-20", type=float, default=120.0,
                    help="certify: budget of v2 (the same oracle without the corner bound)")
    ap.add_argument("--short", type=float, default=60.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sizes", type=str, default="1,5,20")
    ap.add_argument("--mnist-sizes", type=str, default="50,150,600")
    ap.add_argument("--mnist-budgets", type=str, default="600,600,600")
    ap.add_argument("--mnist-ref-budgets", type=str, default=None,
                    help="mnist: budgets of the v3 reference (corner_iters=0) per size, same process; 0 skips")
    ap.add_argument("--device", type=str, default="cpu", help="certify, mnist: torch device of the new method's runs")
    ap.add_argument("--seeded20", type=float, default=0.0,
                    help="certify: budget of a run seeded with the optimum's neurons (as certify / generate_patterns)")
    ap.add_argument("--batch", type=int, default=None, help="certify: regions per step of the new method's run (default: auto)")
    ap.add_argument("--cpu20", type=float, default=0.0,
                    help="certify: budget of the new method on the CPU as a same-run reference (with --device cuda)")
    ap.add_argument("--certify-out", type=str, default="global_oracle_certify", help="certify: result name")
    ap.add_argument("--v3-20", type=float, default=120.0,
                    help="certify: budget of v3 (corner bound with the box centre's lambdas, corner_iters=0)")
    ap.add_argument("--mnist-out", type=str, default=None,
                    help="mnist: name of the JSON/PNG written to benchmarks/results (default global_oracle_mnist); "
                         "separate names let sizes run as separate processes")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    v1 = load_v1()
    {"digits": part_digits, "certify": part_certify, "mnist": part_mnist}[args.part](args, v1)


if __name__ == "__main__":
    main()
