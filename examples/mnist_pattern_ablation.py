"""Reproduce the paper's MNIST 'pattern-ablation' experiment (see docs/mnist.md).

    python examples/mnist_pattern_ablation.py --smoke --out results/pattern-ablation            # bundled digits, seconds
    python examples/mnist_pattern_ablation.py --data ~/data/mnist --out results/pattern-ablation  # real MNIST (paper sizes)

Same as `convexdual experiment pattern-ablation ...`; every option: --help.
"""

from __future__ import annotations

import argparse
import logging
import sys

from convexdual.experiments.mnist import pattern_ablation


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(pattern_ablation.__doc__ or "").strip().splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    pattern_ablation.add_arguments(parser)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return pattern_ablation.run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
