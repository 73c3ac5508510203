"""Reproduce the paper's MNIST 'zero-gap' experiment (see docs/mnist.md).

    python examples/mnist_zero_gap.py --smoke --out results/zero-gap            # bundled digits, seconds
    python examples/mnist_zero_gap.py --data ~/data/mnist --out results/zero-gap  # real MNIST (paper sizes)

Same as `convexdual experiment zero-gap ...`; every option: --help.
"""

from __future__ import annotations

import sys

from convexdual.experiments.mnist import common, zero_gap


def main(argv: list[str] | None = None) -> int:
    return common.main(zero_gap, argv)


if __name__ == "__main__":
    sys.exit(main())
