"""CS-MRI: residual 7x7 denoiser trained primal (Adam) vs dual (convex program), fastMRI pipeline.

Reproduces Section 5.2 / Appendix B.4-B.5 of the paper (docs/math.md §9) at a size this
machine can solve: multi-coil k-space (real fastMRI files with ``--data DIR``, or
simulated ones with ``--simulate``) -> Poisson-disc undersampling at each acceleration
-> JSENSE maps -> SENSE zero-filled input and fully sampled target -> real/imaginary
examples -> the same objective (2) minimised by Adam (primal) and by program (4)
through ``cd.solve`` (dual), then PSNR/SSIM/NMSE (fastMRI definitions) on test slices.

The dual's pattern set is ``--patterns`` sampled Gaussian gates plus (unless
``--no-primal-patterns``) the primal net's own filters used as gates, so the convex
program contains the primal solution and its certified optimum can be compared to the
primal objective directly.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import resource
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["add_arguments", "run", "run_acceleration", "StepLog"]

logger = logging.getLogger(__name__)


def _rss_mb() -> float:
    """Resident memory of this process now (MB), from /proc/self/statm (0 where unavailable)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


class StepLog:
    """Wall time and peak resident memory of each named step of a run.

    ``with log.step("dual solve"): ...`` records ``{"seconds", "peak_rss_mb", "start_rss_mb"}``
    under the name: the peak is the largest resident size seen by a sampling thread (every
    ``interval`` seconds, plus the start and the end of the step), so a step's own peak is
    measured rather than the process's lifetime maximum. Steps are logged at INFO as they end.
    """

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = float(interval)
        self.steps: dict[str, dict[str, float]] = {}

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        start = _rss_mb()
        peak = [start]
        done = threading.Event()

        def sample() -> None:
            while not done.wait(self.interval):
                peak[0] = max(peak[0], _rss_mb())

        th = threading.Thread(target=sample, name=f"rss:{name}", daemon=True)
        logger.info("step %s ...", name)
        t0 = time.perf_counter()
        th.start()
        try:
            yield
        finally:
            done.set()
            th.join()
            peak[0] = max(peak[0], _rss_mb())
            self.steps[name] = {"seconds": time.perf_counter() - t0, "peak_rss_mb": peak[0], "start_rss_mb": start}
            logger.info("step %s: %.1f s, peak RSS %.0f MB", name, self.steps[name]["seconds"], peak[0])

