"""The status rule and finalize's guards, on fabricated certificates (no solver needed)."""

import dataclasses

import numpy as np
import pytest

import convexdual as cd
from convexdual.certificate import Certificate
from convexdual.result import SolveResult, Status
from convexdual.pipeline import finalize, status_from_certificate


def _cert(gap=1e-9, viol=0.0, rec=1e-12, ok=None, tol=1e-6, vtol=1e-7):
    ok = (gap <= tol and viol <= vtol and (rec is None or rec <= tol)) if ok is None else ok
    return Certificate(convex_objective=1.0, dual_bound=1.0 - gap, gap=gap, relative_gap=gap, max_violation=viol,
                       num_neurons=1, scope="sampled", tolerance=tol, violation_tolerance=vtol, ok=ok,
                       network_objective=None if rec is None else 1.0, recovery_error=rec)


@pytest.mark.parametrize("gap,viol,rec,reasons", [
    (2e-6, 0.0, 0.0, ["relative gap 2.00e-06 > 1e-06"]),
    (1e-6, 2e-7, 0.0, ["cone violation 2.00e-07 > 1e-07"]),  # gap exactly at the tolerance is fine
    (1e-9, 1e-7, 3e-6, ["recovered net's objective differs by 3.00e-06"]),  # violation exactly at it too
    (5e-6, 5e-7, 5e-6, ["relative gap", "cone violation", "recovered net"]),
])
def test_reasons_name_exactly_what_failed(gap, viol, rec, reasons):
    for backend in (Status.OPTIMAL, Status.OPTIMAL_INACCURATE):
        st, msg = status_from_certificate(backend, _cert(gap, viol, rec), "native", 1e-6, 1e-7)
        assert st is Status.OPTIMAL_INACCURATE and msg.startswith("native; ")
        for r in reasons:
            assert r in msg
        for other in {"relative gap", "cone violation", "recovered net"} - {r.split(" ")[0] + " " + r.split(" ")[1]
                                                                            for r in reasons}:
            if not any(other in r for r in reasons):
                assert other not in msg
        assert ("disagrees" in msg) == (backend is Status.OPTIMAL)


def test_no_recovery_error_recorded_is_not_a_reason():
    st, msg = status_from_certificate(Status.OPTIMAL, _cert(2e-6, 0.0, None), "", 1e-6, 1e-7)
    assert st is Status.OPTIMAL_INACCURATE and "recovered" not in msg and msg.startswith("solver reported optimal")


def test_certified_points_and_messages():
    st, msg = status_from_certificate(Status.OPTIMAL, _cert(), "native", 1e-6, 1e-7)
    assert st is Status.OPTIMAL and msg == "native"
    st, msg = status_from_certificate(Status.OPTIMAL_INACCURATE, _cert(), "", 1e-6, 1e-7)
    assert st is Status.OPTIMAL and msg.startswith("backend reported an inaccurate solve")
    st, msg = status_from_certificate(Status.OPTIMAL_INACCURATE, _cert(), "x", 1e-6, 1e-7)
    assert msg.startswith("x; backend reported")
    for early in (Status.MAX_ITERATIONS, Status.TIME_LIMIT, Status.INTERRUPTED, Status.SOLVER_ERROR):
        assert status_from_certificate(early, _cert(), "m", 1e-6, 1e-7) == (early, "m")
    assert status_from_certificate(Status.OPTIMAL, None, "m", 1e-6, 1e-7) == (Status.OPTIMAL, "m")
    # a certificate marked not ok with all numbers in range still downgrades (ok is the authority)
    st, msg = status_from_certificate(Status.OPTIMAL, _cert(ok=False), "", 1e-6, 1e-7)
    assert st is Status.OPTIMAL_INACCURATE and "not certified" in msg


@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(3)
    noisy = rng.standard_normal((2, 5, 5))
    clean = noisy + 0.2 * rng.standard_normal((2, 5, 5))
    pats = cd.sample_patterns(noisy, 3, 6, seed=1)
    prob = cd.build_problem(noisy, clean, 3, 0.05 * cd.beta_max(noisy, clean, 3, pats), patterns=pats)
    from convexdual._registry import get_solver

    s = get_solver("clarabel")
    return prob, s.solve(prob, s.options_class())


def test_finalize_leaves_results_without_a_solution_alone(small):
    prob, raw = small
    for r in (dataclasses.replace(raw, W=None), dataclasses.replace(raw, Z=None),
              dataclasses.replace(raw, status=Status.INFEASIBLE), dataclasses.replace(raw, status=Status.SOLVER_ERROR)):
        out = finalize(prob, r)
        assert out is r and out.certificate is None and out.network is None


