"""Summary of the global oracle's CUDA runs on a lent H200 (issue 16; ``run_cuda_checks*.sh``).

Reads the JSON those runs wrote (``results/global_oracle_certify_cuda.json``: CUDA torch path
with batch 32,768 and the old fixed pool against the numba CPU path on the same machine's
16 cores, 100 s each; ``results/cuda/run2_global_oracle_certify_cuda_b*.json``: the CUDA path
with the measured-cost pool at batches 2,048 / 8,192 / 32,768, 45 s each) and writes
``results/global_oracle_cuda_summary.json`` and ``.png``: the certified upper bound over beta
against time, nodes per second, and each run's upper-bound excess over the CPU run's at the
same time (ratios, not absolute seconds).  Runs no solver; the numbers are those files'.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_global_oracle as bench  # noqa: E402


def _at(h, beta, t):
    h = np.asarray(h, dtype=float)
    ok = h[:, 0] <= t
    return float(h[ok][-1, 2] / beta) if ok.any() else None


def main():
    res = bench.OUT
    run1 = json.loads((res / "global_oracle_certify_cuda.json").read_text())
    beta = run1["beta"]
    curves = {"numba CPU, 16 threads (run 1)": run1["runs"]["new_cpu"],
              "CUDA b=32768, fixed pool (run 1)": run1["runs"]["new"]}
    for b in (2048, 8192, 32768):
        f = res / "cuda" / f"run2_global_oracle_certify_cuda_b{b}.json"
        if f.is_file():
            curves[f"CUDA b={b}, measured-cost pool (run 2)"] = json.loads(f.read_text())["runs"]["new"]
    ref = curves["numba CPU, 16 threads (run 1)"]["history"]
    out = {"settings": {"gpu": run1["settings"].get("gpu"), "cpus": run1["settings"]["cpus"],
                        "instance": "N=20 8x8 demo-settings column-generation optimum (n=1280)",
                        "sources": ["global_oracle_certify_cuda.json", "cuda/run2_global_oracle_certify_cuda_b*.json"]},
           "beta": beta, "runs": {}}
    for name, r in curves.items():
        e = {"seconds": r["seconds"], "nodes": r["nodes"], "nodes_per_second": r["nodes_per_second"],
             "upper_over_beta_at": {}, "excess_over_cpu_excess_at": {}}
        for t in (30, 45, 60, 100):
            if t <= r["seconds"] + 1:
                u, c = _at(r["history"], beta, t), _at(ref, beta, t)
                e["upper_over_beta_at"][str(t)] = u
                if u is not None and c is not None and np.isfinite(u) and np.isfinite(c):
                    e["excess_over_cpu_excess_at"][str(t)] = (u - 1) / (c - 1)
        out["runs"][name] = e
        print(name, e, flush=True)
    (res / "global_oracle_cuda_summary.json").write_text(json.dumps(out, indent=2))
    plt = bench._plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    for k, (name, r) in enumerate(curves.items()):
        h = np.asarray(r["history"], dtype=float)
        ok = np.isfinite(h[:, 2])
        ax.plot(h[ok, 0], h[ok, 2] / beta, f"C{k}", label=f"{name}: {r['nodes_per_second']:.0f} nodes/s")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xlabel("seconds (wall clock)")
    ax.set_ylabel("certified upper bound on M* / beta")
    ax.set_yscale("log")
    ax.set_title(f"Global oracle on {out['settings']['gpu']} vs its host's 16 cores, N=20 8x8 target", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(res / "global_oracle_cuda_summary.png", dpi=120)


if __name__ == "__main__":
    main()
