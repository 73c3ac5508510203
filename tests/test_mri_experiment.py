"""End to end: ``convexdual experiment mri --smoke`` (simulated fastMRI files -> primal vs dual)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from convexdual.cli import main


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("mri_smoke")
    assert main(["experiment", "mri", "--smoke", "--out", str(out)]) == 0
    return out, json.loads((out / "mri.json").read_text())


def test_smoke_improves_psnr_and_dual_is_certified(smoke):
    out, result = smoke
    assert result["smoke"] and len(result["runs"]) == 1
    run = result["runs"][0]
    m = run["test_metrics"]
    # both trained networks beat the zero-filled SENSE input on held-out simulated slices
    assert m["dual"]["psnr"] > m["zero_filled"]["psnr"]
    assert m["primal"]["psnr"] > m["zero_filled"]["psnr"]
    assert m["dual"]["ssim"] > 0 and np.isfinite(m["dual"]["nmse"])
    dual, primal = run["dual"], run["primal"]
    assert dual["status"] == "optimal"
    cert = dual["certificate"]
    assert cert["ok"] and cert["relative_gap"] < 1e-6
    # the certified dual optimum is not above the primal (Adam) objective (2) on the same data
    assert cert["dual_bound"] <= primal["objective"] * (1 + 1e-6)
    # and the recovered residual network attains the convex objective through torch
    assert abs(dual["network_objective"] - dual["objective"]) <= 1e-6 * abs(dual["objective"])
    for name in ("recon_R4.png", "loss_R4.png", "dual_filters_R4.png", "mri.md"):
        assert (out / name).stat().st_size > 0
    assert "PSNR" in (out / "mri.md").read_text()


def test_streaming_primal_reads_the_cache(smoke):
    from convexdual.losses import get_loss
    from convexdual.mri.prepare import SliceCache
    from convexdual.mri.stream import cache_objective, train_primal_streaming
    from convexdual.nets import primal_objective

    out, _ = smoke
    with SliceCache(out / "cache" / "train_R4.h5") as cache:
        assert cache.num_slices == 2 and cache.image_shape == (24, 24)
        res = train_primal_streaming(cache, width=4, beta=0.05, epochs=3, lr=3e-3, seed=0)
        objs = [h["objective"] for h in res.history]
        assert objs[-1] < objs[0]
        x, y = cache.examples()
        direct = primal_objective(res.network, x, y, 0.05, get_loss("squared"))
        assert cache_objective(res.network, cache, 0.05, slices_per_read=1)[0] == pytest.approx(direct, rel=1e-10)


def test_steps_are_timed_and_a_rerun_reuses_data_caches_and_primal(smoke):
    out, result = smoke
    run = result["runs"][0]
    steps = run["steps"]
    for name in ("prepare train slices", "beta_max", "primal (Adam)", "patterns (one deduplication pass)",
                 "dual solve (+ recovery and certificate)", "evaluate test volumes"):
        assert steps[name]["seconds"] >= 0 and steps[name]["peak_rss_mb"] > 0
    assert run["prep_train"]["reused"] == 0.0 and not run["primal"]["reused"]
    assert "peak RSS MB" in (out / "mri.md").read_text()
    assert json.loads((out / "mri_R4.json").read_text())["acceleration"] == 4.0
    # the same command again: simulated files, slice caches and the primal net are reused, same numbers
    assert main(["experiment", "mri", "--smoke", "--out", str(out)]) == 0
    again = json.loads((out / "mri.json").read_text())["runs"][0]
    assert again["prep_train"]["reused"] == 1.0 and again["prep_test"]["reused"] == 1.0
    assert again["primal"]["reused"] and "primal (Adam)" not in again["steps"]
    assert again["primal"]["objective"] == run["primal"]["objective"]
    assert again["dual"]["objective"] == pytest.approx(run["dual"]["objective"], rel=1e-9)
    for name in ("zero_filled", "primal"):
        assert again["test_metrics"][name]["psnr"] == run["test_metrics"][name]["psnr"]
    # --no-reuse prepares and trains again
    assert main(["experiment", "mri", "--smoke", "--no-reuse", "--out", str(out)]) == 0
    fresh = json.loads((out / "mri.json").read_text())["runs"][0]
    assert fresh["prep_train"]["reused"] == 0.0 and not fresh["primal"]["reused"]
    assert fresh["primal"]["objective"] == pytest.approx(run["primal"]["objective"], rel=1e-9)


def test_step_log_records_time_and_peak_memory():
    from convexdual.experiments.mri import StepLog

    from convexdual.experiments.mri import _rss_mb

    log = StepLog(interval=0.01)
    with log.step("allocate"):
        a = np.ones(40 * 2**20 // 8)  # 40 MB touched (the allocator may reuse pages already resident)
        a += 1
        inside = _rss_mb()  # what the step held at this moment
    with pytest.raises(RuntimeError):
        with log.step("fails"):
            raise RuntimeError("boom")
    # the recorded peak covers the resident size the step held (to the sampler's resolution: the process
    # can give back a few KB between a sample and the next), not only its start
    assert log.steps["allocate"]["peak_rss_mb"] >= log.steps["allocate"]["start_rss_mb"]
    assert log.steps["allocate"]["peak_rss_mb"] >= inside - 1.0
    assert inside > 0 and a[0] == 2.0
    assert log.steps["fails"]["seconds"] >= 0
