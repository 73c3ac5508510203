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
import time
from pathlib import Path
from typing import Any

import numpy as np

from convexdual._io import atomic_write_json, atomic_write_text

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
    """Run ``fn`` with ``n`` (at least 1) torch threads, restoring the caller's setting afterwards."""
    from convexdual._threads import torch_threads

    with torch_threads(max(1, int(n))):
        return fn(*args, **kwargs)


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
        "psnr_data_range": float(clean_test.max() - clean_test.min()),
        "units": ("MSE and pixel values in normalised units (digits standardised by the training pixels' "
                  "mean and std); PSNR in dB with data range = max - min of the clean test digits "
                  "(normalised units)"),
    }
    _say("test PSNR [dB]: noisy {psnr_noisy:.2f}, Adam {psnr_adam:.2f}, convex {psnr_convex:.2f}".format(**test))

    # 4. exact enumeration on a tiny crop: certified *global* optimum of (2)
    exact = _exact_part(noisy[:1, 2:5, 2:5], clean[:1, 2:5, 2:5], k, seed, quick)

    report = {
        "data": {"source": "sklearn.datasets.load_digits", "num_train": num_train, "num_test": num_test,
                 "sigma": sigma, "normalisation": {"mean": split.mean, "std": split.std}},
        "problem": problem.describe(),
        "beta": beta,
        "beta_rule": {"fraction": beta_fraction, "beta_max": beta / beta_fraction,
                      "text": f"beta = {beta_fraction:g} x beta_max, beta_max = max_i ||X^T D_i y||_2 over the "
                              f"{len(sampled)} sampled patterns (before the Adam net's own are added)"},
        "pattern_set": {"sampled": len(sampled), "total": problem.P,
                        "text": f"{problem.P} patterns: the {len(sampled)} sampled + the Adam net's own"},
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
    atomic_write_json(out / "report.json", report)
    _figures(out, report, clean_test, noisy_test, den_adam, den_cvx, adam, result, cert, problem)
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


def _figures(out: Path, report: dict[str, Any], clean, noisy, den_adam, den_cvx, adam, result, cert,
             problem) -> list[Path]:
    """reconstructions.png, objective.png, filters.png (through convexdual.plotting)."""
    from convexdual import plotting as pl

    d = report["data"]
    P, n_sampled = report["pattern_set"]["total"], report["pattern_set"]["sampled"]
    data_line = (f"{d['num_train']} training / {d['num_test']} test {pl.describe_source(d['source'])}, "
                 f"Gaussian noise sigma {d['sigma']:g} (normalised units), k = {problem.kernel_size}, "
                 f"beta = {report['beta']:.4g} ({report['beta_rule']['fraction']:g} x beta_max)")
    set_line = f"convex: program (4) over P = {P} patterns = the {n_sampled} sampled + the Adam net's own"
    written = [_reconstructions_figure(pl, out / "reconstructions.png", report, clean, noisy, den_adam, den_cvx,
                                       data_line, set_line),
               _objective_figure(pl, out / "objective.png", adam, result, cert, n_sampled, P, data_line, set_line)]
    if result.network is not None and result.network.width > 0:
        written.append(_filters_figure(pl, out / "filters.png", result, problem, data_line, set_line))
    return written


def _reconstructions_figure(pl, path: Path, report, clean, noisy, den_adam, den_cvx, data_line: str,
                            set_line: str) -> Path:
    m = min(6, clean.shape[0])
    rng = report["test"]["psnr_data_range"]
    rows = [("clean", clean), ("noisy", noisy), ("Adam", den_adam), ("convex", den_cvx)]
    fig, axes = pl.new_figure(4, m, size=(1.45 * m + 1.2, 7.4))
    lo, hi = float(clean.min()), float(clean.max())
    im = None
    for r, (name, imgs) in enumerate(rows):
        for c in range(m):
            if name == "clean":
                title = f"test digit {c}"
            else:
                title = f"{_psnr_range(imgs[c], clean[c], rng):.1f} dB"
            im = pl.show_image(axes[r, c], imgs[c], vmin=lo, vmax=hi, title=title)
        axes[r, 0].set_ylabel(name)
    pl.colorbar(fig, im, axes, "pixel value, normalised units\n(shared scale: clean range; noisy clipped)",
                extend="both", shrink=0.5)
    t = report["test"]
    pl.set_title(fig, "demo: held-out test digits, denoised by the Adam net and the convex net", data_line,
                 f"PSNR per image in dB, data range {rng:.3g} = clean test range; mean over all "
                 f"{report['data']['num_test']}: noisy {t['psnr_noisy']:.2f}, Adam {t['psnr_adam']:.2f}, "
                 f"convex {t['psnr_convex']:.2f}", set_line, fontsize=9)
    return pl.save(fig, path)


def _psnr_range(x: np.ndarray, ref: np.ndarray, data_range: float) -> float:
    mse = float(np.mean((np.asarray(x) - ref) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(data_range**2 / mse)


def _objective_figure(pl, path: Path, adam, result, cert, n_sampled: int, P: int, data_line: str,
                      set_line: str) -> Path:
    fig, axes = pl.new_figure(1, 2, size=(11, 4.8))
    ax, ax2 = axes[0]
    ep = np.array([h["epoch"] for h in adam.history], dtype=float)
    obj = np.array([h["objective"] for h in adam.history], dtype=float)
    opt = float(result.objective)
    bound = None if cert is None else float(cert.dual_bound)
    ax.plot(ep, obj, color="C0", label=f"Adam, objective (2): final {obj[-1]:.6g}")
    ax.axhline(opt, color="C1", ls="-", lw=5, alpha=0.35, label=f"optimum of (4) over the {P} patterns: {opt:.10g}")
    if bound is not None:
        ax.axhline(bound, color="C2", ls=(0, (2, 2)), lw=1.5,
                   label=f"certified lower bound: {bound:.10g}\n(relative gap {cert.relative_gap:.1e}: the lines coincide)")
    ax.set_yscale("log")
    ax.set_xlabel("Adam epoch")
    ax.set_ylabel("objective (2) / (4) (exact sum)")
    ax.set_title("objective during Adam training vs the convex optimum", fontsize=9)
    ax.legend(fontsize=7)

    excess, low = pl.relative_excess(obj, opt)
    ax2.plot(ep, excess, color="C0",
             label="Adam objective (2)" + (f" ({low} points at or below the optimum, drawn at the floor)" if low else ""))
    ax2.plot([ep[-1]], [excess[-1]], "o", color="C0")
    ax2.annotate(f"final {100 * (obj[-1] - opt) / abs(opt):+.3g}%", (ep[-1], excess[-1]), xytext=(-6, -28),
                 textcoords="offset points", ha="right", va="top", fontsize=8, color="C0",
                 arrowprops={"arrowstyle": "-", "color": "C0", "lw": 0.8})
    if bound is not None:
        gap, _ = pl.relative_excess([opt], bound)
        ax2.axhline(gap[0], color="C2", ls=(0, (2, 2)), lw=1.5,
                    label=f"optimum minus certified lower bound (relative gap {cert.relative_gap:.1e})")
    ax2.set_yscale("log")
    ax2.set_xlabel("Adam epoch")
    ax2.set_ylabel("(objective - optimum) / optimum")
    ax2.set_title(f"relative excess over the optimum of (4)\nover the {n_sampled} sampled patterns + the Adam "
                  "net's own", fontsize=9)
    ax2.legend(fontsize=7, loc="upper right")
    pl.set_title(fig, "demo: Adam on the primal (2) vs the convex program (4)", data_line, set_line, fontsize=9)
    return pl.save(fig, path)


def _filters_figure(pl, path: Path, result, problem, data_line: str, set_line: str) -> Path:
    from convexdual.interpret import frequency_responses

    U, v = result.network.filters()
    M = len(v)
    order = np.argsort(-np.abs(v))[:8]
    k = problem.kernel_size
    eff = U[order] * np.abs(v[order])[:, None]  # |v_j| u_j: the filter's size in the net (= its dual weight)
    resp = frequency_responses(eff, problem.in_channels, k)[:, 0]
    ncol = len(order)
    fig, axes = pl.new_figure(2, ncol, size=(1.55 * ncol + 1.4, 4.4))
    flo, fhi = pl.shared_limits([eff], symmetric=True)
    slo, shi = pl.shared_limits([resp], zero=True)
    im = sp = None
    for j, idx in enumerate(order):
        im = pl.show_image(axes[0, j], eff[j].reshape(problem.in_channels, k, k)[0], vmin=flo, vmax=fhi,
                           cmap="RdBu_r", title=f"#{j + 1}: v = {v[idx]:+.3g}", fontsize=7)
        sp = pl.spectrum(axes[1, j], resp[j], vmin=slo, vmax=shi, xlabel=True, ylabel=(j == 0))
    axes[0, 0].set_ylabel(r"$|v_j|\,u_j$ (3x3)", fontsize=8)
    pl.colorbar(fig, im, axes[0, :], "weight (shared scale)")
    pl.colorbar(fig, sp, axes[1, :], "|DFT| (shared scale)")
    pl.set_title(fig, f"demo: the convex net's top {ncol} of {M} neurons by |v|: filters and |DFT| "
                      "(zero-padded to 32, DC at centre)", data_line, set_line, fontsize=9)
    return pl.save(fig, path)


def _summary(out: Path, r: dict[str, Any]) -> None:
    c, t, e = r["convex"], r["test"], r["exact_tiny_crop"]
    cert = c["certificate"] or {}
    ps = r["pattern_set"]
    over = f"over the {ps['sampled']} sampled patterns + the Adam net's own ({ps['total']} in all)"
    verdict = "optimal" if c.get("status") == "optimal" and cert.get("ok") else f"status {c.get('status')}, not certified"
    ecert = e["certificate"]
    adam_excess = 100 * (r["adam"]["objective"] - c["objective"]) / abs(c["objective"])
    e_verdict = "globally optimal (exact enumeration)" if ecert.get("ok") else "not certified"
    lines = [
        "# convexdual demo",
        "",
        f"Data: {r['data']['num_train']} training / {r['data']['num_test']} test digits (scikit-learn 8x8 digits), "
        f"standardised by the training pixels' mean {r['data']['normalisation']['mean']:.4g} and std "
        f"{r['data']['normalisation']['std']:.4g} (all values below in these normalised units); Gaussian noise "
        f"sigma={r['data']['sigma']} (normalised units); kernel k=3.",
        "",
        f"Weight decay: {r['beta_rule']['text']}: beta = {r['beta']:.4g}.",
        "",
        f"Pattern set of (4): {ps['total']} patterns = the {ps['sampled']} distinct sampled Gaussian-gate patterns "
        "+ the Adam net's own (so the optimum of (4) over this set is <= Adam's objective).",
        "",
        f"Test metrics on the {r['data']['num_test']} held-out digits: MSE = mean squared error per pixel in "
        f"normalised units; PSNR in dB with data range {t['psnr_data_range']:.4g} (max - min of the clean test "
        "digits, normalised units).",
        "",
        "| | objective (2)/(4) (exact sum) | test PSNR [dB] | test MSE (normalised units) |",
        "|---|---|---|---|",
        f"| noisy input | | {t['psnr_noisy']:.2f} | {t['mse_noisy']:.4f} |",
        f"| Adam ({r['adam']['width']} filters) | {r['adam']['objective']:.6g} | {t['psnr_adam']:.2f} | {t['mse_adam']:.4f} |",
        f"| convex ({c['num_neurons']} neurons, {c['solver']}; {verdict} {over}) | {c['objective']:.6g} | "
        f"{t['psnr_convex']:.2f} | {t['mse_convex']:.4f} |",
        "",
        f"Certificate ({verdict} {over}; not a statement about all patterns): relative gap "
        f"{cert.get('relative_gap', float('nan')):.2e}, cone violation {cert.get('max_violation', float('nan')):.2e}, "
        f"recovered-net objective (2) {cert.get('network_objective', float('nan')):.10g}; ok = {cert.get('ok')}. "
        f"Adam's objective is {adam_excess:+.3g}% relative to this optimum.",
        "",
        f"Exact enumeration on a 3x3 crop of one training digit: all {e['P']} sign patterns, beta = {e['beta']:.4g} "
        f"(0.05 x beta_max over all of them); optimum {e['objective']:.8g}, {e_verdict}, relative gap "
        f"{ecert['relative_gap']:.1e}. Adam from {len(e['adam_objectives'])} initialisations ended at best "
        f"{min(e['adam_objectives']):.8g} ({e['adam_min_minus_optimum_relative']:+.2e} relative to the global optimum).",
        "",
        "Figures: objective.png (Adam vs the optimum and certified bound over the pattern set), filters.png "
        "(the convex net's largest neurons and their spectra), reconstructions.png (test digits with PSNR per image).",
        "",
        f"Total time {r['seconds']:.1f} s.",
        "",
        "Is the Adam net globally optimal, and if not by how much can it improve? Ask:",
        "",
        f"    {r['certify_command']}",
    ]
    atomic_write_text(out / "summary.md", "\n".join(lines) + "\n")