_SMOKE = dict(accelerations=[4.0], sim_shape=32, sim_coils=4, sim_slices=2, train_volumes=1, test_volumes=1,
              crop=24, train_crop=12, train_slices=1, train_tiles=1, calib=8, width=8, epochs=100, patterns=8, lr=3e-3,
              beta_frac=0.3, sim_noise=0.0)


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", type=Path, help="directory of fastMRI multi-coil .h5 files (or with train/ and "
                     "val/ or test/ subdirectories)")
    src.add_argument("--simulate", action="store_true", help="simulate multi-coil data offline (SigPy)")
    src.add_argument("--smoke", action="store_true", help="tiny simulated run for tests (well under a minute)")
    p.add_argument("--out", type=Path, default=Path("results/mri"), help="output directory")
    p.add_argument("--accelerations", type=float, nargs="+", default=[4.0, 8.0])
    p.add_argument("--mask", choices=["poisson", "random"], default="poisson")
    p.add_argument("--calib", type=int, default=24, help="calibration block side (poisson) / map calibration width")
    p.add_argument("--center-fraction", type=float, default=0.08, help="central columns (random mask)")
    p.add_argument("--maps", choices=["jsense", "espirit"], default="jsense")
    p.add_argument("--crop", type=int, default=64, help="centre crop of the combined images (fastMRI: 320)")
    p.add_argument("--train-crop", type=int, default=32, help="side of the training tiles cut from the crops")
    p.add_argument("--train-slices", type=int, default=2, help="training slices (the first ones of the train set)")
    p.add_argument("--train-tiles", type=int, default=None, help="keep this many train-crop tiles (most "
                   "energetic input); each tile gives 2 examples (real, imaginary); default all")
    p.add_argument("--test-fraction", type=float, default=0.2, help="volumes held out when --data has no split")
    p.add_argument("--skip-edge", type=int, default=0, help="drop this many edge slices per volume")
    p.add_argument("--sim-shape", type=int, default=80)
    p.add_argument("--sim-coils", type=int, default=8)
    p.add_argument("--sim-slices", type=int, default=4)
    p.add_argument("--sim-noise", type=float, default=0.0, help="k-space noise std relative to the image max")
    p.add_argument("--sim-source", choices=["shepp_logan", "skimage"], default="shepp_logan")
    p.add_argument("--train-volumes", type=int, default=2)
    p.add_argument("--test-volumes", type=int, default=1)
    p.add_argument("--width", type=int, default=1024, help="primal filters (paper: 1,024)")
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-slices", type=int, default=1, help="slices per Adam batch (paper: batch 2 = 1 slice)")
    p.add_argument("--stream", action="store_true", help="stream primal batches from the on-disk cache")
    p.add_argument("--patterns", type=int, default=30, help="sampled sign patterns (paper: 5,000)")
    p.add_argument("--no-primal-patterns", action="store_true", help="do not add the primal filters as gates")
    p.add_argument("--beta-frac", type=float, default=0.05, help="beta = this * beta_max of the training set")
    p.add_argument("--solver", default="clarabel", help="a name from convexdual.available_solvers() or 'auto'")
    p.add_argument("--solver-options", type=json.loads, default=None, metavar="JSON",
                   help='options of the dual solver by name, e.g. \'{"groups_per_round": 64}\'')
    p.add_argument("--dual-time-limit", type=float, default=None, help="seconds for the dual solve (None: no limit)")
    p.add_argument("--primal-time-limit", type=float, default=None, help="stop Adam after this many seconds")
    p.add_argument("--eval-every", type=int, default=None, help="epochs between the primal's full objective and "
                   "test-loss evaluations (default: epochs // 25)")
    p.add_argument("--no-reuse", action="store_true", help="re-simulate, re-prepare and retrain even when the "
                   "simulated files, slice caches or primal net in --out were made from the same inputs")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1) for primal training, the dual's "
                   "operator passes and certificate, and inference")


def _apply_smoke(args: argparse.Namespace) -> argparse.Namespace:
    a = argparse.Namespace(**vars(args))
    for k, v in _SMOKE.items():
        setattr(a, k, v)
    a.simulate, a.sim_source = True, "shepp_logan"
    return a


def _datasets(args: argparse.Namespace) -> tuple[list[Path], list[Path], str]:
    from convexdual.mri.fastmri import list_volumes
    from convexdual.mri.simulate import SimulationSpec, simulate_dataset

    if args.data is not None:
        d = Path(args.data)
        test_dir = next((d / s for s in ("test", "val") if (d / s).is_dir()), None)
        if (d / "train").is_dir() and test_dir is not None:
            return list_volumes(d / "train"), list_volumes(test_dir), f"fastMRI files in {d}"
        files = list_volumes(d)
        if len(files) < 2:
            raise ValueError(f"{d} holds {len(files)} volume; need >= 2 to split train/test (or train/ + val/)")
        n_test = max(1, int(round(args.test_fraction * len(files))))
        return files[:-n_test], files[-n_test:], f"fastMRI files in {d} (last {n_test} volumes held out)"
    spec = SimulationSpec(shape=(args.sim_shape, args.sim_shape), num_coils=args.sim_coils,
                          num_slices=args.sim_slices, source=args.sim_source, noise=args.sim_noise)
    root = args.out / "data"
    reuse = not getattr(args, "no_reuse", False)
    train = simulate_dataset(root / "train", args.train_volumes, spec, seed=args.seed, reuse=reuse)
    test = simulate_dataset(root / "test", args.test_volumes, spec, seed=args.seed + 1000, reuse=reuse)
    return train, test, f"simulated ({args.sim_source}, {args.sim_coils} birdcage coils, {spec.shape})"


