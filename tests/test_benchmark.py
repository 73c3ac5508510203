"""convexdual benchmark (issue 15): statuses vs the stored certificate, profiles, resume, bad names."""

from __future__ import annotations

import json
import math
import sys

import pytest

from convexdual.benchmark.profiles import performance_profile, performance_ratios, time_to_accuracy
from convexdual.benchmark.runner import (STATUS_TOLERANCE, evaluate_cell, resolve_instances, resolve_solvers,
                                         run_benchmark, solver_availability)
from convexdual.cli import main

SMALLEST = "digits5-p20-squared"


@pytest.fixture(scope="module")
def smallest_run(tmp_path_factory):
    """The suite's smallest instance through every available solver (in process, 1.5 s budget)."""
    out = tmp_path_factory.mktemp("bench")
    report = run_benchmark("small", instances=[SMALLEST], time_limit=1.5, out=out, isolate=False,
                           log=lambda s: None)
    return out, report


def test_every_available_solver_status_checked_against_stored_certificate(smallest_run):
    from convexdual.benchmark.instances import build_instance
    from convexdual.benchmark.reference import REFERENCE_GAP, load_reference
    from convexdual.checkpoint import problem_fingerprint

    out, report = smallest_run
    fp = problem_fingerprint(build_instance(SMALLEST))
    stored = load_reference(out / "references", fp)  # JSON keyed by the fingerprint
    assert stored is not None and stored["fingerprint"] == fp
    assert stored["relative_gap"] <= REFERENCE_GAP and stored["max_violation"] <= 1e-7
    assert json.loads((out / "references" / f"{fp}.json").read_text())["objective"] == stored["objective"]
    available = [s for s, why in solver_availability().items() if why == "ok"]
    cells = report["cells"][SMALLEST]
    assert sorted(cells) == sorted(available)
    f_ref = stored["objective"]
    claims = 0
    for name, cell in cells.items():
        assert cell["status"] not in ("error", "killed"), (name, cell.get("message"))
        if cell["status"] == "optimal":  # a solver that says optimal is within 1e-6 of the reference
            claims += 1
            assert abs(cell["objective"] - f_ref) <= STATUS_TOLERANCE * abs(f_ref), name
            assert cell["status_check"]["ok"] is True
    assert claims >= 2  # at least the exact solvers claim it
    assert report["status_violations"] == []
    for f in ("benchmark.json", "summary.md", "profiles.png", f"time_to_accuracy_{SMALLEST}.png"):
        assert (out / f).is_file(), f
    assert "Status check" in (out / "summary.md").read_text()


def test_status_check_flags_a_false_optimal_claim():
    ref = {"objective": 10.0, "dual_bound": 10.0 - 1e-9}
    bad = {"status": "optimal", "objective": 10.0 * (1 + 1e-5),
           "trace": [{"time": 1.0, "objective": 10.0 * (1 + 1e-5), "violation": 0.0}]}
    good = {"status": "optimal", "objective": 10.0 * (1 + 1e-7),
            "trace": [{"time": 1.0, "objective": 10.0 * (1 + 1e-7), "violation": 0.0}]}
    assert evaluate_cell(bad, ref)["status_check"]["ok"] is False
    assert evaluate_cell(good, ref)["status_check"]["ok"] is True
    below = {"status": "time_limit", "objective": 9.0, "trace": [{"time": 1.0, "objective": 9.0, "violation": 0.0}]}
    assert evaluate_cell(below, ref)["status_check"]["ok"] is False  # feasible below the certified bound
    assert evaluate_cell({"status": "time_limit", "objective": 11.0, "trace": []}, ref)["status_check"]["ok"] is None


def test_time_to_accuracy_needs_objective_and_violation():
    trace = [{"time": 1.0, "objective": 10.0, "violation": 0.5},      # right value, infeasible
             {"time": 2.0, "objective": 10.5, "violation": 0.0},      # feasible, 5% off
             {"time": 3.0, "objective": 10.005, "violation": 1e-9},   # within 1e-3
             {"time": 4.0, "objective": 10.0, "violation": None}]     # violation unknown: never counts
    assert time_to_accuracy(trace, 10.0, 1e-3) == 3.0
    assert time_to_accuracy(trace, 10.0, 1e-6) is None


def test_performance_profile_hand_computed():
    times = {"p1": {"A": 1.0, "B": 2.0, "C": None},
             "p2": {"A": 4.0, "B": 2.0, "C": 8.0},
             "p3": {"A": None, "B": None, "C": None}}
    r = performance_ratios(times)
    assert r["p1"] == {"A": 1.0, "B": 2.0, "C": math.inf}
    assert r["p2"] == {"A": 2.0, "B": 1.0, "C": 4.0}
    assert all(math.isinf(v) for v in r["p3"].values())
    prof = performance_profile(times, ["A", "B", "C"])
    assert prof["taus"] == [1.0, 2.0, 4.0]
    third = 1 / 3
    assert prof["rho"]["A"] == pytest.approx([third, 2 * third, 2 * third])
    assert prof["rho"]["B"] == pytest.approx([third, 2 * third, 2 * third])
    assert prof["rho"]["C"] == pytest.approx([0.0, 0.0, third])
    # a solver missing from an instance's row counts as not solving it
    prof2 = performance_profile({"p1": {"A": 1.0}, "p2": {"A": 3.0, "B": 1.0}}, ["A", "B"], taus=[1.0, 3.0])
    assert prof2["rho"]["A"] == [0.5, 1.0] and prof2["rho"]["B"] == [0.5, 0.5]


def test_resume_reuses_finished_cells(tmp_path, capsys):
    argv = ["benchmark", "--instances", SMALLEST, "--solvers", "active_set", "ecos", "--time-limit", "5",
            "--out", str(tmp_path), "--in-process", "-q"]
    assert main(argv) == 0
    cell = tmp_path / "cells" / SMALLEST / "active_set.json"
    first = cell.read_bytes()
    mtime = cell.stat().st_mtime_ns
    # without --resume an earlier run's outputs are refused
    assert main(argv) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(argv + ["--resume"]) == 0
    report = json.loads((tmp_path / "benchmark.json").read_text())
    assert all(c["reused"] for c in report["cells"][SMALLEST].values())
    assert cell.read_bytes() == first and cell.stat().st_mtime_ns == mtime
    assert "2 of 2 cells were reused from an earlier run" in (tmp_path / "summary.md").read_text()
    # another budget is another cell: not reused
    assert main([*argv[:6], "--time-limit", "4", *argv[8:], "--resume"]) == 0
    report = json.loads((tmp_path / "benchmark.json").read_text())
    assert not any(c["reused"] for c in report["cells"][SMALLEST].values())


def test_bad_names_list_the_allowed_ones(tmp_path, capsys):
    assert main(["benchmark", "--instances", "nope", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "unknown instance(s) 'nope'" in err and SMALLEST in err and "mnist20-p200-squared" in err
    assert main(["benchmark", "--solvers", "active_set,gurobi", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "unknown solver(s) 'gurobi'" in err and "active_set" in err and "scnn-al" in err and "clarabel" in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # refused before any work
    with pytest.raises(ValueError, match="the suites are: small, full"):
        resolve_instances("huge")
    assert resolve_solvers("ecos, active_set") == ["ecos", "active_set"]


def test_peer_unavailable_says_why(monkeypatch):
    from convexdual.benchmark.peers import peer_available

    monkeypatch.setitem(sys.modules, "scnn", None)  # import scnn raises ImportError
    ok, why = peer_available("scnn-al")
    assert not ok and "pyscnn is not installed" in why
