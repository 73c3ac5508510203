"""Property-based tests of the mathematics (issue 18, item 2), with hypothesis.

Random small instances: N in 1..3 images of 3x3..5x5, C in 1..2 channels, k in {1, 3},
squared / absolute / Huber losses, residual on or off, data in units of 10^u with u in
[-6, 6], 2..6 sampled patterns. The reference is ``tests/_reference.py``: an explicit patch
matrix, masks recomputed from ``problem.patterns.gates`` and a CVXPY model of (4) written
from docs/math.md, none of it from the project. Properties:

(a) Clarabel's certified optimum equals the reference optimum (relative 1e-6, with an absolute
    floor of 1e-9 of the zero net's loss for tiny optima);
(b) the certificate's dual bound never exceeds the reference optimum;
(c) a perturbed point, ``(W, Z) * (1 + 1e-3)`` or one group nudged off its cone by a relative
    1e-3, is not certified: the nudge always fails (violation), the scaling fails whenever it
    is really suboptimal by more than the tolerance (a certificate may only say "ok" for a
    point that is optimal to within the tolerance), and its dual bound stays below the optimum;
(d) recovery reproduces (4): ``network_objective == convex_objective``, and the recovered net's
    objective (2) evaluated here from its filters equals the reference optimum.

The data-scale extremes (1e-6, 1e6) are part of the property on purpose (issue 11 item 12).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, assume, event, given, note, settings
from hypothesis import strategies as st

import convexdual as cd
from convexdual.patches import patch_matrix
from tests._reference import (
    loss_ref,
    masks_ref,
    net_objective_ref,
    program4_objective_ref,
    patch_matrix_ref,
    regression_target,
    solve_program4_ref,
    zero_dual_candidate,
)

TOL = 1e-6  # relative gap / recovery tolerance of certificate.ok (the default)
VTOL = 1e-7  # violation tolerance (the default)


@dataclasses.dataclass
class Instance:
    noisy: np.ndarray
    clean: np.ndarray
    k: int
    loss: str
    residual: bool
    num_patterns: int
    seed: int
    beta_frac: float
    delta_frac: float
    u: float


@st.composite
def instances(draw, scales=st.floats(-6.0, 6.0)):
    N = draw(st.integers(1, 3))
    H = draw(st.integers(3, 5))
    W = draw(st.integers(3, 5))
    C = draw(st.integers(1, 2))
    k = draw(st.sampled_from([1, 3]))
    loss = draw(st.sampled_from(["squared", "absolute", "huber"]))
    residual = draw(st.booleans())
    num_patterns = draw(st.integers(2, 6))
    seed = draw(st.integers(0, 2**16))
    u = draw(scales)
    beta_frac = draw(st.floats(0.05, 0.5))
    delta_frac = draw(st.floats(0.1, 1.0))
    rng = np.random.default_rng(seed)
    clean = rng.uniform(0.0, 1.0, (N, H, W))
    noisy = clean[:, None] + 0.5 * rng.standard_normal((N, C, H, W))
    scale = 10.0 ** u
    return Instance(noisy * scale, clean * scale, k, loss, residual, num_patterns, seed, beta_frac,
                    delta_frac, u)


def _build(inst: Instance):
    """The project's problem plus the independent data: X, masks, y, beta, delta."""
    X = patch_matrix_ref(inst.noisy, inst.k)
    y = regression_target(inst.noisy, inst.clean, inst.residual)
    delta = inst.delta_frac * float(np.abs(y).max())
    pats = cd.sample_patterns(inst.noisy, inst.k, inst.num_patterns, seed=inst.seed)
    M = masks_ref(X, pats.gates)
    # beta: a fraction of the gated bound max_i ||X^T D_i v0|| at the zero net (scales with the data)
    v0 = zero_dual_candidate(y, inst.loss, delta)
    beta = inst.beta_frac * float(np.linalg.norm(M @ (X * v0[:, None]), axis=1).max())
    assume(beta > 0)
    problem = cd.build_problem(inst.noisy, inst.clean, inst.k, beta, patterns=pats, loss=inst.loss,
                               huber_delta=delta, residual=inst.residual)
    return problem, X, M, y, beta, delta


def _describe(inst, problem, extra=""):
    return (f"N,C,H,W={inst.noisy.shape} k={inst.k} loss={inst.loss} residual={inst.residual} "
            f"P={problem.P} u={inst.u:.3g} beta_frac={inst.beta_frac:.3g} {extra}")


