"""Column generation with the global oracle as pricing, from the 8x8 target's search-only optimum.

Starts ``generate_patterns(oracle="global")`` from the 304 patterns of the demo-settings N=20
column-generation optimum (``bench_global_oracle.py --part certify``, cached gates in
``results/global_oracle_certify_N20.npz``; that optimum came from descent-search pricing only).
Each round the oracle is seeded with the current net's neurons (``seeds=``), so a descent neuron
next to one of them is found in about a second and added.  Writes
``benchmarks/results/global_oracle_cg.json`` (every round) and ``.png`` (objective per round).

Usage: ``python benchmarks/bench_global_oracle_cg.py [--oracle-time 120] [--rounds 40]``
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_global_oracle as bench  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--oracle-time", type=float, default=120.0, help="seconds of the oracle per round")
    ap.add_argument("--rounds", type=int, default=40)
    args = ap.parse_args()
    import convexdual as cd
    from convexdual.data import add_noise, load_digits_dataset
    from convexdual.pattern_generation import GenerationOptions, generate_patterns

    split = load_digits_dataset(20, 24, seed=0)
    clean = split.train
    noisy = add_noise(clean, "gaussian", 0.5, seed=1)
    gates = np.load(bench.OUT / "global_oracle_certify_N20.npz")["gates"]
    beta = 0.02 * cd.beta_max(noisy, clean, 3, cd.sample_patterns(noisy, 3, 100, seed=0))
    prob = cd.build_problem(noisy, clean, 3, beta, patterns=cd.patterns_from_gates(noisy, 3, gates))
    t = time.perf_counter()
    g = generate_patterns(prob, solver="clarabel-ws",
                          options=GenerationOptions(oracle="global", oracle_time_limit=args.oracle_time,
                                                    max_rounds=args.rounds))
    rounds = [{k: v for k, v in rd.items() if isinstance(v, (int, float, str, type(None)))} for rd in g.rounds]
    out = {"settings": {"instance": "N=20 8x8 demo settings, from the search-only column-generation optimum",
                        "start_patterns": int(len(gates)), "oracle_time_limit_s": args.oracle_time,
                        "max_rounds": args.rounds, "solver": "clarabel-ws", "machine_cpus": __import__("os").cpu_count()},
           "beta": beta, "seconds": time.perf_counter() - t, "summary": g.summary(), "rounds": rounds}
    (bench.OUT / "global_oracle_cg.json").write_text(json.dumps(out, indent=2, default=float))
    print(g.summary(), flush=True)
    plt = bench._plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    obj = np.array([rd["objective"] for rd in rounds])
    ax.plot(np.arange(len(obj)), obj - obj.min(), "o-", ms=3, label="objective - final objective")
    seeded = [i for i, rd in enumerate(rounds) if rd.get("oracle_status") == "descent"]
    ax.plot(seeded, (obj - obj.min())[seeded], "rs", ms=5, label="round priced by the seeded oracle (descent)")
    ax.set_yscale("symlog", linthresh=1e-6)
    ax.set_xlabel("round")
    ax.set_ylabel("objective of (4) above the last round's")
    ax.set_title("8x8 target: column generation with the global oracle after the search-only optimum", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(bench.OUT / "global_oracle_cg.png", dpi=120)


if __name__ == "__main__":
    main()
