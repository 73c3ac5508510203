"""The status rule of ``finalize`` (issue 18, item 1).

``finalize`` must report ``Status.OPTIMAL`` exactly when the certificate holds at the
*requested* tolerances (relative gap <= ``tolerance``, cone violation <=
``violation_tolerance``, recovery error <= ``tolerance``), whatever the backend said;
otherwise ``OPTIMAL_INACCURATE`` with the reason in the message. An early-stopped status
(``MAX_ITERATIONS``, ``TIME_LIMIT``, ``INTERRUPTED``) is never upgraded.

How: solve one small problem with Clarabel, then feed ``finalize`` fabricated raw results
(``dataclasses.replace`` of the raw ``SolveResult``) whose ``W, Z`` are scaled by ``s``.
Scaling keeps every cone constraint, so only the gap moves; ``s`` is found by bisection so
that the certified relative gap lands just above or just below the tolerance. The gap is
read from the certificate ``finalize`` itself attaches, so the test follows whatever the
certificate engine computes and checks only the rule that maps it to a status.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

import convexdual as cd
from convexdual._registry import get_solver
from convexdual.result import Status
from convexdual.pipeline import finalize
from tests.conftest import make_digits

EARLY_STOPS = [Status.MAX_ITERATIONS, Status.TIME_LIMIT, Status.INTERRUPTED]


@pytest.fixture(scope="module")
def setup():
    noisy, clean = make_digits(2, 0.5, 0, crop=6)  # n = 72, d = 9
    pats = cd.sample_patterns(noisy, 3, 8, seed=0)
    beta = 0.05 * cd.beta_max(noisy, clean, 3, pats)
    problem = cd.build_problem(noisy, clean, 3, beta, patterns=pats)
    solver = get_solver("clarabel")
    raw = solver.solve(problem, solver.options_class())
    assert raw.status is Status.OPTIMAL and raw.W is not None
    return problem, raw


def _fabricate(problem, raw, s: float, status: Status, keep_dual: bool):
    W, Z = raw.W * s, raw.Z * s
    return dataclasses.replace(raw, W=W, Z=Z, objective=problem.objective(W, Z), status=status,
                               message="backend note", dual=raw.dual if keep_dual else None)


def _finalize(problem, raw, s, status, keep_dual, **tol):
    return finalize(problem, _fabricate(problem, raw, s, status, keep_dual), **tol)


def _scale_for_gap(problem, raw, target: float, direction: int, keep_dual: bool, tolerance: float) -> float:
    """A scale ``s = 1 + direction * e`` whose certified relative gap is ``target`` (bisection on log e)."""

    def gap(log_e: float) -> float:
        s = 1.0 + direction * math.exp(log_e)
        return _finalize(problem, raw, s, Status.OPTIMAL, keep_dual, tolerance=tolerance).certificate.relative_gap

    lo, hi = math.log(1e-12), math.log(0.5)
    assert gap(lo) < target < gap(hi), "the gap does not cross the target along this ray"
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if gap(mid) < target:
            lo = mid
        else:
            hi = mid
    return 1.0 + direction * math.exp(0.5 * (lo + hi))


_SCALES: dict = {}


def _scales(problem, raw, direction, keep_dual, tolerance):
    """(s_above, s_below): certified gap at ~1.5x and ~1/1.5x the tolerance (cached)."""
    key = (direction, keep_dual, tolerance)
    if key not in _SCALES:
        _SCALES[key] = (_scale_for_gap(problem, raw, 1.5 * tolerance, direction, keep_dual, tolerance),
                        _scale_for_gap(problem, raw, tolerance / 1.5, direction, keep_dual, tolerance))
    return _SCALES[key]


@pytest.mark.parametrize("tolerance", [1e-6, 1e-4])
@pytest.mark.parametrize("keep_dual", [True, False], ids=["solver-dual", "residual-dual"])
@pytest.mark.parametrize("direction", [-1, +1], ids=["shrink", "grow"])
@pytest.mark.parametrize("backend_status", [Status.OPTIMAL, Status.OPTIMAL_INACCURATE])
def test_status_follows_the_certified_gap(setup, backend_status, direction, keep_dual, tolerance):
    problem, raw = setup
    s_above, s_below = _scales(problem, raw, direction, keep_dual, tolerance)

    above = _finalize(problem, raw, s_above, backend_status, keep_dual, tolerance=tolerance)
    c = above.certificate
    assert 1.1 * tolerance <= c.relative_gap <= 3 * tolerance, c.relative_gap  # the fabrication landed
    assert c.max_violation <= 1e-7 and c.recovery_error <= tolerance  # only the gap fails
    assert not c.ok
    assert above.status is Status.OPTIMAL_INACCURATE, (
        f"backend said {backend_status.value}, certified relative gap {c.relative_gap:.3e} > "
        f"tolerance {tolerance:g}, but finalize reported {above.status.value}")
    assert "gap" in above.message.lower(), above.message  # the reason is given

    below = _finalize(problem, raw, s_below, backend_status, keep_dual, tolerance=tolerance)
    c = below.certificate
    assert tolerance / 3 <= c.relative_gap <= tolerance / 1.1, c.relative_gap
    assert c.ok
    assert below.status is Status.OPTIMAL, (
        f"backend said {backend_status.value}, certified relative gap {c.relative_gap:.3e} <= "
        f"tolerance {tolerance:g}, but finalize reported {below.status.value}: {below.message}")


@pytest.mark.parametrize("backend_status", [Status.OPTIMAL, Status.OPTIMAL_INACCURATE])
def test_status_follows_the_requested_violation_tolerance(setup, backend_status):
    problem, raw = setup
    base = finalize(problem, _fabricate(problem, raw, 1.0, backend_status, True))
    viol = base.certificate.max_violation
    assert base.certificate.relative_gap <= 1e-8
    if viol == 0.0:  # pragma: no cover - Clarabel's points carry ~1e-12 of violation
        pytest.skip("exactly feasible point: no violation to put a tolerance under")
    strict = finalize(problem, _fabricate(problem, raw, 1.0, backend_status, True), violation_tolerance=viol / 3)
    if "projected exactly onto their cones" in strict.message:
        # finalize replaced the point by its exact projection onto the cones: that point must then
        # meet the strict tolerance itself, and only then be reported optimal
        assert strict.certificate.ok and strict.certificate.max_violation <= viol / 3
        assert strict.status is Status.OPTIMAL
    else:
        assert strict.certificate.max_violation == pytest.approx(viol, rel=1e-6)
        assert not strict.certificate.ok
        assert strict.status is Status.OPTIMAL_INACCURATE, (
            f"violation {viol:.2e} > requested {viol / 3:.2e}, yet status {strict.status.value}")
        assert "violation" in strict.message.lower(), strict.message
    # with the projection step unable to help (no recovery of a feasible point), the rule stands
    from convexdual.pipeline import status_from_certificate

    st, msg = status_from_certificate(backend_status, dataclasses.replace(base.certificate, ok=False,
                                                                          violation_tolerance=viol / 3),
                                      "", 1e-6, viol / 3)
    assert st is Status.OPTIMAL_INACCURATE and "violation" in msg
    loose = finalize(problem, _fabricate(problem, raw, 1.0, backend_status, True), violation_tolerance=viol * 3)
    assert loose.certificate.ok and loose.status is Status.OPTIMAL, loose.message


@pytest.mark.parametrize("early", EARLY_STOPS, ids=lambda s: s.value)
def test_early_stop_is_never_upgraded(setup, early):
    problem, raw = setup
    # the exact Clarabel point: its certificate holds, but the backend stopped early
    res = finalize(problem, _fabricate(problem, raw, 1.0, early, True))
    assert res.certificate is not None and res.certificate.ok
    assert res.status is early, f"{early.value} was reported as {res.status.value}"
    # and a point whose certificate fails stays what it was too (never "optimal")
    res = finalize(problem, _fabricate(problem, raw, 0.9, early, False))
    assert not res.certificate.ok and res.status is early


def test_status_is_exactly_certificate_ok(setup):
    """Over a sweep of fabricated points, OPTIMAL <=> certificate.ok, and ok <=> the three tests."""
    problem, raw = setup
    rng = np.random.default_rng(0)
    seen = set()
    for s in [1.0, 1 - 1e-7, 1 - 1e-5, 1 - 1e-3, 1 + 1e-4, 1 + 1e-2, 0.5]:
        for backend_status in (Status.OPTIMAL, Status.OPTIMAL_INACCURATE):
            for tol in (1e-8, 1e-6, 1e-3):
                res = _finalize(problem, raw, s, backend_status, bool(rng.integers(2)), tolerance=tol)
                c = res.certificate
                holds = (c.relative_gap <= tol and c.max_violation <= 1e-7
                         and c.recovery_error is not None and c.recovery_error <= tol)
                assert c.ok == holds, c
                assert (res.status is Status.OPTIMAL) == holds, (s, backend_status, tol, c, res.message)
                assert res.status in (Status.OPTIMAL, Status.OPTIMAL_INACCURATE)
                seen.add(holds)
    assert seen == {True, False}  # the sweep exercised both sides
