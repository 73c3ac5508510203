"""Bad input gets a clear error that says what is allowed."""

import numpy as np
import pytest

import convexdual as cd
from convexdual.data.arrays import load_pair


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return rng.standard_normal((3, 6, 6)), rng.standard_normal((3, 6, 6))


def test_nan_and_inf(data):
    noisy, clean = data
    bad = noisy.copy()
    bad[0, 1, 1] = np.nan
    with pytest.raises(ValueError, match="noisy contains 1 NaN/Inf"):
        cd.build_problem(bad, clean, 3, 1.0, num_patterns=5)
    bad = clean.copy()
    bad[1, 2, 2] = np.inf
    with pytest.raises(ValueError, match="clean contains 1 NaN/Inf"):
        cd.build_problem(noisy, bad, 3, 1.0, num_patterns=5)


def test_mismatched_shapes(data):
    noisy, clean = data
    with pytest.raises(ValueError, match=r"clean has shape \(2, 6, 6\) but the inputs imply"):
        cd.build_problem(noisy, clean[:2], 3, 1.0)
    with pytest.raises(ValueError, match=r"must have shape \(N, H, W\) or \(N, C, H, W\)"):
        cd.build_problem(noisy[0, 0], clean, 3, 1.0)
    with pytest.raises(ValueError, match="single channel"):
        cd.build_problem(noisy, np.stack([clean, clean], 1), 3, 1.0)


@pytest.mark.parametrize("beta", [0, -1.0, np.nan, np.inf])
def test_beta_must_be_positive(data, beta):
    with pytest.raises(ValueError, match="beta must be a finite number > 0"):
        cd.build_problem(*data, 3, beta)


def test_kernel_checks(data):
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        cd.build_problem(*data, 4, 1.0)
    with pytest.raises(ValueError, match=r"larger than the image \(6x6\); use a kernel no larger than 5"):
        cd.build_problem(*data, 7, 1.0)
    with pytest.raises(TypeError, match="kernel_size must be an odd positive int"):
        cd.build_problem(*data, 3.0, 1.0)


def test_zero_patterns(data):
    with pytest.raises(ValueError, match="num_patterns must be an int >= 1"):
        cd.build_problem(*data, 3, 1.0, num_patterns=0)


def test_patterns_from_other_data(data):
    """Gates from other images are re-applied to these inputs; an enumeration is exact only for its own data."""
    noisy, clean = data
    pats = cd.sample_patterns(noisy[:2], 3, 5)
    prob = cd.build_problem(noisy, clean, 3, 1.0, patterns=pats)
    assert not prob.exact
    assert {tuple(g) for g in prob.patterns.gates} <= {tuple(g) for g in pats.gates}
    exact = cd.enumerate_patterns(noisy[:1, :3, :3], 3)
    with pytest.raises(ValueError, match="enumerated on other images"):
        cd.build_problem(noisy[1:2, :3, :3], clean[1:2, :3, :3], 3, 1.0, patterns=exact)
    with pytest.raises(ValueError, match="compute the patterns on these inputs"):
        cd.build_problem(noisy, clean, 3, 1.0, patterns=cd.sample_patterns(noisy[:, :5, :5], 5, 5))


def test_complex_input_refused(data):
    noisy, clean = data
    with pytest.raises(TypeError, match="split real and imaginary parts"):
        cd.build_problem(noisy + 1j, clean, 3, 1.0)


def test_unknown_loss_and_bad_huber(data):
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        cd.build_problem(*data, 3, 1.0, loss="hinge")
    with pytest.raises(ValueError, match="Huber delta must be a finite number > 0"):
        cd.build_problem(*data, 3, 1.0, loss="huber", huber_delta=0.0)


def test_residual_channel_checked(data):
    with pytest.raises(ValueError, match="residual_channel must index an input channel"):
        cd.build_problem(*data, 3, 1.0, residual=True, residual_channel=2)


def test_unknown_solver(small_problem):
    with pytest.raises(cd.SolverUnavailableError, match="unknown solver 'gurobi'; registered solvers: .*clarabel"):
        cd.solve(small_problem, solver="gurobi")


def test_solve_needs_a_problem():
    with pytest.raises(TypeError, match="problem must be a DualProblem"):
        cd.solve(np.zeros(3))


