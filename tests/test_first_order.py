"""Pattern operator and torch solvers: references are the explicit patch matrix, Clarabel and
the exact certificate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import convexdual as cd
from convexdual._fused_kernels import numba_available
from convexdual.operators import PatternOperator
from convexdual.result import Status
from convexdual.solvers.active_set import ActiveSetOptions, ActiveSetSolver
from convexdual.solvers.adam_hinge import AdamHingeOptions
from convexdual.solvers.augmented_lagrangian import AugmentedLagrangianOptions
from convexdual.solvers.fista import FistaOptions, FistaSolver, group_soft_threshold

# numba compiles its kernels per dtype (~10-30 s on a loaded machine): those cases are slow
BACKENDS = ["torch"] + (["numba"] if numba_available() else [])  # numba: compiled once per machine (disk cache)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_operator_matches_explicit_patch_matrix(small_problem, backend, dtype, tol):
    p = small_problem
    rng = np.random.default_rng(1)
    V, r = rng.standard_normal((p.P, p.d)), rng.standard_normal(p.n)
    # a tiny budget forces several image batches (the chunked path)
    op = PatternOperator.from_problem(p, backend=backend, dtype=dtype, memory_budget_mb=0.05)
    assert len(op.batches()) > 1
    fwd_ref = p.predict(V, np.zeros_like(V))
    M_ref = (p.X @ p.patterns.gates.T >= 0).T.astype(float)  # explicit masks from the gates
    adj_ref = M_ref @ (p.X * r[:, None])
    assert np.allclose(op.forward(V).double().numpy(), fwd_ref, atol=tol * np.abs(fwd_ref).max())
    assert np.allclose(op.adjoint(r).double().numpy(), adj_ref, atol=tol * np.abs(adj_ref).max())
    yhat, g = op.gradient_sq(V, p.y)
    g_ref = M_ref @ (p.X * (fwd_ref - p.y)[:, None])
    assert np.allclose(g.double().numpy(), g_ref, atol=tol * np.abs(g_ref).max())


def test_operator_rejects_bad_input(small_problem):
    with pytest.raises(ValueError, match="dtype"):
        PatternOperator.from_problem(small_problem, dtype=torch.int32)
    with pytest.raises(ValueError, match="backend"):
        PatternOperator.from_problem(small_problem, backend="fortran")
    op = PatternOperator.from_problem(small_problem)
    with pytest.raises(ValueError, match="shape"):
        op.forward(np.zeros((3, 3)))


def _hinge_autograd(p, W, Z, lam, images):
    """The minibatch hinge-penalised loss of (4) differentiated by torch autograd on explicit masks."""
    hw = p.image_shape[0] * p.image_shape[1]
    rows = np.concatenate([np.arange(i * hw, (i + 1) * hw) for i in images])
    X, y = torch.as_tensor(p.X[rows]), torch.as_tensor(p.y[rows])
    M = (X @ torch.as_tensor(p.patterns.gates).T >= 0).double()
    S = 2 * M - 1
    W = torch.tensor(W, requires_grad=True)
    Z = torch.tensor(Z, requires_grad=True)
    yhat = ((X @ W.T - X @ Z.T) * M).sum(1)
    pen = lam * (torch.relu(-S * (X @ W.T)).sum() + torch.relu(-S * (X @ Z.T)).sum())
    (0.5 * ((yhat - y) ** 2).sum() + pen).backward()
    return yhat.detach().numpy(), float(pen.detach()), W.grad.numpy(), Z.grad.numpy()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_hinge_gradient_matches_autograd(small_problem, backend, dtype, tol):
    p = small_problem
    rng = np.random.default_rng(4)
    # weights of both signs on every row, so that both branches of every hinge are taken
    W, Z = rng.standard_normal((p.P, p.d)), rng.standard_normal((p.P, p.d))
    images = [p.num_images - 1, 0, 1] if p.num_images > 2 else [0]
    op = PatternOperator.from_problem(p, backend=backend, dtype=dtype, memory_budget_mb=0.01)
    ref = _hinge_autograd(p, W, Z, 0.7, images)
    got = op.hinge_gradient(W, Z, p.y, 0.7, images)
    assert 0 < ref[1]  # some rows violate their cones
    for a, b in zip(got, ref):
        a = np.asarray(a.double().numpy() if torch.is_tensor(a) else a)
        assert np.allclose(a, b, rtol=0, atol=tol * max(1.0, np.abs(b).max())), (backend, dtype)
    with pytest.raises(ValueError, match="images"):
        op.hinge_gradient(W, Z, p.y, 0.7, [p.num_images])
    with pytest.raises(ValueError, match="hinge"):
        op.hinge_gradient(W, Z, p.y, -1.0, [0])
    with pytest.raises(ValueError, match="shape"):
        op.hinge_gradient(W[:1], Z, p.y, 0.7, [0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_adam_hinge_follows_the_autograd_reference(small_problem, backend):
    """Two epochs of the solver equal Adam on the autograd loss, minibatch by minibatch."""
    p = small_problem
    o = AdamHingeOptions(max_iter=2, batch_size=2, check_every=2, seed=5, lr=3e-2, hinge=0.5, backend=backend)
    r = cd.solve(p, solver="adam_hinge", options=o, certify=False, recover=False)
    gen = torch.Generator().manual_seed(5)
    W = (o.init_scale * torch.randn(p.P, p.d, generator=gen, dtype=torch.float64)).requires_grad_(True)
    Z = (o.init_scale * torch.randn(p.P, p.d, generator=gen, dtype=torch.float64)).requires_grad_(True)
    opt = torch.optim.Adam([W, Z], lr=o.lr)
    for _ in range(2):
        perm = torch.randperm(p.num_images, generator=gen).tolist()
        for b in range(0, p.num_images, o.batch_size):
            imgs = perm[b:b + o.batch_size]
            _, _, gW, gZ = _hinge_autograd(p, W.detach().numpy(), Z.detach().numpy(), o.hinge, imgs)
            with torch.no_grad():
                Wn, Zn = W.detach().clone().requires_grad_(True), Z.detach().clone().requires_grad_(True)
            (Wn.norm(dim=1).sum() + Zn.norm(dim=1).sum()).backward()
            scale = p.num_images / len(imgs)
            W.grad = scale * torch.as_tensor(gW) + p.beta * Wn.grad
            Z.grad = scale * torch.as_tensor(gZ) + p.beta * Zn.grad
            opt.step()
    assert np.allclose(r.W, W.detach().numpy(), rtol=0, atol=1e-10)
    assert np.allclose(r.Z, Z.detach().numpy(), rtol=0, atol=1e-10)
    assert np.abs(r.W).max() > 10 * o.init_scale  # the run moved


def test_group_soft_threshold_is_the_prox():
    V = torch.tensor([[3.0, 4.0], [0.3, 0.4]], dtype=torch.float64)
    out = group_soft_threshold(V, 1.0)
    assert torch.allclose(out[0], torch.tensor([2.4, 3.2], dtype=torch.float64))
    assert torch.all(out[1] == 0)


def _gated_reference(p):
    """The gated relaxation solved by CVXPY/Clarabel (independent reference)."""
    import cvxpy as cp

    V = cp.Variable((p.P, p.d))
    X, M = p.X, (p.X @ p.patterns.gates.T >= 0).T.astype(float)
    pred = cp.sum(cp.multiply(M.T, X @ V.T), axis=1)
    prob = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(pred - p.y) + p.beta * cp.sum(cp.norm(V, 2, axis=1))))
    prob.solve(solver="CLARABEL")
    return prob.value


def test_fista_solves_the_gated_relaxation(small_problem, small_solution):
    r = cd.solve(small_problem, solver="fista", options=FistaOptions(tol=1e-7, max_iter=20_000))
    ref = _gated_reference(small_problem)
    assert abs(r.objective - ref) <= 1e-5 * abs(ref)
    assert r.info["lower_bound"] <= ref * (1 + 1e-9)
    # the relaxation is a lower bound of (4); its point violates (4)'s cones here,
    # so the solver must not call it optimal for (4)
    assert ref <= small_solution.objective * (1 + 1e-9)
    if r.certificate.max_violation > 1e-7:
        assert r.status is Status.OPTIMAL_INACCURATE


def test_fista_float32_close_to_float64(small_problem):
    a = FistaSolver().solve(small_problem, FistaOptions(tol=1e-5, dtype="float64"))
    b = FistaSolver().solve(small_problem, FistaOptions(tol=1e-5, dtype="float32"))
    assert abs(a.objective - b.objective) <= 1e-4 * abs(a.objective)


def test_fista_checkpoint_resume_continues_the_same_run(small_problem, tmp_path):
    ck = tmp_path / "f.pt"
    full = FistaSolver().solve(small_problem, FistaOptions(tol=1e-12, max_iter=60, check_every=20))
    FistaSolver().solve(small_problem, FistaOptions(tol=1e-12, max_iter=30, checkpoint_path=str(ck),
                                                    checkpoint_every=30, check_every=20))
    resumed = FistaSolver().solve(small_problem, FistaOptions(tol=1e-12, max_iter=60, resume_from=str(ck),
                                                              check_every=20))
    assert resumed.iterations == full.iterations == 60
    assert np.array_equal(resumed.W, full.W) and np.array_equal(resumed.Z, full.Z)


def test_fista_is_deterministic(small_problem):
    a = FistaSolver().solve(small_problem, FistaOptions(tol=1e-12, max_iter=40, seed=3))
    b = FistaSolver().solve(small_problem, FistaOptions(tol=1e-12, max_iter=40, seed=3))
    assert np.array_equal(a.W, b.W)


def test_checkpoint_from_other_solver_is_refused(small_problem, tmp_path):
    ck = tmp_path / "a.pt"
    cd.solve(small_problem, solver="adam_hinge", certify=False, recover=False,
             options=AdamHingeOptions(max_iter=2, check_every=1, checkpoint_path=str(ck), checkpoint_every=1))
    with pytest.raises(ValueError, match="adam_hinge"):
        FistaSolver().solve(small_problem, FistaOptions(resume_from=str(ck)))


def test_adam_hinge_is_reported_honestly(small_problem, small_solution, tmp_path):
    opts = AdamHingeOptions(max_iter=6, batch_size=2, check_every=3, seed=0)
    r = cd.solve(small_problem, solver="adam_hinge", options=opts)
    # 6 epochs of Adam + hinge cannot reach the optimum: the status says so and the certificate shows why
    assert r.status is Status.MAX_ITERATIONS and r.iterations == 6, (r.status, r.message)
    c = r.certificate
    assert not c.ok and (c.relative_gap > 1e-6 or c.max_violation > 1e-7)
    assert c.convex_objective == pytest.approx(small_problem.objective(r.W, r.Z), rel=1e-12)
    # the bound it reports is a real lower bound (Clarabel's certified optimum) even at an infeasible iterate
    assert c.dual_bound <= small_solution.objective * (1 + 1e-9)
    # the history logs the certificate at the last check, not a number of its own
    assert len(r.history) == 2 and all(np.isfinite(h["relative_gap"]) for h in r.history)
    assert r.history[-1]["objective"] == pytest.approx(c.convex_objective, rel=1e-9)
    assert r.history[-1]["relative_gap"] == pytest.approx(c.relative_gap, rel=1e-6)
    # resume: 3 epochs + 3 epochs == 6 epochs (same minibatch order, same Adam state)
    ck = tmp_path / "h.pt"
    cd.solve(small_problem, solver="adam_hinge", recover=False, certify=False,
             options=opts.replace(max_iter=3, checkpoint_path=str(ck), checkpoint_every=3))
    r2 = cd.solve(small_problem, solver="adam_hinge", recover=False, certify=False,
                  options=opts.replace(resume_from=str(ck)))
    assert np.allclose(r2.W, r.W, rtol=0, atol=1e-12) and np.allclose(r2.Z, r.Z, rtol=0, atol=1e-12)


def test_augmented_lagrangian_never_claims_a_wrong_optimum(small_problem, small_solution):
    r = cd.solve(small_problem, solver="augmented_lagrangian",
                 options=AugmentedLagrangianOptions(max_iter=5, inner_iter=50))
    assert r.certificate.max_violation <= 1e-9  # the exact polish keeps every point feasible
    assert r.objective >= small_solution.objective * (1 - 1e-9)
    # 5 outer iterations stall far above the optimum (~40% here): never "optimal", and the
    # certificate that says so is honest (its bound is below Clarabel's certified optimum)
    c = r.certificate
    assert r.status is Status.MAX_ITERATIONS, (r.status, r.message)
    assert not c.ok and c.relative_gap > 1e-3
    assert c.dual_bound <= small_solution.objective * (1 + 1e-9)
    assert c.convex_objective - small_solution.objective <= c.gap * (1 + 1e-9)  # gap bounds the excess


def test_options_validation():
    with pytest.raises(ValueError, match="dtype"):
        FistaOptions(dtype="float16")
    with pytest.raises(ValueError, match="resume_from"):
        FistaOptions(resume_from="/nonexistent/ckpt.pt")


# ---------------------------------------------------------------- active_set (high accuracy)
def _conforms(r, ref_objective):
    """The conformance bar of issue 3: optimum to 1e-6, certified gap <= 1e-6, violation <= 1e-7."""
    assert r.status is Status.OPTIMAL, r.message
    assert abs(r.objective - ref_objective) <= 1e-6 * abs(ref_objective)
    assert r.certificate.relative_gap <= 1e-6 and r.certificate.max_violation <= 1e-7
    assert r.certificate.ok


def test_active_set_reaches_clarabels_optimum(small_problem, small_solution):
    r = cd.solve(small_problem, solver="active_set")
    _conforms(r, small_solution.objective)
    # its own stopping numbers are the certificate's, not an iteration count
    assert r.history[-1]["relative_gap"] <= 1e-6 and r.history[-1]["violation"] <= 1e-7
    assert all(h["relative_gap"] > 1e-6 for h in r.history[:-1])


@pytest.fixture(scope="module")
def digits20_problem():
    from tests.conftest import make_digits

    noisy, clean = make_digits(20, 0.5, 0)
    pats = cd.sample_patterns(noisy, 3, 100, seed=0)
    return cd.build_problem(noisy, clean, 3, 0.02 * cd.beta_max(noisy, clean, 3, pats), patterns=pats)


def test_active_set_at_20_digits_is_certified(digits20_problem):
    # the certificate (convexdual.certificate, explicit patch matrix) is the reference here:
    # a certified gap <= 1e-6 bounds the distance to the optimum of (4). The comparisons
    # with interior-point solvers at this size take 10 s to minutes: slow tests below.
    r = cd.solve(digits20_problem, solver="active_set")
    _conforms(r, r.certificate.dual_bound)


@pytest.mark.slow
def test_active_set_at_20_digits_matches_the_working_set_interior_point(digits20_problem):
    ref = cd.solve(digits20_problem, solver="clarabel-ws")
    assert ref.certificate.ok
    _conforms(cd.solve(digits20_problem, solver="active_set"), ref.objective)


@pytest.mark.slow
def test_active_set_at_20_digits_matches_plain_clarabel(digits20_problem):
    ref = cd.solve(digits20_problem, solver="clarabel")
    _conforms(cd.solve(digits20_problem, solver="active_set"), ref.objective)


def test_active_set_first_found_entering_reaches_clarabels_optimum(small_problem, small_solution):
    # entering="first": rounds stop their scans at the first violators (in the order of their
    # unconstrained norms); the last scan is complete, so the certificate is the same
    r = cd.solve(small_problem, solver="active_set", options=ActiveSetOptions(entering="first", groups_per_round=2,
                                                                            init_groups=2))
    _conforms(r, small_solution.objective)
    with pytest.raises(ValueError, match="entering must be"):
        ActiveSetOptions(entering="best")


def _stalling_clarabel(monkeypatch, spoil):
    """Make every restricted Clarabel solve report InsufficientProgress, with its solution spoiled
    by ``spoil(x)`` (what a stalled interior point leaves: a point near, not at, the optimum)."""
    from types import SimpleNamespace

    import convexdual.solvers.active_set as mod

    real = mod.solve_program

    def stalled(prog, values, native, verbose=False):
        sol = real(prog, values, native, verbose)
        return SimpleNamespace(status="InsufficientProgress", x=spoil(np.asarray(sol.x, dtype=np.float64)),
                               iterations=sol.iterations)

    monkeypatch.setattr(mod, "solve_program", stalled)


def test_active_set_goes_on_from_a_stalled_restricted_solve(small_problem, small_solution, monkeypatch):
    # Clarabel's InsufficientProgress (seen on real MNIST, n = 470,400, at a gap ~1e-11): the round
    # goes on with the last iterate, and the exact polish + certificate decide, so the run still
    # reaches Clarabel's optimum and says so only with a certified gap
    rng = np.random.default_rng(0)
    _stalling_clarabel(monkeypatch, lambda x: x * (1 + 1e-9 * rng.standard_normal(x.shape)))
    _conforms(cd.solve(small_problem, solver="active_set"), small_solution.objective)


def test_active_set_stops_on_a_restricted_solve_without_a_point(small_problem, monkeypatch):
    _stalling_clarabel(monkeypatch, lambda x: np.full_like(x, np.nan))
    r = cd.solve(small_problem, solver="active_set")
    assert r.status is Status.NUMERICAL_ERROR and "InsufficientProgress" in r.message


def test_active_set_warm_start_float32(small_problem, small_solution):
    # float32 is the precision of the gated warm start; the polish and certificate stay float64
    r = cd.solve(small_problem, solver="active_set", options=ActiveSetOptions(warm_start=True, dtype="float32"))
    _conforms(r, small_solution.objective)
    assert r.info["warm_start"]["used"]


def test_active_set_checkpoint_resume_continues_the_same_run(small_problem, tmp_path):
    ck = tmp_path / "as.pt"
    full = ActiveSetSolver().solve(small_problem, ActiveSetOptions())
    assert full.iterations >= 2
    part = ActiveSetSolver().solve(small_problem, ActiveSetOptions(max_iter=1, checkpoint_path=str(ck)))
    assert part.status is Status.MAX_ITERATIONS  # one round is not certified here: not "optimal"
    resumed = ActiveSetSolver().solve(small_problem, ActiveSetOptions(resume_from=str(ck)))
    assert resumed.status is Status.OPTIMAL and resumed.iterations == full.iterations
    assert np.array_equal(resumed.W, full.W) and np.array_equal(resumed.Z, full.Z)
    assert [h["objective"] for h in resumed.history] == [h["objective"] for h in full.history]


def test_active_set_resume_of_a_finished_run_reruns_nothing(small_problem, tmp_path):
    # issue 11.16: resuming the checkpoint of a finished run must not run an extra round
    ck = tmp_path / "done.ckpt"
    done = ActiveSetSolver().solve(small_problem, ActiveSetOptions(checkpoint_path=str(ck)))
    assert done.status is Status.OPTIMAL
    from convexdual.checkpoint import checkpoint_finished

    assert checkpoint_finished(ck)
    again = ActiveSetSolver().solve(small_problem, ActiveSetOptions(resume_from=str(ck), checkpoint_path=str(ck)))
    assert again.info.get("resumed_finished") and "nothing re-run" in again.message
    assert again.status is done.status and again.iterations == done.iterations
    assert np.array_equal(again.W, done.W) and np.array_equal(again.Z, done.Z)
    assert again.objective == done.objective


def test_active_set_rejects_what_it_cannot_do(digits_small):
    noisy, clean = digits_small
    huber = cd.build_problem(noisy, clean, 3, 1.0, num_patterns=5, loss="huber")
    with pytest.raises(ValueError, match="squared loss"):
        ActiveSetSolver().solve(huber, ActiveSetOptions())
    with pytest.raises(ValueError, match="drop_after"):
        ActiveSetOptions(drop_after=-1)
    with pytest.raises(ValueError, match="init_rows"):
        ActiveSetOptions(init_rows=0)


@pytest.mark.gpu
def test_active_set_on_cuda(small_problem, small_solution):
    _conforms(cd.solve(small_problem, solver="active_set", options=ActiveSetOptions(device="cuda", warm_start=True)),
              small_solution.objective)


@pytest.mark.gpu
def test_operator_and_fista_on_cuda(small_problem):
    op = PatternOperator.from_problem(small_problem, device="cuda", dtype=torch.float64)
    V = np.random.default_rng(0).standard_normal((small_problem.P, small_problem.d))
    ref = small_problem.predict(V, np.zeros_like(V))
    assert np.allclose(op.forward(V).cpu().numpy(), ref, atol=1e-10 * np.abs(ref).max())
    a = FistaSolver().solve(small_problem, FistaOptions(tol=1e-6, device="cuda"))
    b = FistaSolver().solve(small_problem, FistaOptions(tol=1e-6, device="cpu"))
    assert abs(a.objective - b.objective) <= 1e-5 * abs(b.objective)


def test_fista_says_what_it_reports_and_what_it_certifies(small_problem, small_solution):
    """Issue 11, item 13: fista's objective is the gated relaxation's; what it certifies is a lower
    bound on (4); a negative "gap" at its point (outside (4)'s cones) is never presented as a gap of (4)."""
    from convexdual.certificate import certify_solution

    p = small_problem
    raw = FistaSolver().solve(p, FistaOptions(tol=1e-7, max_iter=20_000))  # before finalize
    info = raw.info
    c_raw = certify_solution(p, raw.W, raw.Z)
    # on this instance the relaxation's point violates (4)'s cones and (4)'s bound exceeds its value
    assert c_raw.max_violation > 1e-3 and c_raw.relative_gap < -1e-3
    assert info["objective_of"].startswith("gated relaxation") and info["violation"] == pytest.approx(c_raw.max_violation)
    assert info["relaxation_objective"] == raw.objective
    assert 0 <= info["relaxation_relative_gap"] <= 1e-6  # the relaxation's own gap: never negative
    # what it certifies: lower bounds on (4), below Clarabel's certified optimum of (4)
    assert info["lower_bound"] <= info["lower_bound_of_4"] <= small_solution.objective * (1 + 1e-9)
    assert info["lower_bound_of_4"] == pytest.approx(c_raw.dual_bound, rel=1e-9)
    assert raw.status is Status.OPTIMAL_INACCURATE
    assert "gated relaxation's value" in raw.message and "NOT a point of (4)" in raw.message
    assert "is negative" in raw.message and "not that (4) is solved" in raw.message
    # through cd.solve the answer is never a certified optimum of (4)
    r = cd.solve(p, solver="fista", options=FistaOptions(tol=1e-7, max_iter=20_000))
    assert r.status is not Status.OPTIMAL and not r.certificate.ok
    assert "gated relaxation's value" in r.message
    assert r.certificate.dual_bound <= small_solution.objective * (1 + 1e-9)


def test_fista_negative_relaxation_gap_is_a_broken_bound_not_optimal(small_problem, tmp_path, monkeypatch):
    import convexdual.solvers._harness as harness  # the loop that loads checkpoints

    ck = tmp_path / "f.ck"
    FistaSolver().solve(small_problem, FistaOptions(tol=1e-12, max_iter=10, checkpoint_path=str(ck),
                                                    checkpoint_every=10))
    real = harness.load_checkpoint

    def broken(*a, **k):  # a "lower bound" above every value of the relaxation
        st = dict(real(*a, **k))
        st["lower"] = 10.0 * float(small_problem.y @ small_problem.y)
        return st

    monkeypatch.setattr(harness, "load_checkpoint", broken)
    r = cd.solve(small_problem, solver="fista", options=FistaOptions(tol=1e-6, max_iter=20, resume_from=str(ck)))
    assert r.status is Status.NUMERICAL_ERROR, (r.status, r.message)
    assert "duality gap came out negative" in r.message and "nothing is certified" in r.message
