"""Checkpoints load without executing anything, round-trip every solver state exactly, and are
refused (CheckpointError naming the file) when missing, empty, truncated, corrupt, of another
format version, another solver or another problem (convexdual/checkpoint.py)."""

from __future__ import annotations

import io
import json
import math
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import convexdual as cd
from convexdual import checkpoint as ck
from convexdual.errors import CheckpointError, ConvexDualError
from convexdual.result import Status
from tests.conftest import make_digits


# --------------------------------------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def data():
    return make_digits(3, 0.5, 0)


@pytest.fixture(scope="module")
def problem(data):
    noisy, clean = data
    return cd.build_problem(noisy, clean, 3, 0.5, patterns=cd.sample_patterns(noisy, 3, 8, seed=0))


def assert_identical(a, b, where="state"):
    """Same types all the way down; arrays/tensors bit-identical with the same dtype and shape."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, dict):
        assert list(a.keys()) == list(b.keys()), f"{where}: keys {list(a)} != {list(b)}"
        for k in a:
            assert_identical(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}[{i}]")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, f"{where}: {a.dtype}{a.shape} != {b.dtype}{b.shape}"
        assert a.tobytes() == b.tobytes(), f"{where}: bytes differ"
    elif isinstance(a, np.generic):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), f"{where}: numpy scalars differ"
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, f"{where}: {a.dtype}{a.shape} != {b.dtype}{b.shape}"
        assert a.requires_grad == b.requires_grad, f"{where}: requires_grad differs"
        ab = a.detach().contiguous().reshape(-1).view(torch.uint8)
        bb = b.detach().contiguous().reshape(-1).view(torch.uint8)
        assert torch.equal(ab, bb), f"{where}: tensor bytes differ"
    elif isinstance(a, float):
        assert struct.pack("<d", a) == struct.pack("<d", b), f"{where}: {a!r} != {b!r}"  # NaN, -0.0 exact
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _adam_state():
    W = torch.nn.Parameter(torch.randn(4, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))
    Z = torch.nn.Parameter(torch.zeros(4, 9, dtype=torch.float64))
    opt = torch.optim.Adam([W, Z], lr=0.01)
    for _ in range(3):
        opt.zero_grad()
        ((W - 2 * Z) ** 2).sum().backward()
        opt.step()
    return W, Z, opt


def every_state_type():
    W, Z, opt = _adam_state()
    gen = torch.Generator().manual_seed(123)
    torch.randn(5, generator=gen)
    rng = np.random.default_rng(7)
    rng.standard_normal(3)
    mt = np.random.RandomState(3)
    return {
        # iterates and arrays of every dtype/layout the solvers produce
        "V": torch.randn(6, 9, dtype=torch.float64), "V32": torch.randn(3, 2, dtype=torch.float32),
        "noncontig": torch.arange(12.0).reshape(3, 4).T, "bf16": torch.tensor([1.5, -2.25], dtype=torch.bfloat16),
        "long": torch.tensor([1, -2**62], dtype=torch.int64), "tbool": torch.tensor([True, False]),
        "grad_leaf": torch.ones(2, requires_grad=True), "t0": torch.tensor(3.25, dtype=torch.float64),
        "W": np.random.default_rng(0).standard_normal((5, 9)), "f32": np.arange(4, dtype=np.float32),
        "intp": np.arange(5, dtype=np.intp), "u8": np.arange(3, dtype=np.uint8), "nb": np.array([True, False]),
        "big_endian": np.arange(3, dtype=">f8"), "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        "empty": np.zeros((0, 9)), "zero_d": np.array(2.5), "cplx": np.array([1 + 2j]),
        "nan_arr": np.array([np.nan, np.inf, -0.0]),
        # scalars: int vs float kept, huge ints, non-finite floats, numpy scalars
        "t": 1.0, "L": 123.456789012345678, "iteration": 30, "huge": 2**100, "neg_zero": -0.0,
        "lower": -math.inf, "last_viol": math.inf, "nan": math.nan, "np_i": np.int64(4), "np_f": np.float64(0.1),
        "np_b": np.bool_(True), "name": "fista", "none": None, "flag": False, "status": Status.OPTIMAL,
        # containers
        "pattern": [3, np.int64(5), 7], "sign": [1.0, -1.0], "rows": [np.array([0, 4], dtype=np.intp),
                                                                      np.array([], dtype=np.intp)],
        "zero_count": [0, 2], "history": [{"iteration": 1, "objective": 2.5, "relative_gap": math.nan,
                                           "clarabel_status": "Solved"}, {"iteration": 2, "objective": 2.25}],
        "warm": {"used": True, "iterations": 50, "status": "optimal", "gated_objective": 1.5},
        "projection_rows": {("check", 1, 1.0): np.array([2, 5], dtype=np.intp),
                            ("check", 1, -1.0): np.array([], dtype=np.intp), ("restricted", (0, 3)): np.array([1])},
        "nested": {1: {"a": (1, 2.0, "x")}, (2, 3): [[1], {}], "": []},
        # optimiser and RNG states
        "opt": opt.state_dict(), "rng": gen.get_state(), "np_rng": rng.bit_generator.state,
        "mt": mt.get_state(legacy=False), "torch_global_rng": torch.get_rng_state(),
    }


# --------------------------------------------------------------------------------------------- round trips
def test_every_state_type_round_trips_bit_identical(tmp_path, problem):
    state = every_state_type()
    path = tmp_path / "ck.npz"
    ck.save_checkpoint(path, "fista", problem, state)
    got = ck.load_checkpoint(path, "fista", problem)
    assert got.finished is False and got.solver == "fista" and got.fingerprint == ck.problem_fingerprint(problem)
    expected = dict(state)
    expected["noncontig"] = state["noncontig"].contiguous()  # values kept; stored contiguous
    assert_identical(expected, got.state)
    assert torch.equal(got.state["noncontig"], state["noncontig"])


def test_restored_optimizer_and_rngs_continue_identically(tmp_path, problem):
    W, Z, opt = _adam_state()
    gen = torch.Generator().manual_seed(5)
    rng = np.random.default_rng(9)
    path = tmp_path / "ck.npz"
    ck.save_checkpoint(path, "adam_hinge", problem, {"W": W.detach(), "Z": Z.detach(), "opt": opt.state_dict(),
                                                     "rng": gen.get_state(), "np": rng.bit_generator.state})
    st = ck.load_checkpoint(path, "adam_hinge", problem).state

    def step(W, Z, opt):
        opt.zero_grad()
        ((W - 2 * Z) ** 2).sum().backward()
        opt.step()

    W2 = torch.nn.Parameter(st["W"].clone())
    Z2 = torch.nn.Parameter(st["Z"].clone())
    opt2 = torch.optim.Adam([W2, Z2], lr=0.5)  # lr comes back from the state dict
    opt2.load_state_dict(st["opt"])
    gen2 = torch.Generator()
    gen2.set_state(st["rng"])
    rng2 = np.random.default_rng()
    rng2.bit_generator.state = st["np"]
    for _ in range(3):
        step(W, Z, opt)
        step(W2, Z2, opt2)
    assert torch.equal(W, W2) and torch.equal(Z, Z2)
    assert torch.equal(torch.randn(4, generator=gen), torch.randn(4, generator=gen2))
    assert np.array_equal(rng.standard_normal(4), rng2.standard_normal(4))


def test_finished_flag_is_recorded(tmp_path, problem):
    from convexdual.solvers import _common

    path = tmp_path / "ck.npz"
    _common.save_checkpoint(path, "fista", problem, {"iteration": 10})
    assert _common.checkpoint_finished(path) is False
    _common.save_checkpoint(path, "fista", problem, {"iteration": 12, "final": np.ones(2)}, finished=True)
    assert _common.checkpoint_finished(path) is True
    got = ck.load_checkpoint(path, "fista", problem)
    assert got.finished is True and got.state["iteration"] == 12
    assert _common.load_checkpoint(path, "fista", problem)["iteration"] == 12  # the wrapper returns the dict


def test_unsupported_state_is_refused_and_old_checkpoint_kept(tmp_path, problem):
    path = tmp_path / "ck.npz"
    ck.save_checkpoint(path, "fista", problem, {"iteration": 1})
    before = path.read_bytes()
    with pytest.raises(TypeError, match=r"state\['history'\]\[0\]\['fn'\].*function"):
        ck.save_checkpoint(path, "fista", problem, {"history": [{"fn": print}]})
    with pytest.raises(TypeError, match="object"):
        ck.save_checkpoint(path, "fista", problem, {"a": np.array([None, 1], dtype=object)})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ck.npz"]


# --------------------------------------------------------------------------------------------- refusals
def _refused(path, problem, match, solver="fista"):
    with pytest.raises(CheckpointError, match=match) as e:
        ck.load_checkpoint(path, solver, problem)
    msg = str(e.value)
    assert msg.startswith(f"checkpoint {path}: ") and "; " in msg  # names the file, then what to do
    assert isinstance(e.value, ConvexDualError) and isinstance(e.value, ValueError)
    return e.value


def test_missing_and_empty_files_are_refused(tmp_path, problem):
    _refused(tmp_path / "nope.npz", problem, "no such file")
    (tmp_path / "empty.npz").write_bytes(b"")
    err = _refused(tmp_path / "empty.npz", problem, "empty")
    assert err.path == tmp_path / "empty.npz"
    _refused(tmp_path, problem, "folder")


def test_truncated_files_are_refused_at_every_length(tmp_path, problem):
    path = tmp_path / "ck.npz"
    ck.save_checkpoint(path, "fista", problem, every_state_type())
    data = path.read_bytes()
    cut = tmp_path / "cut.npz"
    for n in sorted({1, 4, 30, len(data) // 3, len(data) // 2, len(data) - 100, len(data) - 82, len(data) - 1}):
        cut.write_bytes(data[:n])
        _refused(cut, problem, "corrupt or truncated|not a convexdual checkpoint")


def test_any_changed_byte_is_refused(tmp_path, problem):
    path = tmp_path / "ck.npz"
    ck.save_checkpoint(path, "fista", problem, {"V": np.arange(40.0), "history": [{"a": 1.0}]})
    data = path.read_bytes()
    bad = tmp_path / "bad.npz"
    for i in range(0, len(data), max(1, len(data) // 150)):  # zip headers, npy headers, array bytes, JSON, seal
        b = bytearray(data)
        b[i] ^= 0x41
        bad.write_bytes(bytes(b))
        with pytest.raises(CheckpointError):
            ck.load_checkpoint(bad, "fista", problem)
    bad.write_bytes(data)
    assert ck.load_checkpoint(bad, "fista", problem).state["V"][7] == 7.0  # the intact copy loads


def test_other_format_version_is_refused(tmp_path, problem, monkeypatch):
    path = tmp_path / "ck.npz"
    monkeypatch.setattr(ck, "FORMAT_VERSION", 2)
    ck.save_checkpoint(path, "fista", problem, {"iteration": 1})
    monkeypatch.setattr(ck, "FORMAT_VERSION", 1)
    _refused(path, problem, "format version 2.*reads version 1")


def test_other_solver_is_refused(tmp_path, problem):
    path = tmp_path / "ck.npz"
    ck.save_checkpoint(path, "adam_hinge", problem, {"epoch": 1})
    _refused(path, problem, "written by solver 'adam_hinge', not 'fista'")


def test_other_problem_with_same_sizes_and_sums_is_refused(tmp_path, data, problem):
    noisy, clean = data
    other_noisy = noisy.copy()
    other_noisy[0, 2, 3], other_noisy[0, 5, 6] = noisy[0, 5, 6], noisy[0, 2, 3]  # same sizes, sums, |sums|
    other = cd.build_problem(other_noisy, clean, 3, problem.beta, patterns=problem.patterns)
    # what the old fingerprint compared is all equal: the old check accepted this checkpoint
    assert (other.n, other.d, other.P, other.beta, other.loss.name) == (problem.n, problem.d, problem.P,
                                                                         problem.beta, problem.loss.name)
    assert np.abs(other.patterns.gates).sum() == np.abs(problem.patterns.gates).sum()
    assert np.abs(other.y).sum() == np.abs(problem.y).sum() and other.inputs.sum() == problem.inputs.sum()
    assert not np.array_equal(other.inputs, problem.inputs)
    path = tmp_path / "ck.npz"
    ck.save_checkpoint(path, "fista", problem, {"iteration": 1})
    _refused(path, other, "another problem: the noisy inputs differ")
    assert ck.problem_fingerprint(other) != ck.problem_fingerprint(problem)


@pytest.mark.parametrize("change", ["beta", "targets", "gates", "huber_delta", "residual", "loss", "kernel"])
def test_every_part_of_the_problem_is_in_the_fingerprint(data, problem, change):
    noisy, clean = data
    pats = problem.patterns
    build = dict(kernel_size=3, beta=problem.beta, patterns=pats)
    if change == "beta":
        build["beta"] = np.nextafter(problem.beta, 1.0)
    elif change == "targets":
        clean = clean.copy()
        clean[1, 4, 4] += 1e-12
    elif change == "gates":
        g = pats.gates.copy()
        g[0, 0] *= 1 + 1e-12
        build["patterns"] = cd.SignPatterns(gates=g, source="gates")
    elif change == "residual":
        build["residual"] = True
    elif change == "loss":
        build["loss"] = "absolute"
    elif change == "kernel":
        build["kernel_size"] = 5
        build["patterns"] = cd.sample_patterns(noisy, 5, 8, seed=0)
    base = ck.problem_fingerprint(problem)
    if change == "huber_delta":
        a = cd.build_problem(noisy, clean, loss=cd.HuberLoss(delta=1.0), **build)
        b = cd.build_problem(noisy, clean, loss=cd.HuberLoss(delta=2.0), **build)
        assert ck.problem_fingerprint(a) != ck.problem_fingerprint(b)
        return
    other = cd.build_problem(noisy, clean, **build)
    assert ck.problem_fingerprint(other) != base
    same = cd.build_problem(*data, 3, problem.beta, patterns=pats)
    assert ck.problem_fingerprint(same) == base  # equal data and settings: equal fingerprints


# --------------------------------------------------------------------------------------------- no code runs
class _Evil:
    """Unpickling this creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_crafted_pickles_are_never_unpickled(tmp_path, problem):
    marker = tmp_path / "EXECUTED"
    evil = _Evil(marker)
    pickle.loads(pickle.dumps(evil))  # the payload works when unpickled ...
    assert marker.exists()
    marker.unlink()

    files = {}
    files["raw_pickle.pt"] = pickle.dumps({"solver": "fista", "state": evil})
    buf = io.BytesIO()
    torch.save({"solver": "fista", "fingerprint": None, "state": {"x": evil}}, buf)  # the old checkpoint format
    files["old_torch_format.pt"] = buf.getvalue()
    # a fully valid-looking sealed checkpoint (the seal is a checksum, not a signature) whose array is a pickle
    hdr = {"format": ck.FORMAT_NAME, "version": 1, "solver": "fista", "finished": False,
           "fingerprint": ck.problem_fingerprint(problem), "arrays": ["a0"],
           "state": {"$": "dict", "items": [["x", {"$": "ndarray", "ref": "a0"}]]}}
    buf = io.BytesIO()
    np.savez(buf, header=np.frombuffer(json.dumps(hdr).encode(), dtype=np.uint8),
             a0=np.array([evil, 1], dtype=object))
    ck._seal(buf)
    files["sealed_object_array.npz"] = buf.getvalue()
    for name, blob in files.items():
        path = tmp_path / name
        path.write_bytes(blob)
        with pytest.raises(CheckpointError) as e:
            ck.load_checkpoint(path, "fista", problem)
        assert not marker.exists(), f"{name}: loading executed code"
        if name == "old_torch_format.pt":
            assert "torch.save" in str(e.value)
        with pytest.raises(CheckpointError):
            ck.checkpoint_finished(path)
        assert not marker.exists()
    # the solver-facing wrapper refuses them the same way
    from convexdual.solvers import _common

    with pytest.raises(CheckpointError):
        _common.load_checkpoint(tmp_path / "old_torch_format.pt", "fista", problem)
    assert not marker.exists()


def test_crafted_header_cannot_name_callables(tmp_path, problem):
    hdr = {"format": ck.FORMAT_NAME, "version": 1, "solver": "fista", "finished": False,
           "fingerprint": ck.problem_fingerprint(problem), "arrays": ["a0"],
           "state": {"$": "dict", "items": [["x", {"$": "tensor", "ref": "a0", "dtype": "torch.load",
                                                   "shape": [1], "raw": True}]]}}
    buf = io.BytesIO()
    np.savez(buf, header=np.frombuffer(json.dumps(hdr).encode(), dtype=np.uint8), a0=np.zeros(8, dtype=np.uint8))
    ck._seal(buf)
    path = tmp_path / "ck.npz"
    path.write_bytes(buf.getvalue())
    _refused(path, problem, "unknown tensor dtype 'torch.load'")