def _check_optimum_and_bound(inst: Instance):
    problem, X, M, y, beta, delta = _build(inst)
    # the project's data are the independent ones
    assert problem.n == X.shape[0] and problem.d == X.shape[1]
    assert np.array_equal(problem.y, y)
    p_ref, W_ref, Z_ref = solve_program4_ref(X, M, y, beta, inst.loss, delta)
    L0 = loss_ref(-y, inst.loss, delta)  # objective of the zero solution
    floor = 1e-9 * L0
    res = cd.solve(problem, solver="clarabel")
    note(_describe(inst, problem, f"p_ref={p_ref:.10g} L0={L0:.4g} status={res.status} obj={res.objective!r}"))
    assert res.status is cd.Status.OPTIMAL, res.message
    c = res.certificate
    assert c.ok, c
    # (a) the certified optimum is the independent optimum
    assert abs(res.objective - p_ref) <= 1e-6 * abs(p_ref) + floor, (res.objective, p_ref)
    # the project's objective at the reference point is the reference's evaluation of it (same
    # program); the reference solver's reported optimum carries its tolerance (~1e-6 with ECOS)
    f_ref = program4_objective_ref(X, M, y, beta, inst.loss, W_ref, Z_ref, delta)
    assert problem.objective(W_ref, Z_ref) == pytest.approx(f_ref, rel=1e-9, abs=floor)
    assert f_ref == pytest.approx(p_ref, rel=1e-5, abs=floor)
    # (b) the dual bound is a lower bound on the optimum
    assert c.dual_bound <= p_ref + 1e-8 * abs(p_ref) + floor, (c.dual_bound, p_ref)
    # (d) recovery reproduces (4), checked by the project and here from the net's filters
    assert c.network_objective == pytest.approx(c.convex_objective, rel=1e-6, abs=floor)
    U, v = res.network.filters()
    mine = net_objective_ref(U, v, inst.noisy, inst.clean, inst.k, beta, inst.loss, delta, inst.residual)
    assert mine == pytest.approx(p_ref, rel=1e-6, abs=floor)


def _nudge_off_cone(X, M, W, Z, rel=1e-3):
    """Move the largest group across one of its cone rows: that row ends at ``-rel ||w|| ||x_j||``."""
    W, Z = W.copy(), Z.copy()
    nw, nz = np.linalg.norm(W, axis=1), np.linalg.norm(Z, axis=1)
    V, i = (W, int(nw.argmax())) if nw.max() >= nz.max() else (Z, int(nz.argmax()))
    A = (2 * M[i] - 1)[:, None] * X
    j = int(np.linalg.norm(X, axis=1).argmax())  # the row with the largest patch: violation ~ rel
    a = A[j]
    V[i] = V[i] - ((a @ V[i]) + rel * np.linalg.norm(V[i]) * np.linalg.norm(a)) * a / (a @ a)
    return W, Z


def _check_perturbations(inst: Instance):
    """Perturbs the *reference* optimum, so this property tests the certificate alone."""
    problem, X, M, y, beta, delta = _build(inst)
    p_ref, W, Z = solve_program4_ref(X, M, y, beta, inst.loss, delta)
    L0 = loss_ref(-y, inst.loss, delta)
    floor = 1e-9 * L0
    assume(p_ref < L0 * (1 - 1e-4))  # a nonzero optimum: some group is a real neuron
    note(_describe(inst, problem, f"p_ref={p_ref:.10g} L0={L0:.4g}"))

    # scaled: still cone-feasible, so only the gap can (and, when truly suboptimal, must) fail
    Ws, Zs = W * (1 + 1e-3), Z * (1 + 1e-3)
    cs = cd.certify_solution(problem, Ws, Zs)
    true_excess = problem.objective(Ws, Zs) - p_ref
    note(f"scaled: {cs} true excess {true_excess:.3e}")
    assert cs.dual_bound <= p_ref + 1e-8 * abs(p_ref) + floor
    assert cs.gap >= true_excess - 1e-8 * abs(p_ref) - floor  # the gap bounds the suboptimality
    if true_excess > 2 * TOL * abs(p_ref) + floor:
        event("scaled point truly suboptimal")
        assert not cs.ok, cs
    else:
        event("scaled point optimal within the tolerance")
    # nudged off its cone: infeasible for (4) by a relative 1e-3, never certified
    Wn, Zn = _nudge_off_cone(X, M, W, Z)
    cn = cd.certify_solution(problem, Wn, Zn)
    note(f"nudged: {cn}")
    assert cn.max_violation > VTOL and not cn.ok, cn
    assert cn.dual_bound <= p_ref + 1e-8 * abs(p_ref) + floor


