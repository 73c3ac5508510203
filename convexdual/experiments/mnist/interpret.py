"""interpret: what the certified dual network learned: filter spectra, path sparsity, k-means maps (Sec. 4.2, Figs. 4, 5a).

At one Gaussian noise level (``--sigmas``, first value; default 0.5) the primal net and the
certified solves of (4) (over the sampled patterns, and over them + the primal net's own)
are obtained through ``common.train_unit`` / ``common.dual_pair``: with ``--cache-dir`` and
``--resume`` the nets other MNIST experiments trained and solved with the same settings are
reused. From the recovered network of the sampled-pattern dual (the paper's dual) it draws

* ``spectra.png``: ``|DFT|`` (zero-padded to ``--fft-size``) of the dual's path filters
  ``v_j u_j`` (= the dual weights ``w_i`` / ``-z_i``, eq. 7) at evenly spaced ranks of their
  norm, beside the primal's, on one colour scale, frequency axes in cycles/pixel, DC marked;
* ``path_sparsity.png``: how many of the ``2P`` groups of (4) are nonzero, their norms
  ``||w_i||`` / ``||z_i||`` sorted (log scale), the cumulative share of the group-lasso
  penalty, and how many paths are active per output pixel on clean test digits;
* ``kmeans_maps.png`` (Fig. 5a): k-means (``--clusters``) of every output pixel's binary
  activation code ``b_p = 1[x_p^T u_j >= 0]`` over the nonzero paths, fitted on
  ``--kmeans-images`` clean test digits evenly spaced over the test set (it is ordered by
  class), ``--show-images`` of them (evenly spaced) shown, dual and primal;
* ``cluster_filters.png``: each cluster's mean effective linear filter (eq. 8) and its spectrum.

Options (besides the common MNIST ones): ``--clusters`` (8), ``--kmeans-images`` (16),
``--show-images`` (6), ``--num-filters`` (16 spectra per net; smoke 8), ``--fft-size`` (32).
Writes ``interpret.json`` (every plotted number), the PNGs and ``summary.md``; the analysis is
a unit under ``--out/units`` reused with ``--resume``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

import convexdual as cd
from convexdual import plotting as pl
from convexdual._io import to_jsonable
from convexdual.experiments.mnist import common as C
from convexdual.interpret import activation_codes, cluster_activations, effective_filters, frequency_responses

__all__ = ["add_arguments", "run", "FULL", "SMOKE", "path_norms", "kmeans_analysis", "label_entropy", "kmeans_indices",
           "plot_kmeans_maps", "PATH_TOL"]

FULL: dict[str, Any] = {"num_train": 600, "num_test": 0, "sigmas": "0.5", "width": 512, "epochs": 100,
                        "lr": 1e-2, "num_patterns": "8000", "baseline_epochs": 100, "num_filters": 16}
SMOKE: dict[str, Any] = {"num_train": 4, "num_test": 8, "sigmas": "0.5", "width": 32, "epochs": 80,
                         "lr": 1e-2, "num_patterns": "24", "baseline_epochs": 40, "num_filters": 8}
#: a path counts as nonzero when its norm is above this fraction of the largest (the recovery's rule)
PATH_TOL = 1e-6


def add_arguments(p: argparse.ArgumentParser) -> None:
    C.add_common_arguments(p, FULL, SMOKE)
    p.add_argument("--clusters", type=int, default=8, help="k of the k-means of the activation codes")
    p.add_argument("--kmeans-images", type=int, default=16, help="clean test digits the k-means is fitted on")
    p.add_argument("--show-images", type=int, default=6, help="digits shown in the k-means maps")
    p.add_argument("--num-filters", type=int, default=None,
                   help=f"filter spectra shown per network (full: {FULL['num_filters']}; smoke: {SMOKE['num_filters']})")
    p.add_argument("--fft-size", type=int, default=32, help="zero-padded DFT size of the filter spectra")


def run(args: argparse.Namespace) -> int:
    return C.run_experiment(args, FULL, SMOKE, _run)


# --------------------------------------------------------------------------------------------- analysis
def path_norms(net: cd.TwoLayerConvNet) -> np.ndarray:
    """``|v_j| ||u_j||`` per neuron: for a recovered net, the group norms ``||w_i||`` / ``||z_i||`` of (4)."""
    U, v = net.filters()
    return np.abs(v) * np.linalg.norm(U, axis=1)


def _nonzero_paths(net: cd.TwoLayerConvNet) -> np.ndarray:
    n = path_norms(net)
    return n > PATH_TOL * max(float(n.max(initial=0.0)), 0.0) if n.size else np.zeros(0, bool)


def kmeans_indices(num_test: int, num_fit: int) -> np.ndarray:
    """``num_fit`` test-image indices evenly spaced over the test set (the bundled digits' test set is
    ordered by class: the first images are all zeros)."""
    n = max(1, min(int(num_fit), int(num_test)))
    return np.unique(np.round(np.linspace(0, int(num_test) - 1, n)).astype(int))


def label_entropy(labels: np.ndarray) -> float:
    """Shannon entropy (bits) of the label frequencies."""
    _, c = np.unique(np.asarray(labels).ravel(), return_counts=True)
    p = c / c.sum()
    return float(-(p * np.log2(p)).sum())


def kmeans_analysis(net: cd.TwoLayerConvNet, inputs: np.ndarray, clean: np.ndarray, clusters: int,
                    seed: int) -> dict[str, Any]:
    """k-means of the activation codes of every output pixel of ``net`` on ``inputs``.

    Codes are over the nonzero paths only (norm above :data:`PATH_TOL` of the largest). Labels
    are renumbered by cluster size (0 = the largest). Per cluster: pixel share, mean clean
    intensity, mean active paths, and the mean effective filter of eq. (8) with its DC gain
    (sum of its taps).
    """
    keep = _nonzero_paths(net)
    codes = activation_codes(net, inputs, batch_size=4)[..., keep]  # 4 images: (4, m, H, W) pre-activations at a time
    labels = cluster_activations(codes, n_clusters=clusters, seed=seed)
    ids, counts = np.unique(labels, return_counts=True)
    order = ids[np.argsort(-counts, kind="stable")]
    remap = np.empty(int(labels.max()) + 1, dtype=np.int64)
    remap[order] = np.arange(len(order))
    labels = remap[labels]
    U, v = net.filters()
    sub = cd.TwoLayerConvNet.from_filters(U[keep], v[keep], net.in_channels, net.kernel_size,
                                          residual=net.residual, residual_channel=net.residual_channel)
    active = codes.sum(axis=-1)
    stats = []
    for c in range(len(order)):
        sel = labels == c
        # eq. (8) is linear in the code: the cluster's mean effective filter is that of its mean code
        f = effective_filters(sub, codes[sel].mean(axis=0)[None, None, None])[0, 0, 0]
        stats.append({"cluster": c, "pixels": int(sel.sum()), "share": float(sel.mean()),
                      "mean_clean_intensity": float(np.asarray(clean)[sel].mean()),
                      "mean_active_paths": float(active[sel].mean()), "mean_filter": f,
                      "dc_gain": float(f.sum())})
    flat = codes.reshape(-1, codes.shape[-1])
    return {"labels": labels, "clusters": stats, "num_paths": int(keep.sum()),
            "distinct_codes": int(len(np.unique(flat, axis=0))), "label_entropy_bits": label_entropy(labels),
            "active_paths_per_pixel": {"mean": float(active.mean()), "median": float(np.median(active)),
                                       "max": int(active.max()), "histogram": np.bincount(active.ravel()).tolist()}}


def _ari(a: np.ndarray, b: np.ndarray) -> float:
    from sklearn.metrics import adjusted_rand_score

    return float(adjusted_rand_score(np.asarray(a).ravel(), np.asarray(b).ravel()))


def _spectra(net: cd.TwoLayerConvNet, count: int, size: int) -> dict[str, Any]:
    """Spectra of the path filters ``v_j u_j`` at ``count`` evenly spaced ranks of their norm."""
    U, v = net.filters()
    norms = path_norms(net)
    order = np.argsort(-norms, kind="stable")
    ranks = np.unique(np.round(np.linspace(0, len(order) - 1, min(count, len(order)))).astype(int))
    paths = v[order[ranks], None] * U[order[ranks]]
    mag = frequency_responses(paths, net.in_channels, net.kernel_size, size=size)[:, 0]
    return {"ranks": ranks, "neurons": order[ranks], "norms": norms[order[ranks]], "filters": paths,
            "magnitude": mag, "fft_size": size}


def _analysis(args: argparse.Namespace, data: C.Data, pnet: cd.TwoLayerConvNet,
              nets: dict[str, cd.TwoLayerConvNet | None], duals: dict[str, dict[str, Any]]) -> dict[str, Any]:
    idx = kmeans_indices(len(data.clean_test), int(args.kmeans_images))
    digits = data.clean_test[idx]
    res: dict[str, Any] = {"kmeans_images": int(len(idx)), "kmeans_indices": idx, "clusters_requested": int(args.clusters),
                           "clean_digits": digits[kmeans_indices(len(idx), int(args.show_images))],
                           "shown_positions": kmeans_indices(len(idx), int(args.show_images))}
    sparsity: dict[str, Any] = {}
    for name, net in (("dual", nets["sampled"]), ("dual_augmented", nets["augmented"]), ("primal", pnet)):
        if net is None:
            continue
        norms = np.sort(path_norms(net))[::-1]
        total = float(norms.sum())
        cum = np.cumsum(norms) / total if total > 0 else np.zeros_like(norms)
        groups = 2 * int(duals["sampled" if name == "dual" else "augmented"]["P"]) if name != "primal" else None
        sparsity[name] = {"sorted_norms": norms, "cumulative_share": cum, "nonzero": int(_nonzero_paths(net).sum()),
                          "neurons": int(net.width), "groups": groups, "penalty_sum": total,
                          "paths_for_90pct": int(np.searchsorted(cum, 0.9) + 1) if total > 0 else 0,
                          "paths_for_99pct": int(np.searchsorted(cum, 0.99) + 1) if total > 0 else 0}
    res["sparsity"] = sparsity
    res["spectra"] = {name: _spectra(net, int(args.num_filters), int(args.fft_size))
                      for name, net in (("dual", nets["sampled"]), ("primal", pnet)) if net is not None}
    res["kmeans"] = {name: kmeans_analysis(net, digits, digits, int(args.clusters), args.seed)
                     for name, net in (("dual", nets["sampled"]), ("primal", pnet)) if net is not None}
    if {"dual", "primal"} <= set(res["kmeans"]):
        res["ari_dual_vs_primal"] = _ari(res["kmeans"]["dual"]["labels"], res["kmeans"]["primal"]["labels"])
    return to_jsonable(res)


# --------------------------------------------------------------------------------------------- figures
def _details(args: argparse.Namespace, data: C.Data, sigma: float, duals: dict[str, dict[str, Any]]) -> list[str]:
    s = duals["sampled"]
    return [f"{pl.describe_source(data.source)}, {data.clean.shape[0]} training images, Gaussian noise sigma "
            f"{sigma:g}; beta = {args.beta_frac:g} x beta_max over 256 reference Gaussian gates",
            f"dual: network recovered from (4) over the {s['P']} sampled patterns ({C.certificate_cell(s)}); "
            f"primal: {args.width} filters, Adam {args.epochs} epochs"]


def _plot_spectra(res: dict[str, Any], path: Path, details: list[str]) -> Path:
    nets = [n for n in ("dual", "primal") if n in res["spectra"]]
    per_row = 8
    rows = {n: int(np.ceil(len(res["spectra"][n]["magnitude"]) / per_row)) for n in nets}
    fig, axes = pl.new_figure(sum(rows.values()), per_row, size=(1.55 * per_row + 1.2, 1.75 * sum(rows.values()) + 1.6))
    lo, hi = pl.shared_limits([np.asarray(res["spectra"][n]["magnitude"]) for n in nets], zero=True)
    im, r0 = None, 0
    for n in nets:
        sp = res["spectra"][n]
        for i, mag in enumerate(sp["magnitude"]):
            ax = axes[r0 + i // per_row, i % per_row]
            who = "dual" if n == "dual" else "primal"
            im = pl.spectrum(ax, np.asarray(mag), vmin=lo, vmax=hi,
                             title=f"{who} rank {sp['ranks'][i] + 1}\n|v|·|u| = {sp['norms'][i]:.2g}",
                             xlabel=(i // per_row == rows[n] - 1), ylabel=(i % per_row == 0))
        for i in range(len(sp["magnitude"]), rows[n] * per_row):
            axes[r0 + i // per_row, i % per_row].set_visible(False)
        r0 += rows[n]
    pl.colorbar(fig, im, axes, "|DFT| of the path filter v_j u_j (gain, normalised units; shared scale)", shrink=0.6)
    pl.set_title(fig, "frequency responses of the dual filters (top) and the primal's (bottom), "
                 "at evenly spaced ranks of the path norm (rank 1 = largest)", *details, fontsize=9)
    return pl.save(fig, path)


def _plot_sparsity(res: dict[str, Any], path: Path, details: list[str]) -> Path:
    sp = res["sparsity"]
    fig, axes = pl.new_figure(1, 3, size=(15, 4.8))
    styles = {"dual": "C1-", "dual_augmented": "C2--", "primal": "C0-"}
    names = {"dual": "dual (sampled patterns)", "dual_augmented": "dual (sampled + primal's)", "primal": "primal (Adam)"}
    for n, s in sp.items():
        norms = np.asarray(s["sorted_norms"], dtype=float)
        of = f"{s['nonzero']} of {s['groups']} groups nonzero" if s["groups"] else f"{s['nonzero']} of {s['neurons']} neurons"
        axes[0, 0].plot(np.arange(1, len(norms) + 1), np.maximum(norms, pl.LOG_FLOOR), styles[n],
                        label=f"{names[n]}: {of}")
        axes[0, 1].plot(np.arange(1, len(norms) + 1), s["cumulative_share"], styles[n],
                        label=f"{names[n]}: 90% in {s['paths_for_90pct']}, 99% in {s['paths_for_99pct']} paths")
    axes[0, 0].set_yscale("log")
    axes[0, 0].set_xscale("log")
    axes[0, 0].set_xlabel("rank of the group (1 = largest)")
    axes[0, 0].set_ylabel("group norm ||w_i|| = |v_j| ||u_j|| (normalised units)")
    axes[0, 0].set_title("path sparsity: nonzero group norms, sorted\n(zero groups are not drawn; count in legend)",
                         fontsize=9)
    axes[0, 1].set_xscale("log")
    axes[0, 1].set_xlabel("number of largest groups kept")
    axes[0, 1].set_ylabel("share of the group-lasso penalty sum ||w_i||")
    axes[0, 1].set_title("cumulative share of the penalty", fontsize=9)
    for n in ("dual", "primal"):
        if n in res["kmeans"]:
            h = np.asarray(res["kmeans"][n]["active_paths_per_pixel"]["histogram"], dtype=float)
            axes[0, 2].step(np.arange(len(h)), h / h.sum(), styles[n], where="mid",
                            label=f"{names[n]}: mean {res['kmeans'][n]['active_paths_per_pixel']['mean']:.1f} of "
                                  f"{res['kmeans'][n]['num_paths']}")
    axes[0, 2].set_xlabel("active nonzero paths at the pixel (count)")
    axes[0, 2].set_ylabel("fraction of output pixels")
    axes[0, 2].set_title(f"paths active per output pixel ({res['kmeans_images']} clean test digits)", fontsize=9)
    for ax in axes[0]:
        ax.legend(fontsize=7)
    pl.set_title(fig, "path sparsity of the certified dual network vs the primal (Section 4.1-4.2)", *details, fontsize=9)
    return pl.save(fig, path)


def plot_kmeans_maps(rows: list[tuple[str, np.ndarray]], digits: np.ndarray, k: int, path: Path,
                     indices: np.ndarray, headline: str, details: list[str]) -> Path:
    """Clean digits on top, then one row of k-means label maps per entry of ``rows`` (one categorical scale)."""
    n = len(digits)
    fig, axes = pl.new_figure(1 + len(rows), n, size=(1.6 * n + 2.4, 1.7 * (1 + len(rows)) + 1.4))
    lo, hi = pl.shared_limits([digits])
    for j in range(n):
        im0 = pl.show_image(axes[0, j], digits[j], vmin=lo, vmax=hi, title=f"test digit #{int(indices[j])}", fontsize=7)
    axes[0, 0].set_ylabel("clean input", fontsize=7)
    pl.colorbar(fig, im0, axes[0, :], "pixel value (normalised units)", shrink=0.8)
    cmap = "tab10" if k <= 10 else "tab20"
    im = None
    for i, (name, labels) in enumerate(rows, start=1):
        for j in range(n):
            im = pl.show_image(axes[i, j], labels[j], vmin=-0.5, vmax=k - 0.5, cmap=cmap)
        axes[i, 0].set_ylabel(name, fontsize=7)
    if im is not None:
        cb = pl.colorbar(fig, im, axes[1:, :], "k-means cluster of the activation code (0 = most pixels)", shrink=0.8)
        cb.set_ticks(list(range(k)))
    pl.set_title(fig, headline, *details, fontsize=9)
    return pl.save(fig, path)


def _plot_cluster_filters(res: dict[str, Any], path: Path, d_side: int, details: list[str]) -> Path:
    nets = [n for n in ("dual", "primal") if n in res["kmeans"]]
    k = max(len(res["kmeans"][n]["clusters"]) for n in nets)
    fig, axes = pl.new_figure(2 * len(nets), k, size=(1.7 * k + 2.4, 1.8 * 2 * len(nets) + 1.6))
    filters = [np.asarray(c["mean_filter"]).reshape(d_side, d_side) for n in nets for c in res["kmeans"][n]["clusters"]]
    size = int(res["spectra"][nets[0]]["fft_size"]) if res.get("spectra") else 32
    mags = [np.abs(np.fft.fftshift(np.fft.fft2(f, s=(size, size)))) for f in filters]
    flo, fhi = pl.shared_limits(filters, symmetric=True)
    mlo, mhi = pl.shared_limits(mags, zero=True)
    im_f = im_m = None
    idx = 0
    for r, n in enumerate(nets):
        cl = res["kmeans"][n]["clusters"]
        for c in range(k):
            if c >= len(cl):
                axes[2 * r, c].set_visible(False)
                axes[2 * r + 1, c].set_visible(False)
                continue
            s = cl[c]
            im_f = pl.show_image(axes[2 * r, c], filters[idx], vmin=flo, vmax=fhi, cmap="RdBu_r",
                                 title=f"{n} cluster {c}: {100 * s['share']:.0f}% px\n"
                                       f"DC gain {s['dc_gain']:.2f}, {s['mean_active_paths']:.0f} paths", fontsize=6)
            im_m = pl.spectrum(axes[2 * r + 1, c], mags[idx], vmin=mlo, vmax=mhi, xlabel=True, ylabel=(c == 0))
            idx += 1
        axes[2 * r, 0].set_ylabel(f"{n}: mean filter\n(3x3 taps)", fontsize=7)
    pl.colorbar(fig, im_f, [axes[2 * r, c] for r in range(len(nets)) for c in range(k)],
                "filter tap (normalised units; filter rows)", shrink=0.6, location="right")
    pl.colorbar(fig, im_m, [axes[2 * r + 1, c] for r in range(len(nets)) for c in range(k)],
                "|DFT| of the mean filter (spectrum rows)", shrink=0.5, location="bottom")
    pl.set_title(fig, "piecewise linear filtering (eq. 8): each k-means cluster's mean effective filter "
                 "sum_{j active} v_j u_j and its frequency response", *details, fontsize=9)
    return pl.save(fig, path)


# --------------------------------------------------------------------------------------------- run
def _run(args: argparse.Namespace, out: Path) -> int:
    sigma = C.parse_floats(args.sigmas)[0]
    P = C.parse_ints(args.num_patterns)[0]
    data, beta, primal, pnet = C.train_unit(args, "gaussian", sigma)
    pats = cd.sample_patterns(data.noisy, 3, P, seed=args.seed)
    duals, nets = C.dual_pair(args, data, beta, pats, pnet, prefix="dual", seed=args.seed)
    if nets["sampled"] is None:
        raise RuntimeError(f"the certified solve over the sampled patterns gave no network: {duals['sampled']}")
    cache = C.UnitCache(out, args.resume, settings=args)
    res = cache.get_or_run(f"interpret_v3_gaussian_{sigma:g}", lambda: _analysis(args, data, pnet, nets, duals))
    details = _details(args, data, sigma, duals)
    figs = [_plot_spectra(res, out / "spectra.png", details), _plot_sparsity(res, out / "path_sparsity.png", details)]
    show = np.asarray(res["shown_positions"])  # positions in the fitted digits, evenly spaced
    rows = [(f"{n} k-means\n({res['kmeans'][n]['num_paths']} paths)", np.asarray(res["kmeans"][n]["labels"])[show])
            for n in ("dual", "primal") if n in res["kmeans"]]
    k = max(len(res["kmeans"][n]["clusters"]) for n in res["kmeans"])
    figs.append(plot_kmeans_maps(rows, np.asarray(res["clean_digits"]), k, out / "kmeans_maps.png",
                                 np.asarray(res["kmeans_indices"])[show],
                                 f"k-means (k = {args.clusters}) of every output pixel's activation code on clean "
                                 f"test digits (Fig. 5a); fitted on {res['kmeans_images']} digits",
                                 details + [f"adjusted Rand index dual vs primal clusters: "
                                            f"{res.get('ari_dual_vs_primal', float('nan')):.3f}"]))
    figs.append(_plot_cluster_filters(res, out / "cluster_filters.png", pnet.kernel_size, details))
    lines = _summary(args, data, sigma, beta, primal, duals, res)
    lines += ["", "Figures: " + ", ".join(f.name for f in figs)]
    C.write_outputs(out, "interpret", "interpret", args, {
        "beta": beta, "data": data.describe(), "sigma": sigma, "primal": primal, "duals": duals, "analysis": res,
        "path_tol": PATH_TOL, "figures": [f.name for f in figs]}, lines)
    return 0


def _summary(args, data, sigma, beta, primal, duals, res) -> list[str]:
    sp, km = res["sparsity"], res["kmeans"]
    lines = [f"Data: {C.data_text(data.describe())}, Gaussian sigma {sigma:g}; {C.beta_rule(args)}; primal "
             f"{args.width} filters; {duals['sampled']['P']} sampled patterns; certified solver `{args.solver}`.", "",
             C.UNITS, "", "## Path sparsity", "",
             "| network | certificate | nonzero paths | of | paths carrying 90% / 99% of sum of norms | sum of norms |",
             "|---|---|---|---|---|---|"]
    names = {"dual": "dual (sampled)", "dual_augmented": "dual (sampled + primal's)", "primal": "primal (Adam)"}
    for n, s in sp.items():
        rec = duals["sampled"] if n == "dual" else duals["augmented"] if n == "dual_augmented" else None
        lines.append(f"| {names[n]} | {C.certificate_cell(rec) if rec else 'n/a (Adam)'} | {s['nonzero']} | "
                     f"{str(s['groups']) + ' groups (2P)' if s['groups'] else str(s['neurons']) + ' neurons'} | "
                     f"{s['paths_for_90pct']} / {s['paths_for_99pct']} | {C.fmt(s['penalty_sum'])} |")
    lines += ["", f"A path is nonzero when its norm |v_j| ||u_j|| exceeds {PATH_TOL:g} x the largest (the recovery's "
              "threshold; groups below it are not in the recovered net).", "",
              f"## k-means of activation codes ({res['kmeans_images']} clean test digits, k = {args.clusters})", "",
              "| network | paths | distinct codes | active paths / pixel (mean, median, max) | label entropy (bits) |",
              "|---|---|---|---|---|"]
    for n, a in km.items():
        ap = a["active_paths_per_pixel"]
        lines.append(f"| {n} | {a['num_paths']} | {a['distinct_codes']} | {ap['mean']:.1f}, {ap['median']:.0f}, "
                     f"{ap['max']} | {a['label_entropy_bits']:.2f} |")
    if "ari_dual_vs_primal" in res:
        lines += ["", f"Adjusted Rand index between the dual's and the primal's cluster maps: "
                      f"{res['ari_dual_vs_primal']:.3f} (1 = the same partition, 0 = chance)."]
    for n, a in km.items():
        lines += ["", f"{n} clusters (0 = most pixels): share of pixels, mean clean intensity, mean active paths, "
                      "DC gain of the mean effective filter:", ""]
        lines += [f"- {c['cluster']}: {100 * c['share']:.1f}%, intensity {c['mean_clean_intensity']:+.2f}, "
                  f"{c['mean_active_paths']:.1f} paths, DC gain {c['dc_gain']:.3f}" for c in a["clusters"]]
    return lines