def test_wrong_options_type(small_problem):
    from convexdual.solvers.fista import FistaOptions

    with pytest.raises(TypeError, match="options for solver 'clarabel' must be InteriorPointOptions, a dict or None"):
        cd.solve(small_problem, solver="clarabel", options=FistaOptions())
    with pytest.raises(TypeError, match="solver 'clarabel' has no option.*'foo'; its options are: .*tol"):
        cd.solve(small_problem, solver="clarabel", options={"foo": 1})


def test_mosek_without_licence_is_named(small_problem):
    from convexdual.solvers.interior_point import probe_mosek

    ok, why = probe_mosek()
    if ok:
        pytest.skip("MOSEK is licensed here")
    with pytest.raises(cd.SolverUnavailableError, match="MOSEK"):
        cd.solve(small_problem, solver="mosek")
    # 'auto' is active_set for the squared loss; for other losses it falls back to Clarabel and says so
    huber = cd.build_problem(small_problem.inputs, small_problem.targets, 3, small_problem.beta,
                             patterns=small_problem.patterns, loss="huber")
    res = cd.solve(huber, solver="auto", recover=False, certify=False)
    assert res.solver == "clarabel" and "MOSEK unavailable" in res.message and "using Clarabel" in res.message


def test_malformed_files(tmp_path):
    p = tmp_path / "junk.npz"
    p.write_bytes(b"this is not a zip archive")
    with pytest.raises(cd.DataFormatError, match="could not read"):
        load_pair(p)
    q = tmp_path / "wrong.npz"
    np.savez(q, images=np.zeros((2, 4, 4)))
    with pytest.raises(cd.DataFormatError, match=r"expected 'clean'"):
        load_pair(q)
    with pytest.raises(cd.DataFormatError, match="does not exist"):
        load_pair(tmp_path / "missing.npz")
    with pytest.raises(cd.DataFormatError, match="unsupported data file"):
        load_pair(tmp_path.joinpath("x.txt")) if tmp_path.joinpath("x.txt").write_text("1") else None
    r = tmp_path / "net.pt"
    r.write_bytes(b"garbage")
    with pytest.raises(cd.DataFormatError, match="not a readable torch file"):
        cd.TwoLayerConvNet.load(r)


def test_solver_options_validated():
    from convexdual.solvers.interior_point import InteriorPointOptions

    with pytest.raises(ValueError, match="tol must be > 0"):
        InteriorPointOptions(tol=0)
    with pytest.raises(ValueError, match="time_limit must be > 0"):
        InteriorPointOptions(time_limit=-1)


# ---------------------------------------------------------------------------------------- issue 11, item 20
from convexdual._validation import as_images, check_beta, check_device, check_num_threads  # noqa: E402


@pytest.mark.parametrize("beta", [True, False, np.bool_(True)])
def test_bool_beta_refused(data, beta):
    with pytest.raises(TypeError, match="beta must be a positive real number .* got the bool"):
        cd.build_problem(*data, 3, beta)


def test_bool_images_refused(data):
    noisy, clean = data
    with pytest.raises(TypeError, match="noisy is a bool array; it must hold real numbers"):
        cd.build_problem(noisy > 0, clean, 3, 1.0)
    with pytest.raises(TypeError, match="clean is a bool array"):
        cd.build_problem(noisy, clean > 0, 3, 1.0)
    assert as_images((noisy > 0).astype(float)).dtype == np.float64  # the conversion the message suggests


@pytest.mark.parametrize("n, err", [(0, ValueError), (-2, ValueError), (True, TypeError), (1.5, TypeError)])
def test_num_threads_checked(n, err):
    with pytest.raises(err, match="num_threads must be"):
        check_num_threads(n)
    assert check_num_threads(2) == 2 and check_num_threads(None) is None


def test_device_checked_up_front():
    import torch

    assert check_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        check_device("gpu0")
    with pytest.raises(TypeError, match="device must be a str"):
        check_device(0.5)
    if torch.cuda.is_available():
        assert check_device("cuda").type == "cuda"
        with pytest.raises(ValueError, match="CUDA device"):
            check_device(f"cuda:{torch.cuda.device_count()}")
    else:
        with pytest.raises(ValueError, match="use device='cpu'"):
            check_device("cuda")


def test_check_beta_values():
    assert check_beta(2) == 2.0 and check_beta(np.float32(0.5)) == 0.5
    with pytest.raises(TypeError, match="got the string"):
        check_beta("2.0")
