"""Issue 11, item 14: every CVXPY backend honours the common options (tol, max_iter,
time_limit, verbose) or refuses them with a message; ``max_iter`` is an integer >= 1."""

from __future__ import annotations

import numpy as np
import pytest

import convexdual as cd
from convexdual._registry import get_solver
from convexdual.result import Status
from convexdual.solvers.base import SolverOptions
from convexdual.solvers.fista import FistaOptions
from convexdual.solvers.interior_point import InteriorPointOptions, SCSOptions

BACKENDS = [s for s in ("clarabel", "scs", "ecos", "mosek") if get_solver(s).available()[0]]


@pytest.fixture(scope="module")
def tiny():
    rng = np.random.default_rng(0)
    noisy, clean = rng.standard_normal((2, 5, 5)), rng.standard_normal((2, 5, 5))
    pats = cd.sample_patterns(noisy, 3, 6, seed=0)
    return cd.build_problem(noisy, clean, 3, 0.05 * cd.beta_max(noisy, clean, 3, pats), patterns=pats)


@pytest.mark.parametrize("bad", [2.7, True, False, "5", None, float("nan"), float("inf"), 0, -3, np.bool_(True)])
@pytest.mark.parametrize("cls", [SolverOptions, InteriorPointOptions, SCSOptions, FistaOptions])
def test_max_iter_must_be_an_integer_at_least_one(cls, bad):
    with pytest.raises(ValueError, match="max_iter must be an integer >= 1"):
        cls(max_iter=bad)


def test_integral_max_iter_is_kept_as_an_int():
    assert SolverOptions(max_iter=1e4).max_iter == 10_000 and type(SolverOptions(max_iter=1e4).max_iter) is int
    assert type(InteriorPointOptions(max_iter=np.int64(7)).max_iter) is int


@pytest.mark.parametrize("solver", BACKENDS)
def test_max_iter_is_honoured_exactly(tiny, solver):
    ref = cd.solve(tiny, solver=solver)
    assert ref.status is Status.OPTIMAL and ref.iterations > 2, (ref.status, ref.message)
    r = cd.solve(tiny, solver=solver, options={"max_iter": 2})
    # stopped after at most 2 iterations (SCS used to raise 1 silently to 100,000 and say "optimal")
    assert 0 <= r.iterations <= 2, r.iterations
    assert r.status is Status.MAX_ITERATIONS, (r.status, r.message)


def test_scs_passes_max_iter_unchanged(tiny):
    solver = get_solver("scs")
    if not solver.available()[0]:
        pytest.skip("SCS not installed")
    assert solver.native_options(SCSOptions(max_iter=1))["max_iters"] == 1
    assert SCSOptions().max_iter == 100_000  # SCS's own default, stated as an option, not forced


def test_ecos_refuses_a_time_limit_before_any_work(tiny):
    if not get_solver("ecos").available()[0]:
        pytest.skip("ECOS not installed")
    with pytest.raises(ValueError, match="ECOS has no time limit.*max_iter"):
        cd.solve(tiny, solver="ecos", options={"time_limit": 5.0})
    assert cd.solve(tiny, solver="ecos", options={"time_limit": None}).status is Status.OPTIMAL


@pytest.mark.parametrize("solver", [s for s in BACKENDS if s != "ecos"])
def test_time_limit_is_honoured(tiny, solver):
    # a limit far below one iteration: the backend must stop at once and say so
    r = cd.solve(tiny, solver=solver, options={"time_limit": 1e-7})
    assert r.status is Status.TIME_LIMIT, (r.status, r.message)


@pytest.mark.parametrize("solver", BACKENDS)
def test_tol_is_honoured(tiny, solver):
    loose = cd.solve(tiny, solver=solver, options={"tol": 1e-2})
    tight = cd.solve(tiny, solver=solver)
    assert loose.iterations < tight.iterations, (loose.iterations, tight.iterations)


@pytest.mark.parametrize("solver", BACKENDS)
def test_verbose_is_honoured(tiny, solver, capfd):
    cd.solve(tiny, solver=solver, options={"verbose": False})
    quiet = capfd.readouterr()
    cd.solve(tiny, solver=solver, options={"verbose": True})
    loud = capfd.readouterr()
    assert len(loud.out + loud.err) > len(quiet.out + quiet.err) + 100


def test_thread_limit_covers_torch_and_numba_and_is_restored():
    import torch

    from convexdual._threads import torch_threads

    numba = pytest.importorskip("numba")
    before = (torch.get_num_threads(), numba.get_num_threads())
    with torch_threads(1):
        assert torch.get_num_threads() == 1 and numba.get_num_threads() == 1
    assert (torch.get_num_threads(), numba.get_num_threads()) == before
    with torch_threads(None):
        assert (torch.get_num_threads(), numba.get_num_threads()) == before
