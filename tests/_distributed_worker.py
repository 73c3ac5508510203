"""Run under ``torchrun`` by tests/test_distributed.py (also runs as one process): one solve or one
primal training on images sharded over the ranks; rank 0 writes the outcome as JSON."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np


def data(num_images: int) -> tuple[np.ndarray, np.ndarray]:
    from convexdual.data import add_noise, load_digits_dataset

    clean = load_digits_dataset(num_images, 0, seed=0).train
    return add_noise(clean, "gaussian", 0.5, seed=1), clean


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["active_set", "primal"])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--images", type=int, default=10)
    ap.add_argument("--patterns", type=int, default=40)
    ap.add_argument("--beta", type=float, default=2.0)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--groups-per-round", type=int, default=16)
    ap.add_argument("--init-groups", type=int, default=20)
    ap.add_argument("--pid-dir", type=Path, default=None)
    a = ap.parse_args(argv)

    import convexdual as cd
    from convexdual.distributed import build_sharded_problem, init_from_env, shard_images

    comm = init_from_env(timeout_s=120)
    if a.pid_dir is not None:
        (a.pid_dir / f"rank{comm.rank}.pid").write_text(str(os.getpid()))
    noisy, clean = shard_images(comm, *data(a.images))
    if a.mode == "primal":
        from convexdual.train import train_primal

        r = train_primal(noisy, clean, width=16, beta=a.beta, epochs=3, batch_size=4, lr=1e-2, seed=0,
                         comm=comm if comm.world > 1 else None)
        out = {"objective": r.objective, "history": [h["objective"] for h in r.history],
               "weights": [float(w) for w in r.network.conv1.weight.detach().reshape(-1)[:8]]}
    else:
        problem = build_sharded_problem(noisy, clean, 3, a.beta, comm=comm, num_patterns=a.patterns, seed=0)
        opts = {"init_groups": a.init_groups, "groups_per_round": a.groups_per_round}
        if a.checkpoint:
            opts["checkpoint_path"] = a.checkpoint
            if a.resume:
                opts["resume_from"] = a.checkpoint
        res = cd.solve(problem, "active_set", **opts)
        out = {"status": res.status.value, "objective": res.objective, "P": problem.P,
               "relative_gap": res.certificate.relative_gap, "violation": res.certificate.max_violation,
               "recovery_error": res.certificate.recovery_error, "neurons": res.num_groups,
               "iterations": res.iterations, "message": res.message, "W": res.W.tolist(), "Z": res.Z.tolist(),
               "dual_norm2": comm.sum(float(np.sum(np.asarray(res.dual) ** 2))), "n": problem.describe()["n"]}
    if comm.is_root:
        out["world"] = comm.world
        a.out.write_text(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
