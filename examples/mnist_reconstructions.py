"""Reproduce the paper's MNIST 'reconstructions' experiment (see docs/mnist.md).

    python examples/mnist_reconstructions.py --smoke --out results/reconstructions            # bundled digits, seconds
    python examples/mnist_reconstructions.py --data ~/data/mnist --out results/reconstructions  # real MNIST (paper sizes)

Same as `convexdual experiment reconstructions ...`; every option: --help.
"""

from __future__ import annotations

import sys

from convexdual.experiments.mnist import common, reconstructions


def main(argv: list[str] | None = None) -> int:
    return common.main(reconstructions, argv)


if __name__ == "__main__":
    sys.exit(main())