def test_finalize_polishes_only_infeasible_points_and_only_when_certifying(small):
    prob, raw = small
    out = finalize(prob, raw)
    assert out.certificate.ok and "projected" not in out.message  # certified as it is: untouched
    # push one nonzero group off its cone: finalize projects it back (and says so)
    W = raw.W.copy()
    i = int(np.argmax(np.linalg.norm(W, axis=1)))
    W[i] = W[i] + 1e-6 * np.linalg.norm(W[i]) * np.random.default_rng(0).standard_normal(W.shape[1])
    bad = dataclasses.replace(raw, W=W, objective=prob.objective(W, raw.Z))
    assert prob.cone_violation(W, raw.Z) > 1e-9
    pol = finalize(prob, bad)
    assert "projected exactly onto their cones" in pol.message and pol.certificate.max_violation <= 1e-13
    nocert = finalize(prob, bad, certify=False)
    assert nocert.certificate is None and np.array_equal(nocert.W, W) and "projected" not in nocert.message
    # a feasible point is not touched
    clean_raw = dataclasses.replace(raw, W=pol.W, Z=pol.Z, objective=pol.objective, message="")
    again = finalize(prob, clean_raw)
    assert "projected" not in again.message and np.array_equal(again.W, pol.W)
    # a point far outside its cones (a first-order iterate stopped early) is reported as it is,
    # not projected group by group (hours at the paper's size, and it could not certify)
    far = W.copy()
    far[i] = raw.W[i] + 0.3 * np.linalg.norm(raw.W[i]) * np.random.default_rng(1).standard_normal(W.shape[1])
    assert prob.cone_violation(far, raw.Z) > 1e-3
    calls = []
    real = prob.engine.polish
    prob.engine.polish = lambda *a, **k: calls.append(1) or real(*a, **k)
    try:
        out_far = finalize(prob, dataclasses.replace(raw, W=far, objective=prob.objective(far, raw.Z)))
    finally:
        del prob.engine.polish
    assert not calls and "projected" not in out_far.message and not out_far.certificate.ok
    assert out_far.status is not Status.OPTIMAL and np.array_equal(out_far.W, far)


def test_a_clearly_negative_gap_is_never_certified(small):
    # the dual bound above the objective: impossible for a point of (4) with a valid bound
    prob, raw = small
    from convexdual.certificate import certify_solution

    cert = certify_solution(prob, raw.W * 0.5, raw.Z * 0.5)  # a valid point: gap >= 0
    assert cert.gap >= -1e-9 * abs(cert.convex_objective)
    fake = dataclasses.replace(cert, gap=-0.1 * cert.convex_objective, relative_gap=-0.1, ok=False)
    st, msg = status_from_certificate(Status.OPTIMAL, fake, "", 1e-6, 1e-7)
    assert st is Status.OPTIMAL_INACCURATE and "negative gap" in msg


def test_reasons_at_exactly_the_tolerances():
    # a gap of exactly -tolerance is not called negative; a recovery error exactly at it is no reason
    st, msg = status_from_certificate(Status.OPTIMAL, _cert(gap=-1e-6, ok=False), "", 1e-6, 1e-7)
    assert st is Status.OPTIMAL_INACCURATE and "negative gap" not in msg
    st, msg = status_from_certificate(Status.OPTIMAL, _cert(gap=-2e-6, ok=False), "", 1e-6, 1e-7)
    assert "negative gap" in msg
    st, msg = status_from_certificate(Status.OPTIMAL, _cert(rec=1e-6, ok=False), "", 1e-6, 1e-7)
    assert "recovered" not in msg and "not certified" in msg


def test_finalize_timings_are_durations(small):
    import time

    prob, raw = small
    t = time.perf_counter()
    out = finalize(prob, raw)
    wall = time.perf_counter() - t
    assert 0.0 <= out.timings.recover <= wall and 0.0 < out.timings.certify <= wall
    assert out.timings.solve == raw.timings.solve and out.timings.build == raw.timings.build


def test_finalize_recovers_the_network_once_on_the_cpu(small, monkeypatch):
    """On the CPU the recovered net is certified as it is; a second recovery (for a net on another
    device) happens only off the CPU. Counted through the module's recover_network."""
    import sys

    base = sys.modules[finalize.__module__]  # wherever finalize lives, its recover_network
    prob, raw = small
    calls = []
    real = base.recover_network

    def counting(*args, **kwargs):
        calls.append(kwargs.get("device", "cpu"))
        return real(*args, **kwargs)

    monkeypatch.setattr(base, "recover_network", counting)
    out = finalize(prob, raw)
    assert out.certificate.ok and "projected" not in out.message
    assert len(calls) == 1
