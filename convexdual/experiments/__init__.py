"""Reproductions of the paper's experiments, run as ``convexdual experiment NAME``.

Registry: :data:`EXPERIMENTS`, experiment name -> :class:`~convexdual._commands.Command`
(module, ``"add_arguments"``, the help line), the same lazy entries as the CLI's own
table: only the module of the experiment that runs is imported, so
``convexdual experiment --help`` imports none of them and one experiment's module cannot
break another's run. Each module provides ``add_arguments(parser)`` (its options; every
experiment has ``--out DIR`` and ``--smoke``) and ``run(args) -> int``; the help line is the
first line of its docstring (a test keeps the two equal). Each run writes JSON with every
number it plots, PNG figures and a short markdown summary into ``--out``.
"""

from __future__ import annotations

import argparse
from typing import Any, Sequence

from convexdual._commands import Command, add_subcommands

__all__ = ["EXPERIMENTS", "add_parser"]

EXPERIMENTS: dict[str, Command] = {
    "zero-gap": Command(
        "convexdual.experiments.mnist.zero_gap", "add_arguments",
        "zero-gap: primal (Adam) vs dual (certified solve and Adam + hinge) losses at several noise levels (Fig. 2)."),
    "pattern-ablation": Command(
        "convexdual.experiments.mnist.pattern_ablation", "add_arguments",
        "pattern-ablation: final dual train/test loss vs the number of sampled sign patterns, against the primal "
        "(Fig. 10)."),
    "noise-robustness": Command(
        "convexdual.experiments.mnist.noise_robustness", "add_arguments",
        "noise-robustness: Gaussian vs heavy-tailed exponential noise, 25-filter primal vs sampled-pattern dual "
        "(App. B.1)."),
    "reconstructions": Command(
        "convexdual.experiments.mnist.reconstructions", "add_arguments",
        "reconstructions: clean / noisy / primal / dual denoised test digits (Fig. 3)."),
    "interpret": Command(
        "convexdual.experiments.mnist.interpret", "add_arguments",
        "interpret: what the certified dual network learned: filter spectra, path sparsity, k-means maps "
        "(Sec. 4.2, Figs. 4, 5a)."),
    "deeper-nets": Command(
        "convexdual.experiments.mnist.deeper_nets", "add_arguments",
        "deeper-nets: greedy layer-wise convex training and a 4-layer unrolled net trained end to end "
        "(Sec. 4.3, Fig. 5b)."),
    "mri": Command(
        "convexdual.experiments.mri", "add_arguments",
        "CS-MRI: residual 7x7 denoiser trained primal (Adam) vs dual (convex program), fastMRI pipeline."),
}


def _attach(names: Any, name: str, cmd: Command, module: Any, rest: list[str]) -> None:
    ep = names.add_parser(name, help=cmd.help, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    getattr(module, cmd.register)(ep)
    ep.set_defaults(func=module.run)


def add_parser(sub: Any, argv: Sequence[str] | None = None) -> None:
    """Register ``experiment`` on ``sub`` (argparse subparsers).

    ``argv``: the arguments after ``experiment`` (the CLI passes them): only the experiment
    named there is built and imported, the others are listed by ``--help``. ``None``
    builds every experiment (each module imported), for a caller that parses arbitrary lines.
    """
    p = sub.add_parser("experiment", help="reproduce one of the paper's experiments",
                       description="Reproduce one of the paper's experiments; see 'experiment NAME --help'.")
    names = p.add_subparsers(dest="experiment", metavar="NAME")
    if argv is None:
        for name in EXPERIMENTS:
            add_subcommands(names, {name: EXPERIMENTS[name]}, [name], _attach)
    else:
        add_subcommands(names, EXPERIMENTS, argv, _attach)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
