"""noise-robustness: Gaussian vs heavy-tailed exponential noise, 25-filter primal vs sampled-pattern dual (App. B.1).

Same protocol as zero-gap for two noise models. The paper found the objectives equal
under Gaussian noise and the primal stuck above the dual under exponential noise.
The certified solve over the sampled patterns plus the primal's own patterns shows
directly how far the primal is from the best network its own patterns allow.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from convexdual.experiments.mnist import common as C
from convexdual.experiments.mnist.zero_gap import TOLERANCE, plot_units, run_unit, summary_table

__all__ = ["add_arguments", "run", "FULL", "SMOKE"]

FULL: dict[str, Any] = {"num_train": 600, "num_test": 0, "sigmas": "0.5", "width": 25, "epochs": 100,
                        "lr": 1e-2, "num_patterns": "8000", "baseline_epochs": 100}
SMOKE: dict[str, Any] = {"num_train": 4, "num_test": 8, "sigmas": "0.5", "width": 25, "epochs": 80,
                         "lr": 1e-2, "num_patterns": "24", "baseline_epochs": 40}


def add_arguments(p: argparse.ArgumentParser) -> None:
    C.add_common_arguments(p, FULL, SMOKE)
    p.add_argument("--exp-scale", type=float, default=None,
                   help="scale (1/rate) of the exponential noise (default: the Gaussian sigma)")


def run(args: argparse.Namespace) -> int:
    return C.run_experiment(args, FULL, SMOKE, _run)


def _run(args: argparse.Namespace, out: Path) -> int:
    cache = C.UnitCache(out, args.resume, settings=args)
    sigma = C.parse_floats(args.sigmas)[0]
    scale = sigma if args.exp_scale is None else float(args.exp_scale)
    P = C.parse_ints(args.num_patterns)[0]
    units = []
    for noise, level in (("gaussian", sigma), ("exponential", scale)):
        units.append(cache.get_or_run(f"robustness_{noise}_{level:g}_w{args.width}",
                                      lambda: run_unit(args, noise, level, P, out=out)))
    plot_units(units, f"Gaussian vs exponential noise: {args.width}-filter primal (Adam) vs dual (4)",
               out / "noise_robustness.png", args)
    lines = [f"Data: {C.data_text(units[0]['data'])}; {C.beta_rule(args)}; primal {args.width} filters, "
             f"{args.epochs} epochs; {P} sampled patterns; certified solver `{args.solver}`.", "", C.UNITS, ""
             ] + summary_table(units)
    lines += ["", "Primal objective above the certified optimum over the sampled patterns + the primal net's own: "
              + ", ".join(f"{u['noise']}: {C.fmt(-u['duals']['augmented'].get('excess_over_primal', float('nan')), '.3%')}"
                          for u in units) + f" (tolerance {TOLERANCE:g})", "", "Figure: noise_robustness.png"]
    C.write_outputs(out, "noise_robustness", "noise-robustness", args,
                    {"units": units, "figures": ["noise_robustness.png"]}, lines)
    return 0
