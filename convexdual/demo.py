"""``convexdual demo``: the main job on bundled data (sklearn's real 8x8 digits).

1. Train the primal net (2) with Adam (the usual way).
2. Solve the convex program (4) over sampled sign patterns plus the Adam net's own
   patterns (so the convex optimum is provably no worse than Adam), recover the CNN
   (eq. 5), and certify the duality gap.
3. Compare both on held-out digits; on a tiny crop, enumerate every sign pattern
   and certify *global* optimality of (2).
Writes report.json, summary.md and PNG figures into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["add_parser", "run_demo"]


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="the main job: solve, recover, certify and compare with Adam on bundled digits",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter, description=__doc__)
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="report folder")
    p.add_argument("--num-train", type=int, default=20)
    p.add_argument("--num-test", type=int, default=24)
    p.add_argument("--sigma", type=float, default=0.5, help="Gaussian noise level (normalised units)")
    p.add_argument("--patterns", type=int, default=100, help="sampled sign patterns")
    p.add_argument("--width", type=int, default=32, help="filters of the Adam-trained primal net")
    p.add_argument("--epochs", type=int, default=400)
    p.add_argument("--beta-fraction", type=float, default=0.02)
    p.add_argument("--solver", default="clarabel-ws",
                   help="exact solver for (4): clarabel-ws (working sets, fast), auto (MOSEK if licensed else Clarabel), ...")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="a smaller run (seconds) for tests")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads during the run (1 is fastest for these tiny convolutions)")
    p.set_defaults(func=lambda a: _with_threads(a.threads, run_demo,a.out, num_train=a.num_train, num_test=a.num_test, sigma=a.sigma,
                                            num_patterns=a.patterns, width=a.width, epochs=a.epochs,
                                            beta_fraction=a.beta_fraction, solver=a.solver, seed=a.seed,
                                            quick=a.quick)["exit_code"])


def _with_threads(n: int, fn, *args, **kwargs):
    """Run ``fn`` with ``n`` torch threads, restoring the caller's setting afterwards."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        return fn(*args, **kwargs)
    finally:
        torch.set_num_threads(old)


def _psnr(x: np.ndarray, ref: np.ndarray) -> float:
    from skimage.metrics import peak_signal_noise_ratio

    return float(peak_signal_noise_ratio(ref, x, data_range=float(ref.max() - ref.min())))


