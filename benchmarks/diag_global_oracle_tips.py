"""Do the target's tips (its neurons) rise in a neighbouring sign-pattern cell?

For each of six neurons of the N=20 8x8 column-generation optimum (the tips of
``diag_global_oracle_regions.py --part scaling``): the rows on its hyperplanes, and for each
sign pattern of them the maximum of that cell's linear piece over its cone (non-negative least
squares, ``global_oracle._cell_maxima`` as in the tip probe and the fan bound), then ``|f|`` exactly on the
segment from the tip towards the worst cell's maximiser.  Writes
``benchmarks/results/global_oracle_tips.json`` and ``.png``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_global_oracle as bench  # noqa: E402
from convexdual.global_oracle import _cell_maxima, _prepare  # noqa: E402


def main():
    prob, res, X, r, beta = bench.certify_instance(bench.OUT / "global_oracle_certify_N20.npz")
    Xh, rh = _prepare(np.asarray(X), np.asarray(r).ravel())
    tips = []
    for M, sg in ((np.asarray(res.W), 1.0), (np.asarray(res.Z), -1.0)):
        nrm = np.linalg.norm(M, axis=1)
        tips += [(M[j] / nrm[j], sg) for j in np.nonzero(nrm > 1e-6 * nrm.max())[0]]
    out = {"settings": {"instance": "N=20 8x8 column-generation optimum", "tips": len(tips)},
           "beta": beta, "tips": []}
    for k in (0, 5, 10, 15, 20, 26):
        u, sg = tips[k]
        R = sg * rh
        a = Xh @ u
        U = np.nonzero(np.abs(a) < 1e-7 * np.linalg.norm(Xh, axis=1))[0]
        pos = (a > 0) & ~np.isin(np.arange(len(a)), U)
        c = R[pos] @ Xh[pos]
        worst, us = 0.0, u
        for _, v in _cell_maxima(Xh, R, c, U):
            if np.linalg.norm(v) > worst:
                worst, us = float(np.linalg.norm(v)), v / np.linalg.norm(v)
        seg = 0.0
        for t in np.geomspace(1e-6, 1, 25):
            w = u + t * (us - u)
            w /= np.linalg.norm(w)
            seg = max(seg, float(R @ np.maximum(Xh @ w, 0.0)))
        e = {"tip": k, "sign": sg, "rows_on_hyperplanes": int(len(U)), "f_tip_over_beta": float(R @ np.maximum(a, 0)) / beta,
             "fan_max_over_beta": worst / beta, "angle_to_cell_max_deg": float(np.degrees(np.arccos(np.clip(us @ u, -1, 1)))),
             "best_f_on_segment_over_beta": seg / beta}
        out["tips"].append(e)
        print(e, flush=True)
    (bench.OUT / "global_oracle_tips.json").write_text(__import__("json").dumps(out, indent=2))
    plt = bench._plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    ks = [str(e["tip"]) for e in out["tips"]]
    ax.bar(ks, [e["best_f_on_segment_over_beta"] - 1 for e in out["tips"]], label="best |f|/beta - 1 near the tip")
    ax.axhline(1e-6, color="k", lw=0.8, label="oracle threshold 1e-6")
    ax.set_yscale("symlog", linthresh=1e-10)
    ax.set_xlabel("tip (neuron of the column-generation optimum)")
    ax.set_ylabel("|f| / beta - 1")
    ax.set_title("N=20 8x8 target: rise of |f| in cells next to the net's neurons", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(bench.OUT / "global_oracle_tips.png", dpi=120)


if __name__ == "__main__":
    main()