def _tiles(zf: np.ndarray, tg: np.ndarray, size: int, keep: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping ``size`` x ``size`` tiles of each slice; keep the ``keep`` tiles whose zero-filled
    input has the most energy (skips empty background); all when ``keep`` is None. ``(S, h, w)`` -> ``(T, size, size)``."""
    h, w = zf.shape[1:]
    pos = [(i, j) for i in range(0, h - size + 1, size) for j in range(0, w - size + 1, size)]
    a = np.stack([z[i : i + size, j : j + size] for z in zf for i, j in pos])
    b = np.stack([t[i : i + size, j : j + size] for t in tg for i, j in pos])
    if keep is not None and keep < len(a):
        order = np.sort(np.argsort(-np.sum(np.abs(a) ** 2, axis=(1, 2)))[: int(keep)])
        a, b = a[order], b[order]
    return a, b


def _predict_complex(net, zf: np.ndarray) -> tuple[np.ndarray, float]:
    """Net applied to real and imaginary parts of ``(S, h, w)`` complex; returns (complex, seconds)."""
    from convexdual.mri.prepare import from_examples, to_examples

    x, _ = to_examples(zf, zf)
    t0 = time.perf_counter()
    out = net.predict(x, batch_size=8)
    return from_examples(out), time.perf_counter() - t0


def _evaluate(cache, nets: dict[str, Any]) -> tuple[dict, dict, dict]:
    """Per-volume fastMRI metrics (in the original intensity units), averaged over volumes."""
    from convexdual.mri.metrics import volume_metrics

    by_vol: dict[str, list[int]] = defaultdict(list)
    for i, v in enumerate(cache.volumes):
        by_vol[v].append(i)
    scales = cache.scales
    per: dict[str, list[dict]] = defaultdict(list)
    seconds: dict[str, float] = defaultdict(float)
    example = {}
    for vol, idx in by_vol.items():
        zf, tg = cache.slices(idx)
        s = scales[np.sort(idx)][:, None, None]
        gt = np.abs(tg) * s
        recs = {"zero_filled": np.abs(zf) * s}
        for name, net in nets.items():
            pred, sec = _predict_complex(net, zf)
            recs[name] = np.abs(pred) * s
            seconds[name] += sec
        for name, rec in recs.items():
            per[name].append(volume_metrics(gt, rec))
        if not example:
            mid = len(idx) // 2
            example = {"gt": gt[mid], "images": {k: v[mid] for k, v in recs.items()}, "volume": vol}
    mean = {name: {k: float(np.mean([m[k] for m in ms])) for k in ms[0]} for name, ms in per.items()}
    secs = {name: seconds[name] / cache.num_slices for name in nets}
    return mean, secs, example


def _per_pixel_loss(net, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((net.predict(x, batch_size=8) - y) ** 2) / 2.0)


def _primal_key(args: argparse.Namespace, x: np.ndarray, y: np.ndarray, beta: float, eval_every: int) -> str:
    """What the primal net depends on: the training data, beta and the Adam settings."""
    h = hashlib.sha256()
    for a in (x, y):
        h.update(repr(a.shape).encode())
        h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
    h.update(json.dumps({"beta": float(beta), "width": args.width, "epochs": args.epochs, "lr": args.lr,
                         "batch_slices": args.batch_slices, "seed": args.seed, "stream": bool(args.stream),
                         "eval_every": eval_every, "time_limit": args.primal_time_limit,
                         "device": str(args.device)}, sort_keys=True).encode())
    return h.hexdigest()


def _dedup_chunk_mb(n: int) -> float:
    """Masks hashed per chunk when deduplicating gates: ~48 gates at a time, within 1 GB."""
    return float(min(1024.0, max(64.0, 48 * 9.0 * n / 2**20)))


def run_acceleration(args: argparse.Namespace, R: float, train_files: list[Path], test_files: list[Path],
                     source: str = "", comm: Any = None) -> dict:
    """One acceleration: prepare caches, train primal and dual on the same data, evaluate.

    ``source`` (the data's description) goes into the figure titles. Every step's wall time and
    peak resident memory go into ``out["steps"]``. ``comm``: the torchrun group (None: one
    process): the slice caches are written by each machine's first rank, the primal's Adam runs
    under DistributedDataParallel and a dual solver that shards (``active_set``, ``auto``) runs on
    the training examples split over the ranks; every rank then holds the same record, and only
    rank 0 writes files.
    """
    import convexdual as cd
    from convexdual.api import resolve_solver
    from convexdual.checkpoint import problem_fingerprint
    from convexdual.experiments import _mri_figures as figs
    from convexdual.mri.fastmri import iter_slice_refs
    from convexdual.mri.masks import MaskSpec
    from convexdual.mri.prepare import PrepOptions, SliceCache, build_cache, to_examples
    from convexdual.nets import TwoLayerConvNet, primal_objective
    from convexdual.patterns import SignPatterns, data_key, unique_gates
    from convexdual.distributed import shard_images
    from convexdual.train import train_primal

    tag = f"R{R:g}"
    crop = (args.crop, args.crop)
    reuse = not getattr(args, "no_reuse", False)
    log = StepLog()
    opts = PrepOptions(mask=MaskSpec(args.mask, R, calib=args.calib, center_fraction=args.center_fraction,
                                     seed=args.seed), map_method=args.maps, calib_width=args.calib, crop=crop)
    cache_dir = args.out / "cache"
    writer = comm is None or comm.rank == 0
    with log.step("prepare train slices"):
        prep_train = _machine_first(comm, lambda: build_cache(iter_slice_refs(train_files, skip_edge=args.skip_edge),
                                                              cache_dir / f"train_{tag}.h5", opts, reuse=reuse))
    with log.step("prepare test slices"):
        prep_test = _machine_first(comm, lambda: build_cache(iter_slice_refs(test_files, skip_edge=args.skip_edge),
                                                             cache_dir / f"test_{tag}.h5", opts, reuse=reuse))
    out: dict[str, Any] = {"acceleration": R, "prep_options": {**asdict(opts), "mask": asdict(opts.mask)},
                           "prep_train": prep_train, "prep_test": prep_test, "steps": log.steps}
    with SliceCache(cache_dir / f"train_{tag}.h5") as train_cache, SliceCache(cache_dir / f"test_{tag}.h5") as test_cache:
        ns = min(args.train_slices, train_cache.num_slices)
        with log.step("load training examples"):
            zf, tg = train_cache.slices(slice(0, ns))
            x, y = to_examples(*_tiles(zf, tg, args.train_crop, args.train_tiles))
            del zf, tg
            xt, yt = test_cache.examples()
        n = int(x.shape[0] * x.shape[2] * x.shape[3])
        # sampled gates: the same draw as cd.sample_patterns(x, 7, P, seed); beta_max is a maximum over
        # the gates, so duplicates do not change it and the one deduplication pass comes after the primal
        d = int(x.shape[1]) * 49
        gates = np.random.default_rng(args.seed).standard_normal((int(args.patterns), d))
        with log.step("beta_max"):
            bmax = cd.beta_max(x, y, 7, SignPatterns(gates=gates, num_requested=len(gates), source="sampled",
                                                     info={"deduplicated": False}), residual=True)
        beta = args.beta_frac * bmax
        out["training_set"] = {"slices": ns, "tiles": int(x.shape[0] // 2), "examples": int(x.shape[0]),
                               "shape": list(x.shape[2:]), "n": n, "beta": beta, "beta_max": bmax}
        logger.info("training set: %d examples of %s, n = %d; beta = %.4g (beta_max %.4g)", x.shape[0],
                    list(x.shape[2:]), n, beta, bmax)
        # ---- primal: Adam on (2) --------------------------------------------------
        eval_every = args.eval_every or max(1, args.epochs // 25)
        primal_path = cache_dir / f"primal_{tag}.pt"
        pkey = _primal_key(args, x, y, beta, eval_every)
        primal_reused = False
        if reuse and primal_path.is_file():
            try:
                net, meta = TwoLayerConvNet.load(primal_path)
                if meta.get("key") == pkey:
                    primal_net, history = net, meta["history"]
                    primal_epochs, primal_seconds, primal_reused = int(meta["epochs"]), float(meta["seconds"]), True
                    logger.info("reusing the primal net %s (same data, beta and Adam settings)", primal_path)
            except Exception as exc:  # a stale or unreadable file is simply retrained
                logger.info("not reusing %s: %s", primal_path, exc)
        if comm is not None and comm.max(0.0 if primal_reused else 1.0) > 0:
            primal_reused = False  # a rank without the file: every rank trains (DDP needs them all)
        if not primal_reused:
            with log.step("primal (Adam)"):
                t0 = time.perf_counter()
                if args.stream and comm is not None:
                    raise ValueError("--stream trains in one process; under torchrun drop --stream (the primal then "
                                     "runs under DistributedDataParallel on the training examples split over the ranks)")
                if args.stream:
                    from convexdual.mri.stream import train_primal_streaming

                    # the whole training cache, one batch of slices read from disk per step (a different,
                    # larger training set than the dual's tiles: the objectives are then not comparable)
                    pr = train_primal_streaming(train_cache, width=args.width, beta=beta, epochs=args.epochs,
                                                slices_per_batch=args.batch_slices, lr=args.lr, seed=args.seed,
                                                device=args.device, time_limit=args.primal_time_limit)
                else:
                    xs, ys = shard_images(comm, x, y)
                    test = shard_images(comm, xt, yt) if comm is None or len(xt) >= comm.world else None
                    pr = train_primal(xs, ys, width=args.width, kernel_size=7, beta=beta, residual=True,
                                      epochs=args.epochs, batch_size=2 * args.batch_slices, lr=args.lr, seed=args.seed,
                                      device=args.device, eval_every=eval_every, test=test,
                                      time_limit=args.primal_time_limit, comm=comm)
                primal_seconds = time.perf_counter() - t0
                history = [dict(h) for h in pr.history]
                primal_net, primal_epochs = pr.network.to("cpu"), int(pr.epochs)
            if writer:
                primal_net.save(primal_path, {"key": pkey, "history": history, "epochs": primal_epochs,
                                              "seconds": primal_seconds})
        loss = cd.get_loss("squared")
        with log.step("primal objective and losses"):
            primal_obj = primal_objective(primal_net, x, y, beta, loss)
            primal_train_loss = _per_pixel_loss(primal_net, x, y)
            primal_test_loss = _per_pixel_loss(primal_net, xt, yt)
        # ---- dual: program (4) --------------------------------------------------------
        with log.step("patterns (one deduplication pass)"):
            all_gates = gates if args.no_primal_patterns else np.concatenate([gates, primal_net.filters()[0]])
            keep = unique_gates(x, 7, all_gates, chunk_mb=_dedup_chunk_mb(n))
            n_sampled = int(np.count_nonzero(keep < len(gates)))
            pats = SignPatterns(gates=all_gates[keep], exact=False, num_requested=len(all_gates),
                                source="sampled" if args.no_primal_patterns else "sampled+primal filters",
                                data_key=data_key(x, 7), info={"deduplicated": True, "unique": int(len(keep))})
        with log.step("build problem"):
            problem = cd.build_problem(x, y, 7, beta, patterns=pats, residual=True)
            backend, _ = resolve_solver(args.solver, problem)
            if comm is not None:
                if getattr(backend, "sharded", False):
                    from convexdual.distributed import build_sharded_problem

                    problem = build_sharded_problem(*shard_images(comm, x, y), 7, beta, comm=comm, gates=pats.gates,
                                                    residual=True)
                else:
                    logger.warning("dual solver %r does not shard over ranks: every rank solves the whole program "
                                   "(use --solver active_set or auto to split it)", backend.name)
        fields = {f.name for f in __import__("dataclasses").fields(backend.options_class)}
        sopts = dict(args.solver_options or {})
        if args.dual_time_limit is not None:
            sopts.setdefault("time_limit", float(args.dual_time_limit))
        if "checkpoint_path" in fields:  # a dual solve that was cut short resumes from its checkpoint
            ckpt = cache_dir / f"dual_{tag}_{problem_fingerprint(problem)[:16]}_{backend.name}.ckpt"
            sopts.setdefault("checkpoint_path", str(ckpt))
            if reuse and ckpt.is_file():
                sopts.setdefault("resume_from", str(ckpt))
                logger.info("dual: resuming from %s", ckpt)
        with log.step("dual solve (+ recovery and certificate)"):
            res = cd.solve(problem, solver=args.solver, options=sopts or None, device=args.device)
        dual_seconds = log.steps["dual solve (+ recovery and certificate)"]["seconds"]
        cert = res.certificate
        out["primal"] = {"width": args.width, "epochs": primal_epochs, "seconds": primal_seconds,
                         "objective": primal_obj, "train_loss": primal_train_loss, "test_loss": primal_test_loss,
                         "streamed": bool(args.stream), "reused": primal_reused, "history": history,
                         "objective_note": ("objective (2) on the dual's training tiles; the streamed primal was "
                                            "trained on the whole training cache") if args.stream else ""}
        out["dual"] = {"status": str(res.status), "solver": args.solver, "backend": backend.name,
                       "solver_options": {k: v for k, v in sopts.items()}, "seconds": dual_seconds,
                       "iterations": res.iterations, "patterns": problem.P, "sampled_patterns": n_sampled,
                       "sampled_gates": int(len(gates)), "objective": res.objective, "message": res.message,
                       "over": (f"over the {n_sampled} sampled patterns"
                                + ("" if args.no_primal_patterns else f" + the primal net's own ({problem.P} in all)"))}
        if res.status.has_solution and res.network is not None:
            dual_net = res.network.to("cpu")
            with log.step("dual objective and losses"):
                out["dual"].update({"certificate": cert.to_dict() if cert else None,
                                    "network_objective": primal_objective(dual_net, x, y, beta, loss),
                                    "num_neurons": dual_net.width,
                                    "train_loss": _per_pixel_loss(dual_net, x, y),
                                    "test_loss": _per_pixel_loss(dual_net, xt, yt)})
            bound = cert.dual_bound if cert else res.objective
            out["comparison"] = None if args.stream else {"dual_bound_minus_primal_rel": (bound - primal_obj) / abs(primal_obj),
                                 "dual_objective_minus_primal_rel": (res.objective - primal_obj) / abs(primal_obj)}
            nets = {"primal": primal_net, "dual": dual_net}
        else:
            logger.warning("dual solve at R=%g returned %s: no dual network to evaluate", R, res.status)
            out["dual"]["certificate"] = cert.to_dict() if cert else None
            nets = {"primal": primal_net}
        del problem
        with log.step("evaluate test volumes"):
            metrics, infer, example = _evaluate(test_cache, nets)
        out["test_metrics"] = metrics
        out["seconds_inference_per_slice"] = infer
        out["test_slices"] = test_cache.num_slices
        out["bytes_image_per_slice"] = int(np.prod(crop)) * 16 * 2
    # ---- figures ------------------------------------------------------------------
    if not writer:
        return out
    title = f"CS-MRI, R = {R:g}, {args.mask} mask, {args.maps} maps"
    details = _figure_details(args, out, source or "data: see mri.json")
    out["figures"] = [str(figs.reconstruction_figure(
                          args.out / f"recon_{tag}.png", example["images"], example["gt"], metrics,
                          f"{title}: test volume {example['volume']}, middle slice",
                          details=details).name),
                      str(figs.loss_curves_figure(args.out / f"loss_{tag}.png", history, out["dual"],
                                                  f"{title}: per-pixel losses", details=details,
                                                  dual_label=f"dual, {out['dual']['over']}").name)]
    if res.status.has_solution and res.W is not None:
        out["figures"].append(str(figs.filter_response_figure(args.out / f"dual_filters_{tag}.png", res.W, res.Z, 7,
                                                              title, details=details).name))
    return out


def _machine_first(comm: Any, make):
    """``make()`` (which writes files, or finds them made from the same inputs) on the first rank of
    each machine before the other ranks there, so the ranks of a machine never write one file
    together; one process: just ``make()``."""
    if comm is None:
        return make()
    first = int(os.environ.get("LOCAL_RANK", comm.rank)) == 0
    out = make() if first else None
    comm.barrier()
    return out if first else make()


def _figure_details(args: argparse.Namespace, out: dict, source: str) -> list[str]:
    """The lines under each figure's headline: data, training set and beta rule, nets and pattern set."""
    t, d = out["training_set"], out["dual"]
    cert = d.get("certificate") or {}
    verdict = (f"optimal {d['over']} (certified, rel. gap {cert.get('relative_gap', float('nan')):.1e})"
               if d["status"] == "optimal" and cert.get("ok") else f"{d['status']} (not certified) {d['over']}")
    return [f"{source}; {out['test_slices']} test slices, {args.crop}x{args.crop} crops",
            f"training: {t['slices']} slice(s) -> {t['tiles']} tiles of {t['shape'][0]}x{t['shape'][1]} "
            f"({t['examples']} real/imaginary examples); residual 7x7 net; beta = {args.beta_frac:g} x beta_max "
            f"over the {d['sampled_patterns']} sampled patterns = {t['beta']:.4g}",
            f"primal: {args.width} filters, Adam {out['primal']['epochs']} epochs; dual: program (4) solved by "
            f"{d.get('backend', args.solver)}, "
            f"{verdict}"]


def _verdict(d: dict) -> str:
    cert = d.get("certificate") or {}
    if d.get("status") == "optimal" and cert.get("ok"):
        if cert.get("scope") == "exact":
            return "globally optimal (exact enumeration)"
        return f"optimal {d.get('over', 'over the sampled patterns')}"
    return f"{d.get('status')} (not certified)"


def _summary(result: dict) -> str:
    cfg = result.get("config", {})
    lines = [f"# CS-MRI: primal vs dual ({result['source']})", "",
             "| R | set | PSNR ZF | PSNR primal | PSNR dual | SSIM ZF | SSIM primal | SSIM dual | "
             "obj primal | obj dual (bound) | gap | dual status |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for r in result["runs"]:
        m = r["test_metrics"]
        d = r["dual"]
        cert = d.get("certificate") or {}
        get = lambda name, k: m.get(name, {}).get(k, float("nan"))  # noqa: E731
        lines.append(
            f"| {r['acceleration']:g} | {r['test_slices']} test slices | {get('zero_filled', 'psnr'):.2f} | "
            f"{get('primal', 'psnr'):.2f} | {get('dual', 'psnr'):.2f} | {get('zero_filled', 'ssim'):.4f} | "
            f"{get('primal', 'ssim'):.4f} | {get('dual', 'ssim'):.4f} | {r['primal']['objective']:.6g} | "
            f"{d.get('objective', float('nan')):.6g} ({cert.get('dual_bound', float('nan')):.6g}) | "
            f"{cert.get('relative_gap', float('nan')):.1e} | {_verdict(d)} |")
        t = r.get("training_set", {})
        notes.append(f"R={r['acceleration']:g}: beta = {cfg.get('beta_frac', float('nan')):g} x beta_max over the "
                     f"{d.get('sampled_patterns')} sampled patterns = {t.get('beta', float('nan')):.4g}; training set "
                     f"{t.get('examples')} real/imaginary examples of {t.get('shape')}; dual program (4) over "
                     f"{d.get('patterns')} patterns ({d.get('over', 'see mri.json')}).")
    lines += ["", "PSNR in dB and SSIM on magnitude images in the original intensity units, fastMRI definitions "
              "(data range = the ground-truth volume's maximum), averaged over test volumes. Objectives are exact "
              "sums of (2)/(4) on the dual's training tiles (1/2 sum of squared residuals + weight decay); a dual "
              "optimum holds over its own pattern set only.", ""] + notes
    lines += ["", "| R | NMSE ZF | NMSE primal | NMSE dual | primal epochs | dual patterns | dual neurons |",
              "|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        m = r["test_metrics"]
        get = lambda name, k: m.get(name, {}).get(k, float("nan"))  # noqa: E731
        lines.append(f"| {r['acceleration']:g} | {get('zero_filled', 'nmse'):.4f} | {get('primal', 'nmse'):.4f} | "
                     f"{get('dual', 'nmse'):.4f} | {r['primal']['epochs']} | {r['dual'].get('patterns')} | "
                     f"{r['dual'].get('num_neurons', '-')} |")
    for r in result["runs"]:
        steps = r.get("steps") or {}
        if steps:
            lines += ["", f"Steps at R = {r['acceleration']:g} (wall seconds, peak resident MB during the step):", "",
                      "| step | seconds | peak RSS MB |", "|---|---|---|"]
            lines += [f"| {k} | {v['seconds']:.1f} | {v['peak_rss_mb']:.0f} |" for k, v in steps.items()]
    lines += ["", f"Peak resident memory {result['peak_rss_mb']:.0f} MB; total {result['seconds']:.1f} s.",
              "Per slice (seconds): " + "; ".join(
                  f"R={r['acceleration']:g}: prepare {r['prep_train']['seconds_per_slice']:.3f} "
                  f"(maps {r['prep_train']['seconds_maps_per_slice']:.3f}), inference "
                  + ", ".join(f"{k} {v:.4f}" for k, v in r["seconds_inference_per_slice"].items())
                  for r in result["runs"]), ""]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.smoke:
        args = _apply_smoke(args)
    elif args.data is None and not args.simulate:
        raise ValueError("choose the data: --data DIR (fastMRI files), --simulate, or --smoke")
    if args.train_crop > args.crop:
        raise ValueError(f"--train-crop ({args.train_crop}) must be at most --crop ({args.crop})")
    args.out.mkdir(parents=True, exist_ok=True)
    from convexdual._threads import torch_threads

    from convexdual._io import atomic_write_json, atomic_write_text
    from convexdual.distributed import in_torchrun, init_from_env

    comm = init_from_env(device=str(args.device)) if in_torchrun() else None
    writer = comm is None or comm.rank == 0
    t0 = time.perf_counter()
    with torch_threads(getattr(args, "threads", None)):
        simlog = StepLog()
        with simlog.step("data (simulate or list files)"):
            train_files, test_files, source = _machine_first(comm, lambda: _datasets(args))
        runs = []
        for R in args.accelerations:
            runs.append(run_acceleration(args, float(R), train_files, test_files, source, comm=comm))
            # each acceleration's numbers are on disk as soon as it is done (a later one may not finish)
            if writer:
                atomic_write_json(args.out / f"mri_R{float(R):g}.json", runs[-1])
    result = {"experiment": "mri", "source": source, "smoke": bool(args.smoke),
              "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "func"},
              "train_files": [p.name for p in train_files], "test_files": [p.name for p in test_files],
              "data_step": simlog.steps, "runs": runs, "seconds": time.perf_counter() - t0,
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
              "ranks": 1 if comm is None else int(comm.world)}
    if writer:
        atomic_write_json(args.out / "mri.json", result)
        atomic_write_text(args.out / "mri.md", _summary(result))
        print(_summary(result))
    return 0
