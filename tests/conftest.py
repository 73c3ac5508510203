"""Shared fixtures: small canonical problems on real digits, and a device fixture."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import convexdual as cd
from convexdual.data import add_noise, load_digits_dataset


# Tests run beside other processes on small machines: one intra-op thread is the
# fastest setting for these tiny problems (set for the test session only).
torch.set_num_threads(1)


def _devices():
    devs = ["cpu"]
    if torch.cuda.is_available():
        devs.append("cuda")
    return devs


@pytest.fixture(params=_devices())
def device(request):
    """Runs a test on CPU always and on CUDA when present."""
    return torch.device(request.param)


def make_digits(num_images: int = 5, sigma: float = 0.5, seed: int = 0, crop: int | None = None):
    split = load_digits_dataset(num_images, 0, seed=seed)
    clean = split.train
    if crop is not None:
        clean = clean[:, :crop, :crop]
    noisy = add_noise(clean, "gaussian", sigma, seed=seed + 1)
    return noisy, clean


@pytest.fixture(scope="session")
def digits_small():
    """5 real 8x8 digits with Gaussian noise 0.5 (n = 320 patch rows)."""
    return make_digits(5, 0.5, 0)


@pytest.fixture(scope="session")
def small_problem(digits_small):
    """Squared loss, k = 3, 20 sampled patterns, beta = 0.02 * beta_max (PERFORMANCE.md recipe)."""
    noisy, clean = digits_small
    pats = cd.sample_patterns(noisy, 3, 20, seed=0)
    beta = 0.02 * cd.beta_max(noisy, clean, 3, pats)
    return cd.build_problem(noisy, clean, 3, beta, patterns=pats)


@pytest.fixture(scope="session")
def small_solution(small_problem):
    return cd.solve(small_problem, solver="clarabel")


def pytest_collection_modifyitems(config, items):
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
