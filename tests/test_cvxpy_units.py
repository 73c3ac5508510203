"""The explicit SOCP (4) is handed to the backend in normalised units (convexdual/cvxpy_program.py):
the same instance in units of 1e-6 .. 1e6 gives the same certified optimum, relative to the
reference optimum of tests/_reference.py (issue 18: at data in units of 10^-1.5 Clarabel's
absolute stopping criteria left a Huber point 2.5e-6 above the optimum, 'optimal_inaccurate')."""

from __future__ import annotations

import numpy as np
import pytest

import convexdual as cd
from convexdual.cvxpy_program import _loss_in_units
from convexdual.losses import AbsoluteLoss, HuberLoss, Loss, SquaredLoss
from tests._reference import solve_program4_ref, zero_dual_candidate
from tests.test_certificate_unit import _absolute_problem


def _problem(scale, loss):
    prob, X, M, y, beta = _absolute_problem(scale=scale)
    if loss == "absolute":
        return prob, X, M, y, beta, 1.0
    delta = 0.5 * float(np.abs(y).max())  # the failing draw: delta_frac 0.5, beta_frac 0.25
    v0 = zero_dual_candidate(y, "huber", delta)
    beta = 0.25 * float(np.linalg.norm(M @ (X * v0[:, None]), axis=1).max())
    return (cd.build_problem(prob.inputs, prob.targets, 1, beta, patterns=prob.patterns, loss="huber",
                             huber_delta=delta), X, M, y, beta, delta)


@pytest.mark.parametrize("loss", ["absolute", "huber"])
def test_clarabel_certifies_the_same_optimum_in_any_units(loss):
    rel = []
    for scale in (1e-6, 10 ** -1.5, 1e6):
        prob, X, M, y, beta, delta = _problem(scale, loss)
        p_ref = solve_program4_ref(X, M, y, beta, loss, delta)[0]
        res = cd.solve(prob, "clarabel")
        assert res.status is cd.Status.OPTIMAL, (scale, res.message)
        assert res.certificate.dual_bound <= p_ref * (1 + 1e-8)
        assert abs(res.objective - p_ref) <= 1e-7 * p_ref, (scale, res.objective, p_ref)
        rel.append(res.objective / p_ref)
    assert max(rel) - min(rel) <= 1e-8  # the backend sees the same numbers


def test_loss_in_units_rescales_exactly():
    r = np.linspace(-3.0, 3.0, 13)
    for L in (SquaredLoss(), AbsoluteLoss(), HuberLoss(delta=0.7)):
        for b in (1e-6, 0.03, 1.0, 1e5):
            Lb, f = _loss_in_units(L, b)
            assert L.value(b * r) == pytest.approx(f * Lb.value(r), rel=1e-12), (L, b)

    class Custom(SquaredLoss):
        pass

    assert _loss_in_units(Custom(), 2.0) == (None, 1.0)  # unknown: not rescaled
    assert _loss_in_units(Loss(), 2.0) == (None, 1.0)
