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

    from convexdual.pipeline import finalize

    raw = dataclasses.replace(small_solution, status=cd.Status.OPTIMAL_INACCURATE, network=None, certificate=None)
    up = finalize(small_problem, raw)
    assert up.status is cd.Status.OPTIMAL and "certified" in up.message
    bad = dataclasses.replace(raw, W=0.8 * raw.W, Z=0.8 * raw.Z)
    assert finalize(small_problem, bad).status is cd.Status.OPTIMAL_INACCURATE
    wrong = dataclasses.replace(bad, status=cd.Status.OPTIMAL)
    down = finalize(small_problem, wrong)
    assert down.status is cd.Status.OPTIMAL_INACCURATE and "certificate disagrees" in down.message


# ---------------------------------------------------------------------------------------- issue 11
def _blob(net, **changes):
    blob = {"format": "convexdual.TwoLayerConvNet/1", "config": net.config(),
            "state_dict": {k: v.detach().clone() for k, v in net.state_dict().items()}, "metadata_json": "{}"}
    blob.update(changes)
    return blob


@pytest.mark.parametrize("case, message", [
    ("width", r"conv1.weight has shape \(\d+, 1, 3, 3\) but the config \(width \d+"),
    ("no_config", "has no architecture config"),
    ("config_key", "config lacks kernel_size"),
    ("kernel", "kernel_size must be an odd int"),
    ("residual", "residual must be true or false"),
    ("nan", "conv2.weight has 1 NaN/Inf value"),
    ("extra_key", "state_dict must hold exactly"),
    ("int_weights", "must be a float32/float64 tensor"),
    ("metadata", "metadata_json must be a JSON object"),
])
def test_crafted_network_files_are_refused_with_a_reason(tmp_path, small_solution, case, message):
    net = small_solution.network
    cfg, sd = net.config(), {k: v.detach().clone() for k, v in net.state_dict().items()}
    blob = {"width": _blob(net, config={**cfg, "width": net.width + 1}),
            "no_config": {k: v for k, v in _blob(net).items() if k != "config"},
            "config_key": _blob(net, config={k: v for k, v in cfg.items() if k != "kernel_size"}),
            "kernel": _blob(net, config={**cfg, "kernel_size": 4}),
            "residual": _blob(net, config={**cfg, "residual": "yes"}),
            "nan": _blob(net, state_dict={**sd, "conv2.weight": sd["conv2.weight"].index_fill(1, torch.tensor([0]),
                                                                                              float("nan"))}),
            "extra_key": _blob(net, state_dict={**sd, "bias": torch.zeros(1)}),
            "int_weights": _blob(net, state_dict={**sd, "conv1.weight": sd["conv1.weight"].long()}),
            "metadata": _blob(net, metadata_json="[1, 2]")}[case]
    torch.save(blob, tmp_path / "bad.pt")
    with pytest.raises(cd.DataFormatError, match=message):
        cd.TwoLayerConvNet.load(tmp_path / "bad.pt")


