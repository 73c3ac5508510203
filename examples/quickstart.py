"""Quick start: train a two-layer conv ReLU denoiser through its convex dual and certify it.

    python examples/quickstart.py            # 10 bundled digits, 60 patterns
    python examples/quickstart.py --smoke    # seconds
"""

from __future__ import annotations

import argparse

import numpy as np

import convexdual as cd
from convexdual.data import add_noise, load_digits_dataset


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--device", default="cpu", help="where the recovered CNN runs (cpu, cuda)")
    args = ap.parse_args(argv)
    n_img, n_pat = (3, 10) if args.smoke else (10, 60)

    split = load_digits_dataset(n_img, 10, seed=0)          # real 8x8 digits, normalised
    noisy = add_noise(split.train, "gaussian", 0.5, seed=1)
    patterns = cd.sample_patterns(noisy, 3, n_pat, seed=0)   # sign patterns D_i
    beta = 0.02 * cd.beta_max(noisy, split.train, 3, patterns)
    problem = cd.build_problem(noisy, split.train, kernel_size=3, beta=beta, patterns=patterns)

    result = cd.solve(problem, solver="auto", device=args.device)   # MOSEK if licensed, else Clarabel
    print(result.summary())
    result.raise_for_status()

    test_noisy = add_noise(split.test, "gaussian", 0.5, seed=2)
    denoised = result.network.predict(test_noisy)
    print(f"test MSE: noisy {np.mean((test_noisy - split.test) ** 2):.4f} -> "
          f"denoised {np.mean((denoised - split.test) ** 2):.4f}")
    return 0 if result.certificate.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
