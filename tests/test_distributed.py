"""Data-parallel solves over torch.distributed (gloo, CPU), started by torchrun with two ranks.

Each distributed run is compared with one process on the same images: the certified optimum of
``active_set`` and the primal Adam trainer must agree to 1e-9 relative; a rank killed mid-run
must fail the run (torchrun's error, not a hang), and the checkpoint must resume it to the same
optimum.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import convexdual as cd
from convexdual.distributed import SINGLE, Comm, build_sharded_problem, shard_bounds, shard_images

WORKER = Path(__file__).with_name("_distributed_worker.py")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(WORKER.parent.parent), env.get("PYTHONPATH", "")])
    return env


def _torchrun(*args: str, nproc: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "--max-restarts=0", str(WORKER), *args]


def _run(cmd: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=timeout)


# ------------------------------------------------------------------------------------------ unit pieces
def test_shard_bounds_cover_every_image_once():
    for n, w in [(10, 2), (7, 3), (600, 8), (5, 5)]:
        b = shard_bounds(n, w)
        assert b[0][0] == 0 and b[-1][1] == n
        assert all(b[r][1] == b[r + 1][0] for r in range(w - 1))
        sizes = [hi - lo for lo, hi in b]
        assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
    with pytest.raises(ValueError, match="cannot be sharded over 4 ranks"):
        shard_bounds(3, 4)


def test_single_comm_is_the_identity():
    a = np.arange(6.0).reshape(2, 3)
    assert SINGLE.sum(a) is a and SINGLE.max(2.5) == 2.5 and SINGLE.min(-1) == -1.0
    assert len(SINGLE.gather(a)) == 1 and SINGLE.gather(a)[0] is a
    assert SINGLE.digest("ab12") == "ab12" and not SINGLE.distributed


def test_one_rank_sharded_problem_equals_build_problem():
    """With one rank the sharded builder keeps the same patterns and gives the same optimum as the
    plain builder (the distributed path is the one-process path)."""
    noisy, clean = cd.data.add_noise(cd.data.load_digits_dataset(6, 0, seed=0).train, "gaussian", 0.5, seed=1), \
        cd.data.load_digits_dataset(6, 0, seed=0).train
    a = cd.build_problem(noisy, clean, 3, 2.0, num_patterns=40, seed=0)
    b = build_sharded_problem(*shard_images(SINGLE, noisy, clean), 3, 2.0, comm=SINGLE, num_patterns=40, seed=0)
    np.testing.assert_array_equal(a.patterns.gates, b.patterns.gates)
    ra, rb = cd.solve(a, "active_set"), cd.solve(b, "active_set")
    assert ra.status is rb.status is cd.Status.OPTIMAL
    assert abs(ra.objective - rb.objective) <= 1e-12 * abs(ra.objective)


class _TwoRankView(Comm):
    """Claims two ranks (collectives are the identity): enough to check the refusals."""

    world = 2


def test_solvers_without_sharding_refuse_a_sharded_problem():
    clean = cd.data.load_digits_dataset(4, 0, seed=0).train
    noisy = cd.data.add_noise(clean, "gaussian", 0.5, seed=1)
    problem = dataclasses.replace(cd.build_problem(noisy, clean, 3, 2.0, num_patterns=10, seed=0), comm=_TwoRankView())
    assert problem.distributed
    with pytest.raises(ValueError, match="does not run on images sharded over 2 ranks; use solver='active_set'"):
        cd.solve(problem, "clarabel")
    ok, why = cd.api.get_solver("fista").accepts(problem)
    assert not ok and "sharded" in why


# ------------------------------------------------------------------------------------------ torchrun
def _cli_both(args: list[str], tmp_path: Path) -> None:
    """``python -m convexdual ARGS --out tmp/a`` and the same under torchrun with 2 ranks ``--out tmp/b``."""
    for launcher, out in (([], "a"), (["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"], "b")):
        p = _run([sys.executable, *launcher, "-m", "convexdual", *args, "--out", str(tmp_path / out)], timeout=300)
        assert p.returncode == 0, p.stderr[-3000:]


def _reference(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "one.json"
    p = _run([sys.executable, str(WORKER), *args, "--out", str(out)])
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(out.read_text())


def test_torchrun_two_ranks_active_set_matches_one_process(tmp_path):
    args = ("active_set", "--images", "12", "--patterns", "60")
    one = _reference(tmp_path, *args)
    out = tmp_path / "two.json"
    p = _run(_torchrun(*args, "--out", str(out)))
    assert p.returncode == 0, p.stderr[-3000:]
    two = json.loads(out.read_text())
    assert two["world"] == 2 and one["world"] == 1
    assert one["status"] == two["status"] == "optimal"
    assert two["n"] == one["n"] == 12 * 64  # the problem spans every rank's rows
    assert abs(two["objective"] - one["objective"]) <= 1e-9 * abs(one["objective"])
    assert two["relative_gap"] <= 1e-6 and two["violation"] <= 1e-7 and two["recovery_error"] <= 1e-6
    assert two["neurons"] == one["neurons"]
    np.testing.assert_allclose(np.array(two["W"]), np.array(one["W"]), rtol=0, atol=1e-7 * np.abs(one["W"]).max())
    # the dual vector is sharded: its norm over both ranks is the one process's
    assert abs(two["dual_norm2"] - one["dual_norm2"]) <= 1e-7 * one["dual_norm2"]


def test_torchrun_two_ranks_primal_trainer_matches_one_process(tmp_path):
    args = ("primal", "--images", "11")
    one = _reference(tmp_path, *args)
    out = tmp_path / "two.json"
    p = _run(_torchrun(*args, "--out", str(out)))
    assert p.returncode == 0, p.stderr[-3000:]
    two = json.loads(out.read_text())
    assert two["world"] == 2
    assert len(two["history"]) == len(one["history"]) == 4
    np.testing.assert_allclose(two["history"], one["history"], rtol=1e-9)
    np.testing.assert_allclose(two["weights"], one["weights"], rtol=1e-9, atol=1e-12)
    assert two["history"][-1] < two["history"][0]  # it trained


def test_convexdual_solve_under_torchrun_writes_the_same_result(tmp_path):
    common = ["solve", "-q", "--digits", "10", "--patterns", "40"]
    _cli_both(common, tmp_path)
    a = json.loads((tmp_path / "a" / "result.json").read_text())
    b = json.loads((tmp_path / "b" / "result.json").read_text())
    assert "sharded over 2 ranks" in b["data"] and b["problem"]["ranks"] == 2
    assert a["result"]["status"] == b["result"]["status"] == "optimal"
    assert abs(a["result"]["objective"] - b["result"]["objective"]) <= 1e-9 * abs(a["result"]["objective"])
    assert (tmp_path / "b" / "network.pt").exists()


def test_killed_rank_fails_the_run_and_the_checkpoint_resumes_it(tmp_path):
    """A rank killed with SIGKILL after the first checkpoint: torchrun stops the run with an error
    naming the failed rank (no hang); rerunning with the checkpoint finishes at the optimum of an
    uninterrupted one-process run."""
    args = ("active_set", "--images", "16", "--patterns", "120", "--init-groups", "4", "--groups-per-round", "4")
    one = _reference(tmp_path, *args)
    ck = tmp_path / "ck.npz"
    pids = tmp_path / "pids"
    pids.mkdir()
    out = tmp_path / "two.json"
    proc = subprocess.Popen(_torchrun(*args, "--out", str(out), "--checkpoint", str(ck), "--pid-dir", str(pids)),
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not ck.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ck.exists() and proc.poll() is None, "the run ended (or stalled) before its first checkpoint"
        os.kill(int((pids / "rank1.pid").read_text()), signal.SIGKILL)
        _, err = proc.communicate(timeout=150)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert "Signal 9" in err or "SIGKILL" in err or "exitcode" in err, err[-2000:]
    assert not out.exists()  # nothing claimed
    p = _run(_torchrun(*args, "--out", str(out), "--checkpoint", str(ck), "--resume"))
    assert p.returncode == 0, p.stderr[-3000:]
    two = json.loads(out.read_text())
    assert two["status"] == "optimal"
    assert abs(two["objective"] - one["objective"]) <= 1e-9 * abs(one["objective"])


def test_mnist_experiment_under_torchrun_matches_one_process(tmp_path):
    """`convexdual experiment zero-gap` detects torchrun: the primal (float64 Adam under DDP) and both
    certified duals (sharded active_set) come out as in one process."""
    common = ["experiment", "zero-gap", "--smoke", "--baseline", "none", "--primal-dtype", "float64", "-q",
              "--sigmas", "0.5"]
    _cli_both(common, tmp_path)
    a = json.loads((tmp_path / "a" / "zero_gap.json").read_text())["units"][0]
    b = json.loads((tmp_path / "b" / "zero_gap.json").read_text())["units"][0]
    assert abs(a["primal"]["objective"] - b["primal"]["objective"]) <= 1e-9 * a["primal"]["objective"]
    for kind in ("sampled", "augmented"):
        da, db = a["duals"][kind], b["duals"][kind]
        assert da["status"] == db["status"] == "optimal"
        assert abs(da["objective"] - db["objective"]) <= 1e-9 * abs(da["objective"])
        assert db["certificate"]["relative_gap"] <= 1e-6


def test_mri_experiment_under_torchrun_matches_one_process(tmp_path):
    """`convexdual experiment mri` detects torchrun: the slice caches are written by the first rank, the
    primal runs under DDP and the certified dual (sharded active_set) on the examples split over the
    ranks, with the numbers of one process; rank 0 alone writes the outputs."""
    common = ["experiment", "mri", "--smoke", "--solver", "active_set"]
    _cli_both(common, tmp_path)
    one = json.loads((tmp_path / "a" / "mri.json").read_text())
    two = json.loads((tmp_path / "b" / "mri.json").read_text())
    assert one["ranks"] == 1 and two["ranks"] == 2
    a, b = one["runs"][0], two["runs"][0]
    assert a["training_set"]["examples"] == b["training_set"]["examples"] == 2  # one per rank
    assert abs(a["primal"]["objective"] - b["primal"]["objective"]) <= 1e-9 * a["primal"]["objective"]
    assert a["dual"]["status"] == b["dual"]["status"] == "optimal"
    assert abs(a["dual"]["objective"] - b["dual"]["objective"]) <= 1e-9 * abs(a["dual"]["objective"])
    assert b["dual"]["certificate"]["relative_gap"] <= 1e-6
    for method in ("zero_filled", "primal", "dual"):
        assert b["test_metrics"][method]["psnr"] == pytest.approx(a["test_metrics"][method]["psnr"], rel=1e-6)
    assert (tmp_path / "b" / "recon_R4.png").is_file()


@pytest.mark.gpu
def test_solve_on_cuda_matches_cpu():
    """``cd.solve(..., device="cuda")``: the engine's operator passes, the solver's scans and the net on
    the GPU give the CPU's certified optimum (skipped without a CUDA device)."""
    clean = cd.data.load_digits_dataset(8, 0, seed=0).train
    noisy = cd.data.add_noise(clean, "gaussian", 0.5, seed=1)
    problem = cd.build_problem(noisy, clean, 3, 2.0, num_patterns=40, seed=0)
    cpu, gpu = cd.solve(problem), cd.solve(problem, device="cuda")
    assert gpu.status is cpu.status is cd.Status.OPTIMAL
    assert abs(gpu.objective - cpu.objective) <= 1e-9 * abs(cpu.objective)
    assert next(gpu.network.parameters()).device.type == "cuda"


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the refusal on a CPU-only torch")
def test_solve_on_a_missing_device_is_refused_before_any_work():
    clean = cd.data.load_digits_dataset(4, 0, seed=0).train
    noisy = cd.data.add_noise(clean, "gaussian", 0.5, seed=1)
    problem = cd.build_problem(noisy, clean, 3, 2.0, num_patterns=20, seed=0)
    assert problem.device == "cpu" and str(problem.engine.device) == "cpu"
    with pytest.raises(ValueError, match="CPU-only; use device='cpu'"):
        cd.solve(problem, device="cuda")
