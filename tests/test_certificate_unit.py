"""Pieces of the certificate that a full solve does not pin: the parallel-dual shortcut, the
summary and the dictionary (each against hand-made values)."""

import dataclasses

import numpy as np

import convexdual as cd
from convexdual.certificate import Certificate, _parallel, certify_solution


def test_parallel_detects_positive_multiples_only():
    b = np.array([1.0, -2.0, 3.0])
    assert _parallel(2.5 * b, b) and _parallel(b, b)
    assert not _parallel(-b, b)                      # a negative multiple is another point
    assert not _parallel(b + np.array([0, 0, 1e-6]), b)
    assert not _parallel(np.zeros(3), b)             # t = 0 is not positive
    assert _parallel(np.zeros(3), np.zeros(3)) and not _parallel(b, np.zeros(3))
    assert not _parallel(np.ones(4), np.ones(3))     # shapes differ
    assert _parallel(1e-200 * b, b)                  # tiny but exact multiples still count


def test_a_better_solver_dual_is_used_and_a_parallel_one_changes_nothing():
    rng = np.random.default_rng(4)
    noisy = rng.standard_normal((2, 5, 5))
    clean = noisy + 0.3 * rng.standard_normal((2, 5, 5))
    prob = cd.build_problem(noisy, clean, 3, 1.0, num_patterns=6, seed=0)
    res = cd.solve(prob, "clarabel")
    W, Z = 0.9 * res.W, 0.9 * res.Z                  # a suboptimal point: its own residual is a weak dual
    own = certify_solution(prob, W, Z)
    with_opt = certify_solution(prob, W, Z, dual=res.dual)   # the optimal dual is a much better bound
    assert with_opt.dual_bound > own.dual_bound + 1e-6 * abs(own.dual_bound)
    assert with_opt.dual_bound <= res.objective * (1 + 1e-9)
    r = prob.y - prob.predict(W, Z)
    par = certify_solution(prob, W, Z, dual=3.0 * r)  # parallel to the candidate: same bound
    assert par.dual_bound == own.dual_bound


def test_summary_and_dict_say_what_was_checked():
    c = Certificate(convex_objective=2.0, dual_bound=1.5, gap=0.5, relative_gap=0.25, max_violation=1e-9,
                    num_neurons=3, scope="exact", tolerance=1e-6, violation_tolerance=1e-7, ok=False,
                    network_objective=2.0000001, recovery_error=5e-8)
    s = c.summary()
    assert "NOT certified" in s and "exact patterns" in s and "gap 5.000e-01" in s and "network objective" in s
    assert "network objective" not in dataclasses.replace(c, network_objective=None, recovery_error=None).summary()
    d = c.to_dict()
    assert d["relative_gap"] == 0.25 and d["scope"] == "exact" and d["ok"] is False and d["num_neurons"] == 3
    assert isinstance(dataclasses.replace(c, gap=np.float64(0.5)).to_dict()["gap"], float)


def test_repr_names_the_pattern_scope():
    c = Certificate(convex_objective=2.0, dual_bound=2.0, gap=0.0, relative_gap=0.0, max_violation=0.0,
                    num_neurons=1, scope="exact", tolerance=1e-6, violation_tolerance=1e-7, ok=True)
    assert "all sign patterns (exact enumeration)" in repr(c) and repr(c).startswith("Certificate(ok ")
    s = dataclasses.replace(c, scope="sampled", ok=False)
    assert "the sampled patterns" in repr(s) and "exact" not in repr(s) and "NOT ok" in repr(s)


def test_ok_holds_at_exactly_its_tolerances_and_counts_both_neuron_signs():
    rng = np.random.default_rng(4)
    noisy = rng.standard_normal((2, 5, 5))
    clean = noisy + 0.3 * rng.standard_normal((2, 5, 5))
    prob = cd.build_problem(noisy, clean, 3, 1.0, num_patterns=6, seed=0)
    res = cd.solve(prob, "clarabel")
    c = res.certificate
    _, v = res.network.filters()
    assert (v > 0).any() and (v < 0).any()  # both w and z groups: the count must add them
    assert c.num_neurons == res.network.width == int((v > 0).sum() + (v < 0).sum())
    # the same point, certified again with tolerances equal to the measured numbers: still ok (<=)
    tol = max(abs(c.relative_gap), c.recovery_error)
    again = certify_solution(prob, res.W, res.Z, network=res.network, dual=res.dual, tolerance=tol,
                             violation_tolerance=c.max_violation)
    assert again.relative_gap == c.relative_gap and again.max_violation == c.max_violation
    assert again.ok
