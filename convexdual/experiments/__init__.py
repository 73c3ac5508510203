"""Reproductions of the paper's experiments, run as ``convexdual experiment NAME``.

Registry: experiment name -> module. Each module provides
``add_arguments(parser)`` (its options; every experiment has ``--out DIR`` and
``--smoke``) and ``run(args) -> int``. Each run writes JSON with every number it
plots, PNG figures and a short markdown summary into ``--out``.
"""

from __future__ import annotations

import argparse
import importlib

__all__ = ["EXPERIMENTS", "add_parser"]

EXPERIMENTS: dict[str, str] = {
    "zero-gap": "convexdual.experiments.mnist.zero_gap",
    "pattern-ablation": "convexdual.experiments.mnist.pattern_ablation",
    "noise-robustness": "convexdual.experiments.mnist.noise_robustness",
    "reconstructions": "convexdual.experiments.mnist.reconstructions",
    "interpret": "convexdual.experiments.mnist.interpret",
    "deeper-nets": "convexdual.experiments.mnist.deeper_nets",
    "mri": "convexdual.experiments.mri",
}


def add_parser(sub) -> None:
    p = sub.add_parser("experiment", help="reproduce one of the paper's experiments",
                       description="Reproduce one of the paper's experiments; see 'experiment NAME --help'.")
    names = p.add_subparsers(dest="experiment", metavar="NAME")
    for name, module in EXPERIMENTS.items():
        mod = importlib.import_module(module)
        ep = names.add_parser(name, help=(mod.__doc__ or "").strip().splitlines()[0] if mod.__doc__ else None,
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        mod.add_arguments(ep)
        ep.set_defaults(func=mod.run)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
