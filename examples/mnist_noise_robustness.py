"""Reproduce the paper's MNIST 'noise-robustness' experiment (see docs/mnist.md).

    python examples/mnist_noise_robustness.py --smoke --out results/noise-robustness            # bundled digits, seconds
    python examples/mnist_noise_robustness.py --data ~/data/mnist --out results/noise-robustness  # real MNIST (paper sizes)

Same as `convexdual experiment noise-robustness ...`; every option: --help.
"""

from __future__ import annotations

import argparse
import logging
import sys

from convexdual.experiments.mnist import noise_robustness


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(noise_robustness.__doc__ or "").strip().splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    noise_robustness.add_arguments(parser)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return noise_robustness.run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