# ----------------------------------------------------------------------------- the reference
def test_reference_patch_matrix_is_the_projects_layout():
    """The loop-built X of the reference equals convexdual.patches.patch_matrix (checked once)."""
    rng = np.random.default_rng(0)
    for shape, k in [((2, 1, 4, 5), 3), ((1, 2, 3, 3), 3), ((3, 2, 4, 4), 1), ((1, 1, 5, 5), 5)]:
        x = rng.standard_normal(shape)
        assert np.array_equal(patch_matrix_ref(x, k), patch_matrix(x, k))


# ----------------------------------------------------------------------------- fast properties
# the mutation runner (benchmarks/mutation.py) only needs a failure, not a shrunk one; and the
# same examples in the baseline and in every mutant (derandomize), so a mutant is killed by the
# mutation and never by a newly drawn instance
settings.register_profile("mutation", phases=[Phase.explicit, Phase.reuse, Phase.generate], derandomize=True)
if os.environ.get("CONVEXDUAL_MUTATION_RUN"):
    settings.load_profile("mutation")
# The fast suite draws the same 25 examples every run (derandomize): CI must not pass or fail by the
# luck of a draw. The slow variants below draw fresh random examples (300) each run: that is where new
# counterexamples are searched for (one absolute-loss instance at data scale 1e-6 failed once in two
# dozen random fast runs on 2026-12-02 and was not reproduced in 120 further draws).
FAST = settings(max_examples=25, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(inst=instances(scales=st.floats(-2.0, 2.0)))
def test_certified_optimum_matches_independent_model(inst):
    """(a), (b), (d) on data in units of 1e-2 .. 1e2."""
    _check_optimum_and_bound(inst)


@FAST
@given(inst=instances(scales=st.floats(-2.0, 2.0)))
def test_perturbed_point_is_not_certified(inst):
    """(c) and (b) at perturbed points."""
    _check_perturbations(inst)


@FAST
@given(inst=instances(scales=st.sampled_from([-6.0, -3.0, 3.0, 6.0])))
def test_certified_optimum_at_extreme_data_scales(inst):
    """(a), (b), (d) with data in units of 1e-6, 1e-3, 1e3, 1e6 (issue 11 item 12)."""
    _check_optimum_and_bound(inst)


@FAST
@given(inst=instances(scales=st.sampled_from([-6.0, 6.0])))
def test_perturbed_point_is_not_certified_at_extreme_scales(inst):
    _check_perturbations(inst)


@pytest.mark.slow
@SLOW
@given(inst=instances())
def test_certified_optimum_matches_independent_model_slow(inst):
    _check_optimum_and_bound(inst)


@pytest.mark.slow
@SLOW
@given(inst=instances())
def test_perturbed_point_is_not_certified_slow(inst):
    _check_perturbations(inst)


def _tiny_group_instance() -> Instance:
    """A derandomized draw that failed before finalize's second recovery: Clarabel's optimum of an
    absolute-loss instance at data scale 1e-6 has groups at ~3e-7 of the largest; the default recovery
    threshold (1e-6) dropped them and the net's objective (2) left (4)'s by 1.2e-6 (not certified)."""
    noisy = np.array([[[[4.25095180e-09, -4.18505175e-08, 6.16365136e-08],
                        [-1.14598775e-06, 7.03874407e-07, 2.89800104e-07],
                        [2.40502098e-07, 4.57367070e-07, 3.85474913e-07]]]])
    clean = np.array([[[6.36961687e-07, 2.69786714e-07, 4.09735239e-08],
                       [1.65276355e-08, 8.13270239e-07, 9.12755577e-07],
                       [6.06635776e-07, 7.29496561e-07, 5.43624991e-07]]])
    return Instance(noisy=noisy, clean=clean, k=3, loss="absolute", residual=False, num_patterns=3, seed=0,
                    beta_frac=0.0625, delta_frac=1.0, u=-6.0)


@settings(max_examples=1, deadline=None, database=None)
@given(inst=st.builds(_tiny_group_instance))
def test_absolute_loss_keeps_the_groups_that_move_its_objective(inst):
    """See :func:`_tiny_group_instance`."""
    _check_optimum_and_bound(inst)  # independent optimum, bound, and the net's objective from its filters
