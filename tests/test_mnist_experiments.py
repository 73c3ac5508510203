"""Smoke runs of the MNIST experiments on the bundled digits: JSON, figures, summaries, the zero-gap check."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

import convexdual as cd
from convexdual.experiments import EXPERIMENTS
from convexdual.experiments.mnist import common as C
from convexdual.experiments.mnist import pattern_ablation, zero_gap


def _run(name: str, out, *extra: str) -> dict:
    import importlib

    mod = importlib.import_module(EXPERIMENTS[name].module)
    p = argparse.ArgumentParser()
    mod.add_arguments(p)
    assert mod.run(p.parse_args(["--smoke", "--out", str(out), *extra])) == 0
    return mod


@pytest.fixture(scope="module")
def zero_gap_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("zero_gap")
    _run("zero-gap", out)
    return out, json.loads((out / "zero_gap.json").read_text())


def test_zero_gap_outputs(zero_gap_run):
    out, res = zero_gap_run
    assert (out / "zero_gap.png").stat().st_size > 1000 and (out / "summary.md").read_text().startswith("# zero-gap")
    assert [u["level"] for u in res["units"]] == [0.1, 0.5]
    for u in res["units"]:
        h = u["primal"]["history"]
        assert h[-1]["objective"] < h[0]["objective"]  # the primal trained
        assert {"sampled", "augmented", "baseline"} <= set(u["duals"])
        for rec in u["duals"].values():
            if "skipped" not in rec:
                assert rec["train_loss"] > 0 and rec["test_loss"] > 0 and "certificate" in rec


def test_zero_gap_certified_dual_not_above_primal(zero_gap_run):
    """The done criterion: the certified optimum of (4) over sampled + the primal's own
    patterns is not above the primal's final objective (2) beyond the tolerance."""
    _, res = zero_gap_run
    for u in res["units"]:
        a = u["duals"]["augmented"]
        assert a["status"] == "optimal" and a["certificate"]["relative_gap"] < 1e-6
        assert a["certificate"]["max_violation"] < 1e-5
        assert a["objective"] <= u["primal"]["objective"] * (1 + zero_gap.TOLERANCE)
        assert u["check"]["dual_not_above_primal"] is True
        # the recovered network realises the convex optimum through torch (objective (2))
        assert a["network_objective"] == pytest.approx(a["objective"], rel=1e-5)
        # same objective units: the primal's logged objective equals (2) evaluated independently
        # (explicit patch matrix, ReLU, squared loss summed over pixels, beta/2 (|U|^2 + |v|^2))
        from tests._reference import net_objective_ref

        net, meta = cd.TwoLayerConvNet.load(_net_path(res, u))
        assert net.width == u["primal"]["width"]
        args = argparse.Namespace(data=None, num_train=res["settings"]["num_train"],
                                  num_test=res["settings"]["num_test"], upsample=1)
        data = C.load_data(args, u["noise"], u["level"], res["settings"]["seed"])
        U, v = net.filters()
        mine = net_objective_ref(U, v, data.noisy, data.clean, net.kernel_size, meta["beta"], "squared",
                                 residual=bool(net.residual))
        assert mine == pytest.approx(u["primal"]["objective"], rel=1e-9)
        assert a["objective"] <= mine * (1 + zero_gap.TOLERANCE)  # the check, against the independent value


def _net_path(res, u):
    from pathlib import Path

    return Path(res["settings"]["out"]) / "nets" / f"primal_{u['noise']}_{u['level']:g}.pt"


def test_zero_gap_primal_objective_is_objective_2(zero_gap_run):
    _, res = zero_gap_run
    u = res["units"][1]
    args = argparse.Namespace(data=None, num_train=res["settings"]["num_train"],
                              num_test=res["settings"]["num_test"], upsample=1)
    data = C.load_data(args, "gaussian", u["level"], res["settings"]["seed"])
    net, meta = cd.TwoLayerConvNet.load(_net_path(res, u))
    obj = cd.primal_objective(net, data.noisy[:, None], data.clean, meta["beta"], cd.get_loss("squared"))
    assert obj == pytest.approx(u["primal"]["objective"], rel=1e-9)


def test_working_set_solver_matches_plain_clarabel(zero_gap_run):
    """The smoke default solver (clarabel-ws) against cd.solve(problem, 'clarabel')."""
    _, res = zero_gap_run
    u = res["units"][1]
    args = argparse.Namespace(data=None, num_train=res["settings"]["num_train"],
                              num_test=res["settings"]["num_test"], upsample=1)
    data = C.load_data(args, "gaussian", u["level"], res["settings"]["seed"])
    pats = cd.sample_patterns(data.noisy, 3, int(res["settings"]["num_patterns"]), seed=res["settings"]["seed"])
    ref = cd.solve(cd.build_problem(data.noisy, data.clean, 3, u["beta"], patterns=pats), "clarabel")
    assert ref.status == "optimal"
    assert u["duals"]["sampled"]["objective"] == pytest.approx(ref.objective, rel=1e-6)


