"""The command line: solve on a user's file, list solvers, the demo's quick mode."""

import json

import numpy as np

from convexdual.cli import main


def test_solvers_lists_clarabel(capsys):
    assert main(["solvers"]) == 0
    assert "clarabel : ok" in capsys.readouterr().out


def test_solve_on_npz(tmp_path, digits_small, capsys):
    noisy, clean = digits_small
    np.savez(tmp_path / "d.npz", noisy=noisy[:3], clean=clean[:3])
    out = tmp_path / "run"
    rc = main(["solve", "--data", str(tmp_path / "d.npz"), "--patterns", "8", "--solver", "clarabel",
               "--out", str(out)])
    assert rc == 0
    report = json.loads((out / "result.json").read_text())
    assert report["result"]["status"] == "optimal" and report["result"]["certificate"]["ok"]
    assert (out / "network.pt").is_file() and (out / "dual_weights.npz").is_file()


def test_solve_reports_bad_file(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    bad.write_text("not numpy")
    assert main(["solve", "--data", str(bad)]) == 2
    assert "could not read" in capsys.readouterr().err


def test_demo_quick(tmp_path):
    from convexdual.demo import run_demo

    rep = run_demo(tmp_path, quick=True)
    for f in ("report.json", "summary.md", "reconstructions.png", "objective.png", "filters.png", "train.npz",
              "adam_net.pt", "convex_net.pt"):
        assert (tmp_path / f).is_file(), f
    assert rep["convex"]["status"] == "optimal"
    # the pattern set contains Adam's own patterns, so the convex optimum cannot be above Adam's objective
    assert rep["convex"]["objective"] <= rep["adam"]["objective"] * (1 + 1e-6)
    assert rep["exact_tiny_crop"]["certificate"]["scope"] == "exact"
    assert min(rep["exact_tiny_crop"]["adam_objectives"]) >= rep["exact_tiny_crop"]["objective"] * (1 - 1e-6)
