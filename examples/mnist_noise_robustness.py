"""Reproduce the paper's MNIST 'noise-robustness' experiment (see docs/mnist.md).

    python examples/mnist_noise_robustness.py --smoke --out results/noise-robustness            # bundled digits, seconds
    python examples/mnist_noise_robustness.py --data ~/data/mnist --out results/noise-robustness  # real MNIST (paper sizes)

Same as `convexdual experiment noise-robustness ...`; every option: --help.
"""

from __future__ import annotations

import sys

from convexdual.experiments.mnist import common, noise_robustness


def main(argv: list[str] | None = None) -> int:
    return common.main(noise_robustness, argv)


if __name__ == "__main__":
    sys.exit(main())