def test_pattern_ablation_smoke(tmp_path):
    _run("pattern-ablation", tmp_path, "--sigmas", "0.5")
    res = json.loads((tmp_path / "pattern_ablation.json").read_text())
    assert (tmp_path / "pattern_ablation.png").is_file() and (tmp_path / "summary.md").is_file()
    (u,) = res["units"]
    objs = [p["objective"] for p in u["points"]]
    assert [p["num_requested"] for p in u["points"]] == [2, 8, 32, 128]
    # nested pattern sets: the certified optimum can only go down as patterns are added
    assert all(b <= a * (1 + 1e-6) for a, b in zip(objs, objs[1:]))
    assert all(p["certificate"]["relative_gap"] < 1e-6 for p in u["points"])
    # column generation from 8 sampled patterns: certified per round, never worse as S grows, and
    # its final recovered net's loss term (per pixel x pixels) cannot exceed the objective (2)
    g = u["generation"]
    assert g["rounds"] and all(r["status"] == "optimal" for r in g["rounds"])
    gobj = [r["objective"] for r in g["rounds"]]
    assert all(b <= a * (1 + 1e-7) for a, b in zip(gobj, gobj[1:]))
    assert g["status"] == "optimal" and g["objective"] <= gobj[-1] * (1 + 1e-7)
    pixels = int(np.prod(u["data"]["train_shape"]))
    assert 0 < g["train_loss"] * pixels <= g["objective"] * (1 + 1e-9) and g["test_loss"] > 0
    assert g["excess_over_primal"] == pytest.approx((g["objective"] - u["primal"]["objective"])
                                                    / u["primal"]["objective"], rel=1e-12)


def test_patterns_needed():
    pts = [{"num_requested": 8, "objective": 12.0}, {"num_requested": 2, "objective": 20.0},
           {"num_requested": 32, "objective": 9.0}]
    assert pattern_ablation.patterns_needed(pts, 10.0, 0.0) == 32
    assert pattern_ablation.patterns_needed(pts, 10.0, 0.25) == 8
    assert pattern_ablation.patterns_needed(pts, 5.0, 0.0) is None


def test_noise_robustness_smoke(tmp_path):
    _run("noise-robustness", tmp_path, "--baseline", "none")
    res = json.loads((tmp_path / "noise_robustness.json").read_text())
    assert [u["noise"] for u in res["units"]] == ["gaussian", "exponential"]
    assert (tmp_path / "noise_robustness.png").is_file()
    for u in res["units"]:
        assert u["primal"]["width"] == 25
        assert u["duals"]["augmented"]["objective"] <= u["primal"]["objective"] * (1 + zero_gap.TOLERANCE)
    # exponential noise is non-negative: the noisy inputs are shifted up from the clean ones
    args = argparse.Namespace(data=None, num_train=4, num_test=8, upsample=1)
    d = C.load_data(args, "exponential", 0.5, 0)
    assert np.all(d.noisy >= d.clean)


def test_reconstructions_smoke(tmp_path):
    _run("reconstructions", tmp_path, "--num-images", "3")
    res = json.loads((tmp_path / "reconstructions.json").read_text())
    assert (tmp_path / "reconstructions.png").stat().st_size > 1000
    imgs = res["images"]
    assert set(imgs) >= {"clean", "noisy"} and len(imgs) == 5
    assert all(np.asarray(v).shape == (3, 28, 28) for v in imgs.values())  # the bundled real MNIST digits
    # denoising helps: every denoiser beats the noisy input in PSNR on average
    noisy = np.mean(res["psnr_db"]["noisy"])
    assert all(np.mean(v) > noisy for k, v in res["psnr_db"].items() if k not in ("clean", "noisy"))


@pytest.mark.slow
def test_resume_reuses_units(tmp_path):
    fast = ("--baseline", "none", "--epochs", "5", "--num-patterns", "4", "--num-train", "2", "--num-test", "2")
    _run("noise-robustness", tmp_path, *fast)
    units = sorted((tmp_path / "units").glob("robustness_*.json"))
    assert len(units) == 2 and len(list((tmp_path / "units").glob("primal_*.json"))) == 2
    assert len(list((tmp_path / "units" / "solves").glob("*.json"))) == 4  # two certified solves per noise model
    rec = json.loads(units[0].read_text())
    rec["primal"]["objective"] = 123.0  # marker: a resumed run must reuse, not recompute
    units[0].write_text(json.dumps(rec))
    _run("noise-robustness", tmp_path, *fast, "--resume")
    res = json.loads((tmp_path / "noise_robustness.json").read_text())
    assert 123.0 in [u["primal"]["objective"] for u in res["units"]]
    _run("noise-robustness", tmp_path, *fast)  # without --resume the unit is recomputed
    res = json.loads((tmp_path / "noise_robustness.json").read_text())
    assert 123.0 not in [u["primal"]["objective"] for u in res["units"]]


