"""With every sign pattern enumerated, (4) is the exact training problem (2):
Adam from many initialisations never ends below the convex optimum, and the
recovered net attains it."""

import numpy as np
import pytest

import convexdual as cd
from convexdual.train import train_primal
from tests.conftest import make_digits


@pytest.fixture(scope="module")
def exact_problem():
    noisy, clean = make_digits(1, 0.5, 0)
    noisy, clean = noisy[:, 2:5, 2:5], clean[:, 2:5, 2:5]
    pats = cd.enumerate_patterns(noisy, 3)
    beta = 0.05 * cd.beta_max(noisy, clean, 3, pats)
    return cd.build_problem(noisy, clean, 3, beta, patterns=pats)


def test_exact_optimum_is_certified_and_attained(exact_problem):
    res = cd.solve(exact_problem, solver="clarabel")
    assert res.status is cd.Status.OPTIMAL
    assert res.certificate.scope == "exact" and res.certificate.ok
    assert res.certificate.relative_gap <= 1e-6
    assert abs(res.certificate.network_objective - res.objective) <= 1e-6 * res.objective


def test_adam_never_beats_the_exact_optimum(exact_problem):
    opt = cd.solve(exact_problem, solver="clarabel").objective
    finals = []
    for seed in range(6):
        width = [2, 4, 8, 16, 32, 64][seed]
        r = train_primal(exact_problem.inputs, exact_problem.targets, width=width, kernel_size=3,
                         beta=exact_problem.beta, epochs=800, batch_size=1, lr=2e-2, seed=seed,
                         eval_every=800)
        finals.append(r.objective)
        assert r.objective >= opt * (1 - 1e-6), (seed, r.objective, opt)
    # Adam does get close (the comparison is meaningful, not vacuous)
    assert min(finals) <= 1.05 * opt


def test_two_channel_k1_exact_vs_adam():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 2, 3, 3))
    y = np.maximum(x[:, 0] - 0.5 * x[:, 1], 0) - 0.3 * np.maximum(x[:, 1], 0)
    pats = cd.enumerate_patterns(x, 1)
    problem = cd.build_problem(x, y, 1, 0.1 * cd.beta_max(x, y, 1, pats), patterns=pats)
    res = cd.solve(problem, solver="clarabel")
    assert res.certificate.ok and res.certificate.scope == "exact"
    for seed in range(4):
        r = train_primal(x, y, width=12, kernel_size=1, beta=problem.beta, epochs=600, batch_size=3,
                         lr=2e-2, seed=seed, eval_every=600)
        assert r.objective >= res.objective * (1 - 1e-6)
