"""Reproduce the paper's MNIST 'zero-gap' experiment (see docs/mnist.md).

    python examples/mnist_zero_gap.py --smoke --out results/zero-gap            # bundled digits, seconds
    python examples/mnist_zero_gap.py --data ~/data/mnist --out results/zero-gap  # real MNIST (paper sizes)

Same as `convexdual experiment zero-gap ...`; every option: --help.
"""

from __future__ import annotations

import argparse
import logging
import sys

from convexdual.experiments.mnist import zero_gap


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(zero_gap.__doc__ or "").strip().splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    zero_gap.add_arguments(parser)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return zero_gap.run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