def test_bad_arguments_are_clear(tmp_path):
    with pytest.raises(ValueError, match="comma-separated"):
        C.parse_floats("0.1,-1")
    with pytest.raises(ValueError, match="integers >= 1"):
        C.parse_ints("0")
    with pytest.raises(ValueError, match="beta-frac"):
        C.reference_beta(np.zeros((1, 8, 8)), np.zeros((1, 8, 8)), 3, 0.0)



def test_resume_recomputes_units_computed_with_other_settings(tmp_path, caplog):
    # UnitCache itself: reused only under the same settings (threads/out never matter)
    args = argparse.Namespace(out=tmp_path / "a", resume=True, threads=1, epochs=5, seed=0, lr=1e-3, data=None,
                              sigmas="0.5", solver="clarabel")
    calls = []

    def compute():
        calls.append(1)
        return {"primal": {"objective": float(len(calls))}}

    def run(**changes):
        return C.UnitCache(tmp_path, True, settings=argparse.Namespace(**{**vars(args), **changes})).get_or_run(
            "unit_0.5", compute)

    assert run() == {"primal": {"objective": 1.0}} and len(calls) == 1
    meta = json.loads((tmp_path / "units" / "unit_0.5.json").read_text())["_unit"]
    assert len(meta["settings_sha256"]) == 64 and meta["settings"]["epochs"] == 5 and "threads" not in meta["settings"]
    assert run(threads=4, out=tmp_path / "b") == {"primal": {"objective": 1.0}} and len(calls) == 1  # reused
    for change in ({"epochs": 6}, {"seed": 1}, {"lr": 1e-3 * (1 + 1e-15)}, {"data": "somewhere"},
                   {"solver": "clarabel-ws"}):
        caplog.clear()
        with caplog.at_level("WARNING"):
            n = len(calls)
            assert run(**change)["primal"]["objective"] == n + 1  # recomputed ...
        (k, v), = change.items()
        assert any("NOT reusing" in r.getMessage() and f"{k}: " in r.getMessage() for r in caplog.records), change
        run()  # ... and back to the original settings (recomputed again: the unit file holds one setting)
    unit = tmp_path / "units" / "unit_0.5.json"
    rec = json.loads(unit.read_text())
    rec.pop("_unit")  # a unit written before units recorded their settings
    unit.write_text(json.dumps(rec))
    caplog.clear()
    with caplog.at_level("WARNING"):
        n = len(calls)
        run()
    assert len(calls) == n + 1 and any("records no settings" in r.getMessage() for r in caplog.records)
    n = len(calls)
    C.UnitCache(tmp_path, False, settings=args).get_or_run("unit_0.5", compute)  # no --resume: always computed
    assert len(calls) == n + 1

    # the experiments pass their settings: a --resume with another epoch count recomputes
    out = tmp_path / "run"
    fast = ("--baseline", "none", "--num-patterns", "4", "--num-train", "2", "--num-test", "2")
    _run("noise-robustness", out, *fast, "--epochs", "3")
    for p in (out / "units").glob("robustness_*.json"):
        rec = json.loads(p.read_text())
        assert rec["_unit"]["settings"]["epochs"] == 3
        rec["primal"]["objective"] = 123.0  # marker a reused unit would keep
        p.write_text(json.dumps(rec))
    _run("noise-robustness", out, *fast, "--epochs", "2", "--resume")
    res = json.loads((out / "noise_robustness.json").read_text())
    assert len(res["units"]) == 2 and 123.0 not in [u["primal"]["objective"] for u in res["units"]]


def test_unit_settings_name_bundled_sources_independently_of_the_working_directory(tmp_path, monkeypatch):
    a = C.unit_settings({"data": "mnist-5k", "seed": 0})
    monkeypatch.chdir(tmp_path)
    assert C.unit_settings({"data": "mnist-5k", "seed": 0}) == a == {"data": "mnist-5k", "seed": 0}
    assert C.unit_settings({"data": "sklearn-digits"})["data"] == "sklearn-digits"
    # a directory of IDX files is still recorded as its absolute path
    assert C.unit_settings({"data": "idx"})["data"] == str((tmp_path / "idx").resolve())