def test_load_never_unpickles_code(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (exec, ("open(%r, 'w').write('ran')" % str(tmp_path / "pwned"),))

    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"format": "convexdual.TwoLayerConvNet/1", "x": Evil()}, f)
    with pytest.raises(cd.DataFormatError, match="not a readable torch file"):
        cd.TwoLayerConvNet.load(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()


def test_load_returns_net_and_metadata_tuple_documented(tmp_path, small_solution):
    doc = cd.TwoLayerConvNet.load.__doc__
    assert "tuple" in doc and "net, meta = TwoLayerConvNet.load" in doc
    out = cd.TwoLayerConvNet.load(small_solution.network.save(tmp_path / "n.pt", metadata={"beta": 1.0}))
    assert isinstance(out, tuple) and len(out) == 2 and out[1] == {"beta": 1.0}


def test_save_is_atomic(tmp_path, small_solution, monkeypatch):
    net = small_solution.network
    path = net.save(tmp_path / "n.pt", metadata={"v": 1})
    before = path.read_bytes()

    def broken(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        net.save(path, metadata={"v": 2})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["n.pt"]  # no temporary file left


def test_save_refuses_metadata_that_is_not_json(tmp_path, small_solution):
    with pytest.raises(TypeError, match="JSON-able"):
        small_solution.network.save(tmp_path / "n.pt", metadata={"a": object()})
    assert not (tmp_path / "n.pt").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only message")
def test_cuda_on_cpu_only_torch_is_a_clear_error(small_solution, small_problem):
    net = small_solution.network
    with pytest.raises(ValueError, match="CPU-only; use device='cpu'"):
        net.predict(small_problem.inputs, device="cuda")
    with pytest.raises(ValueError, match="CPU-only"):
        net.to("cuda")
    assert next(net.parameters()).device.type == "cpu"


def test_short_repr(small_solution):
    text = repr(small_solution)
    assert len(text) < 400 and text.count("\n") <= 3, text
    assert "status='optimal'" in text and "scope='sampled'" in text and "neurons=" in text and "gap=" in text
    assert "array" not in text and "tensor" not in text
    assert str(small_solution) == text


def test_solve_result_says_over_what_it_is_optimal(small_solution, small_problem):
    assert small_solution.optimality() == f"optimal over the {small_problem.P} sampled patterns only (not a global claim)"
    assert small_solution.to_dict()["scope"] == "sampled"
    assert "optimal over the" in small_solution.summary()


def test_primal_objective_accepts_a_loss_name(small_solution, small_problem):
    net, p = small_solution.network, small_problem
    by_name = cd.primal_objective(net, p.inputs, p.targets, p.beta, "squared")
    assert by_name == cd.primal_objective(net, p.inputs, p.targets, p.beta, cd.SquaredLoss())
    assert by_name == pytest.approx(small_solution.objective, rel=1e-6)
    huber = cd.primal_objective(net, p.inputs, p.targets, p.beta, "huber", huber_delta=0.1)
    assert huber == cd.primal_objective(net, p.inputs, p.targets, p.beta, cd.HuberLoss(delta=0.1)) < by_name
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        cd.primal_objective(net, p.inputs, p.targets, p.beta, "hinge")


def test_readme_python_api_block_runs(tmp_path, monkeypatch, digits_small, capsys):
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("## Python API", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    if not torch.cuda.is_available():
        block = block.replace('device="cuda"', 'device="cpu"')
    noisy, clean = digits_small
    monkeypatch.chdir(tmp_path)  # the block saves net.pt in the working folder
    exec(compile(block, "README.md", "exec"), {"noisy": noisy, "clean": clean, "noisy_test": noisy})
    assert (tmp_path / "net.pt").is_file()
    assert "SolveResult(solver='active_set', status='optimal'" in capsys.readouterr().out  # cd.solve(problem): auto


def test_predict_sizes_its_passes_to_the_hidden_activations(monkeypatch):
    # a dense recovered net (adam_hinge at the paper's size: 16,000 filters on 28x28 digits) needs
    # 100 MB of activations per image; the default batch is sized to a budget, not a fixed count
    import convexdual.nets as nets

    assert nets.images_per_pass(None, 16_000, 784, 8) == 2  # 2**28 bytes / 100.4 MB per image
    assert nets.images_per_pass(None, 10**9, 784, 8) == 1 and nets.images_per_pass(7, 10**9, 784, 8) == 7
    with pytest.raises(ValueError, match="batch_size must be an int >= 1 or None"):
        nets.images_per_pass(0, 1, 1, 1)
    rng = np.random.default_rng(0)
    net = cd.TwoLayerConvNet.from_filters(rng.standard_normal((40, 9)), rng.standard_normal(40), 1, 3)
    x = rng.standard_normal((10, 6, 6))
    ref = np.stack([net.predict(x[i : i + 1], batch_size=1)[0] for i in range(10)])
    calls = []
    real = net.forward
    monkeypatch.setattr(net, "forward", lambda t: calls.append(t.shape[0]) or real(t))
    # 3 images' activations (3 x 36 x 40 x 8 bytes) fit the budget, 4 do not
    monkeypatch.setattr(nets, "ACTIVATION_BUDGET_BYTES", 3 * 36 * 40 * 8 + 1)
    np.testing.assert_allclose(net.predict(x), ref, rtol=0, atol=1e-12)
    assert calls == [3, 3, 3, 1]
    calls.clear()
    from convexdual.stacked import StackedConvNet

    stacked = StackedConvNet([net, net])
    stacked.predict(x)
    assert len(calls) == 2 * 4  # both blocks, in passes of 3 images


@pytest.mark.parametrize("channels,residual,dtype,tol", [(1, False, "float64", 1e-12), (2, True, "float64", 1e-12),
                                                         (1, True, "float32", 1e-5)])
def test_wide_nets_predict_through_the_fused_operator_with_the_same_outputs(monkeypatch, channels, residual, dtype,
                                                                            tol):
    import torch

    import convexdual.nets as nets
    from convexdual._fused_kernels import numba_available

    if not numba_available():
        pytest.skip("numba not installed")
    rng = np.random.default_rng(3)
    dt = getattr(torch, dtype)
    net = cd.TwoLayerConvNet.from_filters(rng.standard_normal((nets.FUSED_MIN_WIDTH + 5, channels * 9)),
                                          rng.standard_normal(nets.FUSED_MIN_WIDTH + 5), channels, 3,
                                          residual=residual, dtype=dt)
    x = rng.standard_normal((80, channels, 24, 24))
    with torch.no_grad():  # the module itself: torch's convolutions
        ref = net(torch.as_tensor(x, dtype=dt))[:, 0].double().numpy()
    fused = []
    real = net._predict_fused
    monkeypatch.setattr(net, "_predict_fused", lambda *a: fused.append(1) or real(*a))
    got = net.predict(x)
    assert fused == [1]  # wide enough and large enough: the fused path ran
    np.testing.assert_allclose(got, ref, rtol=0, atol=tol * np.abs(ref).max())
    np.testing.assert_allclose(net.predict(x, batch_size=7), ref, rtol=0, atol=tol * np.abs(ref).max())
    assert fused == [1]  # an explicit batch size keeps torch's convolutions
