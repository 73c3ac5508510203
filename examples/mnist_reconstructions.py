"""Reproduce the paper's MNIST 'reconstructions' experiment (see docs/mnist.md).

    python examples/mnist_reconstructions.py --smoke --out results/reconstructions            # bundled digits, seconds
    python examples/mnist_reconstructions.py --data ~/data/mnist --out results/reconstructions  # real MNIST (paper sizes)

Same as `convexdual experiment reconstructions ...`; every option: --help.
"""

from __future__ import annotations

import argparse
import logging
import sys

from convexdual.experiments.mnist import reconstructions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(reconstructions.__doc__ or "").strip().splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    reconstructions.add_arguments(parser)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return reconstructions.run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
