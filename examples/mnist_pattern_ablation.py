"""Reproduce the paper's MNIST 'pattern-ablation' experiment (see docs/mnist.md).

    python examples/mnist_pattern_ablation.py --smoke --out results/pattern-ablation            # bundled digits, seconds
    python examples/mnist_pattern_ablation.py --data ~/data/mnist --out results/pattern-ablation  # real MNIST (paper sizes)

Same as `convexdual experiment pattern-ablation ...`; every option: --help.
"""

from __future__ import annotations

import sys

from convexdual.experiments.mnist import common, pattern_ablation


def main(argv: list[str] | None = None) -> int:
    return common.main(pattern_ablation, argv)


if __name__ == "__main__":
    sys.exit(main())
