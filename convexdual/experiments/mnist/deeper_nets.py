"""deeper-nets: greedy layer-wise convex training and a 4-layer unrolled net trained end to end (Sec. 4.3, Fig. 5b).

``--mode greedy``: block 1 is the network recovered from the certified solve of (4) over
``--num-patterns`` sampled patterns on (noisy -> clean) (the same solve as zero-gap /
interpret, reused through ``--cache-dir`` + ``--resume``); block ``b`` is the network
recovered from the certified solve of (4) over ``--num-patterns`` patterns sampled on block
``b-1``'s output, targets the clean images, its beta by the same rule (``--beta-frac`` x
beta_max of that block's data). Each block has its own certificate.

``--mode unrolled``: ``--blocks`` two-layer iterations of ``--block-width`` filters each,
stacked (:class:`convexdual.stacked.StackedConvNet`) and trained end to end by Adam
(``--unrolled-epochs``, ``--lr``, ``--batch-size``; steps in ``--primal-dtype``, the recorded
objective and losses in float64) on squared loss + beta/2 x every squared weight, beta the
two-layer problem's; beside it a two-layer net of the same width and
schedule. The dual view of each iteration: k-means (``--clusters``) of the activation codes
of every output pixel of that block on clean test digits (``--kmeans-images``, evenly
spaced over the test set) pushed through the blocks before it
(Fig. 5b), compared with the two-layer net's by the adjusted Rand index.

``--mode both`` (default) runs both. Reported per block and end to end: test loss per pixel
and mean test PSNR (dB, peak = each clean image's range), against the two-layer nets (the
paper-size primal of ``--width`` filters and its certified dual). Writes ``deeper_nets.json``,
``deeper_psnr.png``, ``unrolled_training.png``, ``kmeans_unrolled.png``, ``kmeans_greedy.png``,
the stacked nets under ``--out/nets`` and ``summary.md``; finished pieces are reused with ``--resume``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

import convexdual as cd
from convexdual import plotting as pl
from convexdual._io import to_jsonable
from convexdual.experiments.mnist import common as C
from convexdual.experiments.mnist.interpret import kmeans_analysis, kmeans_indices, plot_kmeans_maps
from convexdual.experiments.mnist.reconstructions import psnr
from convexdual.stacked import StackedConvNet, stacked_objective_torch, train_stacked

__all__ = ["add_arguments", "run", "FULL", "SMOKE", "mean_psnr"]

logger = logging.getLogger(__name__)

FULL: dict[str, Any] = {"num_train": 600, "num_test": 0, "sigmas": "0.5", "width": 512, "epochs": 100,
                        "lr": 1e-2, "num_patterns": "8000", "baseline_epochs": 100, "block_width": 128,
                        "unrolled_epochs": 40}
SMOKE: dict[str, Any] = {"num_train": 4, "num_test": 8, "sigmas": "0.5", "width": 32, "epochs": 80,
                         "lr": 1e-2, "num_patterns": "24", "baseline_epochs": 40, "block_width": 8,
                         "unrolled_epochs": 40}


def add_arguments(p: argparse.ArgumentParser) -> None:
    C.add_common_arguments(p, FULL, SMOKE)
    p.add_argument("--mode", choices=("greedy", "unrolled", "both"), default="both",
                   help="greedy layer-wise convex training, the end-to-end unrolled net, or both")
    p.add_argument("--blocks", type=int, default=2, help="two-layer blocks stacked (the paper: 2)")
    p.add_argument("--block-width", type=int, default=None,
                   help=f"filters per block of the unrolled net (full: {FULL['block_width']}; smoke: {SMOKE['block_width']})")
    p.add_argument("--unrolled-epochs", type=int, default=None,
                   help=f"Adam epochs of the unrolled net and its two-layer twin (full: {FULL['unrolled_epochs']}; "
                        f"smoke: {SMOKE['unrolled_epochs']})")
    p.add_argument("--clusters", type=int, default=8, help="k of the k-means maps")
    p.add_argument("--kmeans-images", type=int, default=16, help="clean test digits the k-means is fitted on")
    p.add_argument("--show-images", type=int, default=6, help="digits shown in the k-means maps")


def run(args: argparse.Namespace) -> int:
    return C.run_experiment(args, FULL, SMOKE, _run)


def mean_psnr(pred: np.ndarray, clean: np.ndarray) -> float:
    """Mean over images of :func:`reconstructions.psnr` (dB, peak = each clean image's range)."""
    return float(np.mean([psnr(p, c) for p, c in zip(pred, clean)]))


def _scores(pred: np.ndarray, data: C.Data) -> dict[str, float]:
    return {"test_loss": C.per_pixel_loss(pred, data.clean_test), "test_psnr_db": mean_psnr(pred, data.clean_test)}


def _dual_view(net: StackedConvNet, digits: np.ndarray, args: argparse.Namespace) -> list[dict[str, Any]]:
    """k-means analysis of every block on the clean digits pushed through the blocks before it."""
    return [to_jsonable(kmeans_analysis(b, x, digits, int(args.clusters), args.seed))
            for b, x in zip(net.blocks, net.block_inputs(digits))]


def _ari(a, b) -> float:
    from sklearn.metrics import adjusted_rand_score

    return float(adjusted_rand_score(np.asarray(a).ravel(), np.asarray(b).ravel()))


# --------------------------------------------------------------------------------------------- greedy
def _greedy(args, out: Path, data: C.Data, beta: float, sigma: float, P: int) -> tuple[dict[str, Any], StackedConvNet]:
    blocks, records = [], []
    cur, cur_beta = data, beta
    for b in range(1, int(args.blocks) + 1):
        if b > 1:
            prev = blocks[-1]
            cur = dataclasses.replace(cur, noisy=prev.predict(cur.noisy), noisy_test=prev.predict(cur.noisy_test))
            cur_beta = C.reference_beta(cur.noisy, cur.clean, 3, args.beta_frac)
        pats = cd.sample_patterns(cur.noisy, 3, P, seed=args.seed + b - 1)
        rec, net = C.run_dual(cur, cur_beta, pats, args.solver, label=f"greedy block {b}, {len(pats)} sampled",
                              time_limit=args.solver_time_limit, device=args.device, seed=args.seed,
                              cache=C.solve_cache(args))
        if net is None:
            raise RuntimeError(f"greedy block {b}: the certified solve gave no network: {rec}")
        rec["over"] = (f"over the {len(pats)} patterns sampled on the noisy images" if b == 1 else
                       f"over the {len(pats)} patterns sampled on block {b - 1}'s output")
        rec.update(block=b, beta=cur_beta, input_test_loss=C.per_pixel_loss(cur.noisy_test, data.clean_test),
                   input_test_psnr_db=mean_psnr(cur.noisy_test, data.clean_test), width=int(net.width))
        rec.update({f"after_{k}": v for k, v in _scores(net.predict(cur.noisy_test), data).items()})
        records.append(rec)
        blocks.append(net)
        logger.info("greedy block %d: objective %.6g, status %s, test PSNR %.2f dB", b, rec["objective"],
                    rec["status"], rec["after_test_psnr_db"])
    stacked = StackedConvNet(blocks)
    stacked.save(out / "nets" / f"greedy_gaussian_{sigma:g}.pt",
                 {"betas": [r["beta"] for r in records], "sigma": sigma, "mode": "greedy"})
    return {"blocks": records, "end_to_end": _scores(stacked.predict(data.noisy_test), data)}, stacked


# --------------------------------------------------------------------------------------------- unrolled
def _unrolled(args, out: Path, data: C.Data, beta: float, sigma: float) -> tuple[dict[str, Any], StackedConvNet]:
    cache = C.UnitCache(C.cache_root(args), bool(args.resume), settings={
        **{k: getattr(args, k, None) for k in C.PRIMAL_SETTINGS if k not in ("width", "epochs")}, "blocks": args.blocks,
        "block_width": args.block_width, "unrolled_epochs": args.unrolled_epochs,
        "primal_dtype": getattr(args, "primal_dtype", "float32")})
    key = f"unrolled_gaussian_{sigma:g}_{args.blocks}x{args.block_width}"
    path = C.cache_root(args) / "nets" / f"{key}.pt"
    rec = cache.get(key)
    if rec is not None and path.is_file():
        net, meta = StackedConvNet.load(path)
        if meta.get("settings_sha256") == cache.settings_hash(key):
            return rec, net
        logger.warning("resuming: %s belongs to other settings; retraining the unrolled net", path)
    # Adam in the primal's precision (float32 by default, as common.run_primal); the recorded objective and
    # losses are evaluated in float64 on the trained weights
    dtype = {"float32": torch.float32, "float64": torch.float64}[str(getattr(args, "primal_dtype", "float32"))]
    res = train_stacked(data.noisy, data.clean, widths=[int(args.block_width)] * int(args.blocks), beta=beta,
                        epochs=int(args.unrolled_epochs), batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                        device=args.device, eval_every=max(1, int(args.unrolled_epochs) // 10),
                        test=(data.noisy_test[:1000], data.clean_test[:1000]), dtype=dtype)
    net = res.network.to("cpu").to(torch.float64)
    obj, _ = stacked_objective_torch(net, torch.from_numpy(data.noisy[:, None]), torch.from_numpy(data.clean), beta)
    rec = {"widths": net.widths, "epochs": res.epochs, "status": res.status, "objective": obj,
           "objective_training_precision": res.objective, "dtype": str(dtype).replace("torch.", ""),
           "history": [dict(h) for h in res.history], "history_test_images": int(min(1000, len(data.noisy_test))),
           "beta": beta, "seconds": res.history[-1]["time"]}
    outs = net.predict_blocks(data.noisy_test)
    rec["per_block"] = [_scores(o, data) for o in outs]
    rec["end_to_end"] = rec["per_block"][-1]
    net.save(path, {"beta": beta, "sigma": sigma, "mode": "unrolled", "settings_sha256": cache.settings_hash(key)})
    cache.put(key, rec)
    return rec, net


# --------------------------------------------------------------------------------------------- run
def _run(args: argparse.Namespace, out: Path) -> int:
    if int(args.blocks) < 1 or int(args.block_width) < 1 or int(args.unrolled_epochs) < 1:
        raise ValueError("--blocks, --block-width and --unrolled-epochs must be >= 1")
    sigma = C.parse_floats(args.sigmas)[0]
    P = C.parse_ints(args.num_patterns)[0]
    modes = ("greedy", "unrolled") if args.mode == "both" else (args.mode,)
    data, beta, primal, pnet = C.train_unit(args, "gaussian", sigma)
    idx = kmeans_indices(len(data.clean_test), int(args.kmeans_images))
    digits = data.clean_test[idx]
    show = kmeans_indices(len(idx), int(args.show_images))  # positions in the fitted digits, evenly spaced
    refs = {f"two-layer primal ({args.width} filters, Adam {args.epochs} epochs)":
            {**_scores(pnet.predict(data.noisy_test), data), "objective": primal["objective"]}}
    result: dict[str, Any] = {"beta": beta, "data": data.describe(), "sigma": sigma, "primal": primal,
                              "noisy": _scores(data.noisy_test, data), "modes": list(modes),
                              "kmeans_indices": idx.tolist(), "shown_positions": show.tolist()}
    figs = []
    details = [f"{pl.describe_source(data.source)}, {data.clean.shape[0]} training / {data.clean_test.shape[0]} test "
               f"images, Gaussian noise sigma {sigma:g}; beta = {args.beta_frac:g} x beta_max over 256 reference "
               "Gaussian gates (per block for greedy)"]
    if "greedy" in modes:
        g, gnet = _greedy(args, out, data, beta, sigma, P)
        refs[f"two-layer certified dual ({g['blocks'][0]['P']} sampled patterns) = greedy block 1"] = {
            "test_loss": g["blocks"][0]["after_test_loss"], "test_psnr_db": g["blocks"][0]["after_test_psnr_db"],
            "objective": g["blocks"][0]["objective"]}
        g["kmeans"] = _dual_view(gnet, digits, args)
        g["ari_block2_vs_block1"] = _ari(g["kmeans"][1]["labels"], g["kmeans"][0]["labels"]) if len(g["kmeans"]) > 1 else None
        result["greedy"] = g
        rows = [(f"greedy block {b + 1}\n({a['num_paths']} paths)", np.asarray(a["labels"])[show])
                for b, a in enumerate(g["kmeans"])]
        figs.append(plot_kmeans_maps(rows, digits[show], int(args.clusters), out / "kmeans_greedy.png", idx[show],
                                     "greedy layer-wise convex training: k-means of each block's activation codes "
                                     "on clean test digits", details + [_greedy_line(g)]))
    if "unrolled" in modes:
        u, unet = _unrolled(args, out, data, beta, sigma)
        twin_args = argparse.Namespace(**{**vars(args), "width": int(args.block_width),
                                          "epochs": int(args.unrolled_epochs)})
        _, _, twin, tnet = C.train_unit(twin_args, "gaussian", sigma)
        u["two_layer_twin"] = {"width": int(args.block_width), "epochs": int(args.unrolled_epochs),
                               "objective": twin["objective"], "history": twin["history"],
                               **_scores(tnet.predict(data.noisy_test), data)}
        refs[f"two-layer primal, same width/schedule ({args.block_width} filters, {args.unrolled_epochs} epochs)"] = \
            u["two_layer_twin"]
        u["kmeans"] = _dual_view(unet, digits, args)
        u["kmeans_two_layer_twin"] = to_jsonable(kmeans_analysis(tnet, digits, digits, int(args.clusters), args.seed))
        u["ari_block1_vs_two_layer_twin"] = _ari(u["kmeans"][0]["labels"], u["kmeans_two_layer_twin"]["labels"])
        u["ari_block2_vs_block1"] = _ari(u["kmeans"][1]["labels"], u["kmeans"][0]["labels"]) if len(u["kmeans"]) > 1 else None
        result["unrolled"] = u
        udet = details + [f"unrolled: {args.blocks} x {args.block_width} filters trained end to end by Adam, "
                          f"{args.unrolled_epochs} epochs, lr {args.lr:g}; two-layer twin: {args.block_width} filters, "
                          "same schedule"]
        rows = [(f"two-layer twin\n({u['kmeans_two_layer_twin']['num_paths']} paths)",
                 np.asarray(u["kmeans_two_layer_twin"]["labels"])[show])]
        rows += [(f"unrolled iteration {b + 1}\n({a['num_paths']} paths)", np.asarray(a["labels"])[show])
                 for b, a in enumerate(u["kmeans"])]
        figs.append(plot_kmeans_maps(rows, digits[show], int(args.clusters), out / "kmeans_unrolled.png", idx[show],
                                     "dual view of an end-to-end trained unrolled net (Fig. 5b): k-means of each "
                                     "iteration's activation codes on clean test digits",
                                     udet + [f"adjusted Rand index: iteration 1 vs two-layer twin "
                                             f"{u['ari_block1_vs_two_layer_twin']:.3f}" +
                                             (f"; iteration 2 vs iteration 1 {u['ari_block2_vs_block1']:.3f}"
                                              if u["ari_block2_vs_block1"] is not None else "")]))
        figs.append(_plot_training(u, out / "unrolled_training.png", udet))
    result["references"] = refs
    figs.insert(0, _plot_scores(result, out / "deeper_psnr.png", details))
    lines = _summary(args, result)
    lines += ["", "Figures: " + ", ".join(f.name for f in figs)]
    C.write_outputs(out, "deeper_nets", "deeper-nets", args, {**result, "figures": [f.name for f in figs]}, lines)
    return 0


def _greedy_line(g: dict[str, Any]) -> str:
    return "; ".join(f"block {r['block']}: (4) over {r['P']} patterns sampled on its input, {C.certificate_cell(r)}"
                     for r in g["blocks"])


def _plot_scores(result: dict[str, Any], path: Path, details: list[str]) -> Path:
    fig, axes = pl.new_figure(1, 2, size=(12, 4.8))
    for ax, key, lab in ((axes[0, 0], "test_loss", "test loss / pixel (1/2 MSE, normalised units)"),
                         (axes[0, 1], "test_psnr_db", "mean test PSNR (dB)")):
        if "greedy" in result:
            bl = result["greedy"]["blocks"]
            ax.plot([0] + [r["block"] for r in bl], [result["noisy"][key]] + [r[f"after_{key}"] for r in bl], "C1o-",
                    label="greedy convex blocks (each certified)")
        if "unrolled" in result:
            pb = result["unrolled"]["per_block"]
            ax.plot(range(0, len(pb) + 1), [result["noisy"][key]] + [r[key] for r in pb], "C2s-",
                    label="unrolled, end-to-end Adam (intermediate outputs)")
        for i, (name, r) in enumerate(result["references"].items()):
            ax.axhline(r[key], color=f"C{3 + i}", ls=("--", ":", "-.")[i % 3], lw=1.2, label=f"{name}: {r[key]:.4g}")
        ax.set_xlabel("after block (0 = the noisy input)")
        ax.set_ylabel(lab)
        ax.set_xticks(range(0, 1 + max(len(result.get("greedy", {}).get("blocks", [])),
                                       len(result.get("unrolled", {}).get("per_block", [])))))
        if key == "test_loss":
            ax.set_yscale("log")
        ax.set_title({"test_loss": "test loss after each block", "test_psnr_db": "test PSNR after each block"}[key],
                     fontsize=9)
        ax.legend(fontsize=6)
    pl.set_title(fig, "deeper nets from two-layer blocks (Section 4.3): per block and end to end vs two-layer nets",
                 *details, fontsize=9)
    return pl.save(fig, path)


def _plot_training(u: dict[str, Any], path: Path, details: list[str]) -> Path:
    fig, axes = pl.new_figure(1, 2, size=(12, 4.6))
    h = u["history"]
    ep = [r["epoch"] for r in h]
    tw = u["two_layer_twin"]["history"]
    axes[0, 0].plot(ep, [r["objective"] for r in h], "C2-", label="unrolled (all layers' weight decay)")
    axes[0, 0].plot([r["epoch"] for r in tw], [r["objective"] for r in tw], "C0--", label="two-layer twin, objective (2)")
    axes[0, 0].set_yscale("log")
    axes[0, 0].set_ylabel("objective (1/2 sum r^2 + beta/2 sum theta^2)")
    axes[0, 0].set_title("training objective (exact sum)", fontsize=9)
    nb = len(u["widths"])
    for b in range(nb):
        axes[0, 1].plot(ep, [r[f"test_loss_block{b + 1}"] for r in h], f"C{2 + b}-",
                        label=f"unrolled, after iteration {b + 1}")
    axes[0, 1].plot([r["epoch"] for r in tw], [r["test_loss"] for r in tw], "C0--", label="two-layer twin")
    axes[0, 1].set_yscale("log")
    axes[0, 1].set_ylabel("test loss / pixel (normalised units)")
    axes[0, 1].set_title("test loss during training", fontsize=9)
    for ax in axes[0]:
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    pl.set_title(fig, "unrolled two-layer iterations trained end to end by Adam", *details, fontsize=9)
    return pl.save(fig, path)


def _summary(args: argparse.Namespace, result: dict[str, Any]) -> list[str]:
    lines = [f"Data: {C.data_text(result['data'])}, Gaussian sigma {result['sigma']:g}; {C.beta_rule(args)} "
             "(greedy: recomputed on each block's own input); certified solver "
             f"`{args.solver}`.", "", C.UNITS, "PSNR: mean over test images, dB, peak = each clean image's range.", "",
             "| network | test loss / pixel | test PSNR (dB) | objective | certificate |", "|---|---|---|---|---|",
             f"| noisy input | {C.fmt(result['noisy']['test_loss'])} | {result['noisy']['test_psnr_db']:.2f} | | |"]
    for name, r in result["references"].items():
        lines.append(f"| {name} | {C.fmt(r['test_loss'])} | {r['test_psnr_db']:.2f} | {C.fmt(r.get('objective'))} | |")
    if "greedy" in result:
        g = result["greedy"]
        for r in g["blocks"]:
            lines.append(f"| greedy, after block {r['block']} ({r['width']} neurons, beta {r['beta']:.4g}) | "
                         f"{C.fmt(r['after_test_loss'])} | {r['after_test_psnr_db']:.2f} | {C.fmt(r['objective'])} | "
                         f"{C.certificate_cell(r)} |")
        lines.append(f"| greedy, end to end | {C.fmt(g['end_to_end']['test_loss'])} | "
                     f"{g['end_to_end']['test_psnr_db']:.2f} | | |")
    if "unrolled" in result:
        u = result["unrolled"]
        for b, r in enumerate(u["per_block"]):
            lines.append(f"| unrolled, after iteration {b + 1} ({u['widths'][b]} filters) | {C.fmt(r['test_loss'])} | "
                         f"{r['test_psnr_db']:.2f} | {C.fmt(u['objective']) if b == len(u['per_block']) - 1 else ''} | "
                         "n/a (Adam) |")
    lines += ["", "## Dual view: k-means of activation codes", "",
              "| net / block | paths | distinct codes | mean active paths / pixel | label entropy (bits) |",
              "|---|---|---|---|---|"]
    entries = []
    if "greedy" in result:
        entries += [(f"greedy block {b + 1}", a) for b, a in enumerate(result["greedy"]["kmeans"])]
    if "unrolled" in result:
        entries += [("two-layer twin", result["unrolled"]["kmeans_two_layer_twin"])]
        entries += [(f"unrolled iteration {b + 1}", a) for b, a in enumerate(result["unrolled"]["kmeans"])]
    for name, a in entries:
        lines.append(f"| {name} | {a['num_paths']} | {a['distinct_codes']} | "
                     f"{a['active_paths_per_pixel']['mean']:.1f} | {a['label_entropy_bits']:.2f} |")
    lines.append("")
    if "greedy" in result and result["greedy"].get("ari_block2_vs_block1") is not None:
        lines.append(f"Adjusted Rand index, greedy block 2 vs block 1: {result['greedy']['ari_block2_vs_block1']:.3f}.")
    if "unrolled" in result:
        u = result["unrolled"]
        lines.append(f"Adjusted Rand index, unrolled iteration 1 vs the two-layer twin: "
                     f"{u['ari_block1_vs_two_layer_twin']:.3f}" +
                     (f"; iteration 2 vs iteration 1: {u['ari_block2_vs_block1']:.3f}" if u["ari_block2_vs_block1"]
                      is not None else "") + " (1 = the same partition, 0 = chance).")
    return lines
