"""The recovered network (eq. 5), persistence, inference on a device, and import hygiene."""

import subprocess
import sys

import numpy as np
import pytest
import torch

import convexdual as cd
from convexdual.recover import recover_filters


def test_recovery_formula_and_balance(small_solution):
    U, v, groups = recover_filters(small_solution.W, small_solution.Z)
    P = small_solution.W.shape[0]
    for u, vj, g in zip(U, v, groups):
        w = small_solution.W[g] if g < P else small_solution.Z[g - P]
        # eq. (5): u v = w (sign of v carries w/z), and ||u|| = |v| (balanced)
        np.testing.assert_allclose(u * abs(vj), w, rtol=1e-12, atol=1e-15)
        assert np.isclose(np.linalg.norm(u), abs(vj))
        assert (vj > 0) == (g < P)
    # penalty of (2) equals the group-lasso penalty of (4)
    reg2 = 0.5 * (np.sum(U**2) + np.sum(v**2))
    reg4 = np.linalg.norm(small_solution.W[groups[groups < P]], axis=1).sum() + \
        np.linalg.norm(small_solution.Z[groups[groups >= P] - P], axis=1).sum()
    assert np.isclose(reg2, reg4)


def test_network_on_device_and_batched(small_problem, small_solution, device):
    net = cd.recover_network(small_problem, small_solution.W, small_solution.Z, device=device)
    assert next(net.parameters()).device.type == device.type
    full = net.predict(small_problem.inputs, batch_size=1000)
    batched = net.predict(small_problem.inputs, batch_size=2)
    np.testing.assert_allclose(full, batched, rtol=1e-12)
    x = torch.from_numpy(small_problem.inputs).to(device)
    with torch.no_grad():
        np.testing.assert_allclose(net(x)[:, 0].cpu().numpy(), full, rtol=1e-12)


def test_save_load_roundtrip(tmp_path, small_problem, small_solution):
    net = small_solution.network
    path = net.save(tmp_path / "net.pt", metadata={"beta": small_problem.beta, "note": "test"})
    net2, meta = cd.TwoLayerConvNet.load(path)
    assert meta == {"beta": small_problem.beta, "note": "test"}
    assert net2.width == net.width and net2.kernel_size == 3 and not net2.residual
    np.testing.assert_array_equal(net2.predict(small_problem.inputs), net.predict(small_problem.inputs))
    torch.save({"format": "something-else"}, tmp_path / "other.pt")
    with pytest.raises(cd.DataFormatError, match="not a convexdual network file"):
        cd.TwoLayerConvNet.load(tmp_path / "other.pt")


def test_zero_width_network_predicts_skip_only():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 5))
    net = cd.TwoLayerConvNet.from_filters(np.zeros((0, 9)), np.zeros(0), 1, 3, residual=True)
    np.testing.assert_allclose(net.predict(x), x)


def test_huge_beta_gives_zero_network(digits_small):
    noisy, clean = digits_small
    pats = cd.sample_patterns(noisy, 3, 5, seed=0)
    problem = cd.build_problem(noisy, clean, 3, 10 * cd.beta_max(noisy, clean, 3, pats), patterns=pats)
    res = cd.solve(problem, solver="clarabel")
    assert res.certificate.ok and res.num_groups == 0
    assert np.isclose(res.objective, 0.5 * np.sum(problem.y**2), rtol=1e-6)


def test_status_and_result_api(small_solution):
    assert small_solution.status == "optimal" and str(small_solution.status) == "optimal"
    assert small_solution.raise_for_status() is small_solution
    d = small_solution.to_dict()
    assert d["status"] == "optimal" and d["certificate"]["ok"] is True
    assert small_solution.iterations > 0 and small_solution.timings.solve > 0


def test_iteration_limit_is_not_optimal(small_problem):
    from convexdual.solvers.interior_point import InteriorPointOptions

    res = cd.solve(small_problem, solver="clarabel", options=InteriorPointOptions(max_iter=3))
    assert res.status is not cd.Status.OPTIMAL
    with pytest.raises(cd.SolverFailedError, match="max_iterations|optimal_inaccurate"):
        res.raise_for_status()


def test_import_convexdual_loads_no_backend():
    code = ("import sys, convexdual; bad = [m for m in sys.modules if m.split('.')[0] in "
            "('cvxpy', 'mosek', 'clarabel', 'scs', 'ecos') or m.startswith('convexdual.solvers')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_solvers_package_refuses_other_names(tmp_path):
    import convexdual.solvers as s

    folder = s.__path__[0]
    code = f"import sys; sys.path.insert(0, {str(__import__('pathlib').Path(folder).parent)!r}); import solvers"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode != 0 and "import it as 'convexdual.solvers'" in out.stderr


def test_finalize_trusts_the_certificate_not_the_label(small_problem, small_solution):
    import dataclasses

    from convexdual.solvers.base import finalize

    raw = dataclasses.replace(small_solution, status=cd.Status.OPTIMAL_INACCURATE, network=None, certificate=None)
    up = finalize(small_problem, raw)
    assert up.status is cd.Status.OPTIMAL and "certified" in up.message
    bad = dataclasses.replace(raw, W=0.8 * raw.W, Z=0.8 * raw.Z)
    assert finalize(small_problem, bad).status is cd.Status.OPTIMAL_INACCURATE
    wrong = dataclasses.replace(bad, status=cd.Status.OPTIMAL)
    down = finalize(small_problem, wrong)
    assert down.status is cd.Status.OPTIMAL_INACCURATE and "certificate disagrees" in down.message