def _say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def run_demo(out: Path, *, num_train: int = 20, num_test: int = 24, sigma: float = 0.5, num_patterns: int = 100,
             width: int = 32, epochs: int = 400, beta_fraction: float = 0.02, solver: str = "clarabel-ws", seed: int = 0,
             quick: bool = False) -> dict[str, Any]:
    import convexdual as cd
    from convexdual.data import add_noise, load_digits_dataset
    from convexdual.train import train_primal

    if quick:
        num_train, num_test, num_patterns, width, epochs = 4, 4, 12, 8, 150
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    split = load_digits_dataset(num_train, num_test, seed=seed)
    clean, clean_test = split.train, split.test
    noisy = add_noise(clean, "gaussian", sigma, seed=seed + 1)
    noisy_test = add_noise(clean_test, "gaussian", sigma, seed=seed + 2)
    k = 3
    sampled = cd.sample_patterns(noisy, k, num_patterns, seed=seed)
    beta = beta_fraction * cd.beta_max(noisy, clean, k, sampled)
    _say(f"{num_train} training digits (8x8, sigma={sigma}), n={noisy.size} patch rows, beta={beta:.4g}")

    # 1. primal Adam
    _say(f"training the primal net with Adam: {width} filters, {epochs} epochs")
    adam = train_primal(noisy, clean, width=width, kernel_size=k, beta=beta, epochs=epochs,
                        batch_size=max(1, min(25, num_train // 3)), lr=5e-3, seed=seed,
                        eval_every=max(1, epochs // 100), test=(noisy_test, clean_test))
    _say(f"  Adam objective (2): {adam.objective:.6g}")

    # 2. convex program over sampled + Adam's own patterns
    U_adam, _ = adam.network.filters()
    own = cd.patterns_from_gates(noisy, k, U_adam, source="adam-net")
    patterns = sampled.union(own)
    problem = cd.build_problem(noisy, clean, k, beta, patterns=patterns)
    _say(f"solving (4): P={problem.P} patterns ({len(sampled)} sampled + Adam's own), solver={solver}")
    result = cd.solve(problem, solver=solver)
    print(result.summary())
    cert = result.certificate

    # 3. held-out comparison
    den_adam = adam.network.predict(noisy_test)
    den_cvx = result.network.predict(noisy_test) if result.network is not None else np.full_like(noisy_test, np.nan)
    test = {
        "mse_noisy": float(np.mean((noisy_test - clean_test) ** 2)),
        "mse_adam": float(np.mean((den_adam - clean_test) ** 2)),
        "mse_convex": float(np.mean((den_cvx - clean_test) ** 2)),
        "psnr_noisy": _psnr(noisy_test, clean_test),
        "psnr_adam": _psnr(den_adam, clean_test),
        "psnr_convex": _psnr(den_cvx, clean_test),
    }
    _say("test PSNR [dB]: noisy {psnr_noisy:.2f}, Adam {psnr_adam:.2f}, convex {psnr_convex:.2f}".format(**test))

    # 4. exact enumeration on a tiny crop: certified *global* optimum of (2)
    exact = _exact_part(noisy[:1, 2:5, 2:5], clean[:1, 2:5, 2:5], k, seed, quick)

    report = {
        "data": {"source": "sklearn.datasets.load_digits", "num_train": num_train, "num_test": num_test,
                 "sigma": sigma, "normalisation": {"mean": split.mean, "std": split.std}},
        "problem": problem.describe(),
        "beta": beta,
        "adam": {"width": width, "epochs": adam.epochs, "objective": adam.objective,
                 "history": list(adam.history)},
        "convex": result.to_dict(),
        "comparison": {
            "convex_minus_adam_objective": result.objective - adam.objective,
            "relative": (result.objective - adam.objective) / abs(adam.objective),
            "note": "S contains the Adam net's own patterns, so the optimum of (4) over S is <= Adam's objective",
        },
        "test": test,
        "exact_tiny_crop": exact,
        "seconds": time.perf_counter() - t_start,
    }
    ok = (result.status is cd.Status.OPTIMAL and cert is not None and cert.ok and exact["certificate"]["ok"])
    report["exit_code"] = 0 if ok else 1
    # artefacts a user can take further: `convexdual certify --net ... --data ... --beta ...`
    np.savez(out / "train.npz", noisy=noisy, clean=clean)
    adam.network.save(out / "adam_net.pt", metadata={"beta": beta, "objective": adam.objective})
    if result.network is not None:
        result.network.save(out / "convex_net.pt", metadata={"beta": beta, "objective": result.objective})
    report["certify_command"] = (f"convexdual certify --net {out}/adam_net.pt --data {out}/train.npz "
                                 f"--beta {beta!r} --out {out}/certificate.json")
    (out / "report.json").write_text(json.dumps(report, indent=2, default=float))
    _figures(out, clean_test, noisy_test, den_adam, den_cvx, adam, result, cert, problem)
    _summary(out, report)
    _say(f"done in {report['seconds']:.1f}s; report in {out}/ (report.json, summary.md, *.png)")
    return report


def _exact_part(noisy: np.ndarray, clean: np.ndarray, k: int, seed: int, quick: bool) -> dict[str, Any]:
    import convexdual as cd
    from convexdual.train import train_primal

    pats = cd.enumerate_patterns(noisy, k)
    beta = 0.05 * cd.beta_max(noisy, clean, k, pats)
    prob = cd.build_problem(noisy, clean, k, beta, patterns=pats)
    _say(f"tiny crop 3x3: all {prob.P} sign patterns enumerated; solving the exact program")
    res = cd.solve(prob, solver="clarabel-ws")
    starts = []
    for s in range(2 if quick else 4):
        r = train_primal(noisy, clean, width=16, kernel_size=k, beta=beta, epochs=300 if quick else 1000,
                         batch_size=1, lr=1e-2, seed=seed + 100 + s)
        starts.append(r.objective)
    _say(f"  global optimum {res.objective:.8g} (certified gap {res.certificate.relative_gap:.1e}); "
         f"Adam from {len(starts)} inits: min {min(starts):.8g}")
    return {"P": prob.P, "beta": beta, "objective": res.objective, "status": res.status.value,
            "certificate": res.certificate.to_dict(), "adam_objectives": starts,
            "adam_min_minus_optimum_relative": (min(starts) - res.objective) / abs(res.objective)}


def _figures(out: Path, clean, noisy, den_adam, den_cvx, adam, result, cert, problem) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from convexdual.interpret import frequency_responses

    m = min(6, clean.shape[0])
    fig, axes = plt.subplots(4, m, figsize=(1.6 * m, 6.6))
    rows = [("clean", clean), ("noisy", noisy), ("Adam", den_adam), ("convex", den_cvx)]
    lo, hi = float(clean.min()), float(clean.max())
    for r, (name, imgs) in enumerate(rows):
        for c in range(m):
            ax = axes[r, c] if m > 1 else axes[r]
            ax.imshow(imgs[c], cmap="gray", vmin=lo, vmax=hi)
            ax.set_xticks([]), ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name)
    fig.suptitle("held-out digits")
    fig.tight_layout()
    fig.savefig(out / "reconstructions.png", dpi=120)
    plt.close(fig)

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ep = np.array([h["epoch"] for h in adam.history])
    obj = np.array([h["objective"] for h in adam.history])
    ax.plot(ep, obj, label="Adam, objective (2)")
    ax.axhline(result.objective, color="C1", ls="--", label="convex optimum (4) over S")
    if cert is not None:
        ax.axhline(cert.dual_bound, color="C2", ls=":", label="certified lower bound over S")
    ax.set_yscale("log"), ax.set_xlabel("epoch"), ax.set_ylabel("objective (sum)")
    ax.legend()
    excess = (obj - result.objective) / abs(result.objective)
    ax2.semilogy(ep, np.maximum(excess, 1e-12), color="C0")
    ax2.set_xlabel("epoch"), ax2.set_ylabel("(Adam - convex optimum) / convex optimum")
    ax2.set_title("Adam's excess over the certified convex optimum", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "objective.png", dpi=120)
    plt.close(fig)

    if result.network is not None and result.network.width > 0:
        U, v = result.network.filters()
        order = np.argsort(-np.abs(v))[:8]
        resp = frequency_responses(U[order] * np.abs(v[order])[:, None], problem.in_channels, problem.kernel_size)
        fig, axes = plt.subplots(2, len(order), figsize=(1.5 * len(order), 3.2))
        axes = np.atleast_2d(axes.reshape(2, -1))
        for j, idx in enumerate(order):
            a = float(np.abs(U[idx]).max()) or 1.0
            axes[0, j].imshow(U[idx].reshape(problem.kernel_size, problem.kernel_size), cmap="RdBu_r", vmin=-a, vmax=a)
            axes[0, j].set_title(f"v={v[idx]:+.2f}", fontsize=7)
            axes[1, j].imshow(resp[j, 0], cmap="viridis")
            for a in axes[:, j]:
                a.set_xticks([]), a.set_yticks([])
        axes[0, 0].set_ylabel("filter u")
        axes[1, 0].set_ylabel("|DFT|")
        fig.tight_layout()
        fig.savefig(out / "filters.png", dpi=120)
        plt.close(fig)


def _summary(out: Path, r: dict[str, Any]) -> None:
    c, t, e = r["convex"], r["test"], r["exact_tiny_crop"]
    cert = c["certificate"] or {}
    lines = [
        "# convexdual demo",
        "",
        f"Data: {r['data']['num_train']} training / {r['data']['num_test']} test digits (sklearn, 8x8), "
        f"Gaussian noise sigma={r['data']['sigma']}; k=3, beta={r['beta']:.4g}, P={r['problem']['P']} patterns.",
        "",
        "| | objective (2)/(4) | test PSNR [dB] | test MSE |",
        "|---|---|---|---|",
        f"| noisy input | | {t['psnr_noisy']:.2f} | {t['mse_noisy']:.4f} |",
        f"| Adam ({r['adam']['width']} filters) | {r['adam']['objective']:.6g} | {t['psnr_adam']:.2f} | {t['mse_adam']:.4f} |",
        f"| convex ({c['num_neurons']} neurons, {c['solver']}) | {c['objective']:.6g} | {t['psnr_convex']:.2f} | {t['mse_convex']:.4f} |",
        "",
        f"Certificate over S: relative gap {cert.get('relative_gap', float('nan')):.2e}, "
        f"cone violation {cert.get('max_violation', float('nan')):.2e}, recovered-net objective (2) "
        f"{cert.get('network_objective', float('nan')):.10g}; ok = {cert.get('ok')}.",
        "",
        f"Exact enumeration on a 3x3 crop: {e['P']} patterns, global optimum {e['objective']:.8g} "
        f"(relative gap {e['certificate']['relative_gap']:.1e}); Adam from {len(e['adam_objectives'])} "
        f"initialisations ended at best {min(e['adam_objectives']):.8g} "
        f"({e['adam_min_minus_optimum_relative']:+.2e} relative to the optimum).",
        "",
        f"Total time {r['seconds']:.1f} s.",
        "",
        "Is the Adam net globally optimal, and if not by how much can it improve? Ask:",
        "",
        f"    {r['certify_command']}",
    ]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
