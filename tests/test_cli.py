"""The command line: solve on a user's file, list solvers, the demo's quick mode."""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from convexdual.cli import COMMANDS, main, prepare_output_folder


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


def test_demo_quick(tmp_path, capsys):
    # through the command line, quiet: one line on stdout, the report on disk
    assert main(["demo", "--quick", "--quiet", "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip().splitlines() == [f"demo: finished with exit status 0; outputs in {tmp_path}/"]
    rep = json.loads((tmp_path / "report.json").read_text())
    for f in ("report.json", "summary.md", "reconstructions.png", "objective.png", "filters.png", "train.npz",
              "adam_net.pt", "convex_net.pt"):
        assert (tmp_path / f).is_file(), f
    assert rep["convex"]["status"] == "optimal"
    # the pattern set contains Adam's own patterns, so the convex optimum cannot be above Adam's objective
    assert rep["convex"]["objective"] <= rep["adam"]["objective"] * (1 + 1e-6)
    assert rep["exact_tiny_crop"]["certificate"]["scope"] == "exact"
    assert min(rep["exact_tiny_crop"]["adam_objectives"]) >= rep["exact_tiny_crop"]["objective"] * (1 - 1e-6)


# ---------------------------------------------------------------------------------------- issue 11
ROOT = Path(__file__).resolve().parents[1]
LAZY = ("convexdual.demo", "convexdual.cli_solve", "convexdual.cli_certify", "convexdual.cli_predict",
        "convexdual.experiments")


def _run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "convexdual.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})


def test_help_lists_every_command_and_imports_none_of_them():
    code = ("import sys\nfrom convexdual.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            f"print('LOADED', [m for m in {LAZY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "LOADED []" in out.stdout, out.stdout
    for name, cmd in COMMANDS.items():
        assert re.search(rf"^\s+{name}\s+{re.escape(cmd.help[:30])}", out.stdout, re.M), (name, out.stdout)


def test_quiet_reaches_each_experiment(capsys):
    from convexdual.experiments import EXPERIMENTS

    for name in EXPERIMENTS:
        with pytest.raises(SystemExit):
            main(["experiment", name, "--help"])
        assert "--quiet" in capsys.readouterr().out, name


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_command_resolves_with_its_own_help(name, capsys):
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert f"usage: convexdual {name}" in text
    assert ("--quiet" in text) == COMMANDS[name].quiet


def test_readme_enumerate_example_runs_as_written(tmp_path, monkeypatch, capsys):
    readme = (ROOT / "README.md").read_text()
    line = next(ln for ln in readme.splitlines() if ln.startswith("convexdual solve") and "enumerate" in ln)
    argv = shlex.split(line.split("#")[0])[1:]
    monkeypatch.chdir(tmp_path)  # the example writes to the default --out, runs/solve
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "globally optimal (exact enumeration of all" in out
    report = json.loads((tmp_path / "runs" / "solve" / "result.json").read_text())
    assert report["problem"]["exact_patterns"] is True and report["result"]["scope"] == "exact"


def test_enumerate_refusal_says_what_fits(tmp_path, capsys):
    assert main(["solve", "--digits", "5", "--patterns", "enumerate", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "exact enumeration refused" in err and "--crop 3" in err and "--max-patterns" in err


def test_crop_is_checked(tmp_path, capsys):
    assert main(["solve", "--digits", "1", "--crop", "9", "--out", str(tmp_path / "r")]) == 2
    assert "--crop must be between 1 and the image size 8" in capsys.readouterr().err


def test_solve_says_over_what_it_is_optimal_and_certify_runs_on_its_outputs(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["solve", "--digits", "2", "--patterns", "8", "--solver", "clarabel", "--quiet",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out.strip().splitlines()
    # quiet: the one-line summary and the certify command, nothing else
    assert len(text) == 2, text
    assert text[0].startswith("solve: optimal over the 8 sampled patterns only") and "neurons" in text[0]
    with np.load(out / "train.npz") as f:
        assert set(f.files) == {"noisy", "clean"} and f["noisy"].shape == (2, 1, 8, 8)
    net, meta = __import__("convexdual").TwoLayerConvNet.load(out / "network.pt")
    assert meta["exact_patterns"] is False and meta["P"] == 8 and meta["loss"] == "squared"
    cmd = shlex.split(text[1].split("with: ", 1)[1])
    assert cmd[:2] == ["convexdual", "certify"] and "--beta" not in cmd
    # the printed command, with a cheaper descent search
    rc = main(cmd[1:] + ["--starts", "2", "--gates", "32", "--quiet"])
    assert rc in (0, 1)
    rep = json.loads((out / "certificate.json").read_text())
    assert rep["beta"] == meta["beta"] and rep["certificate"]["beta"] == pytest.approx(meta["beta"])
    # a different --beta is used, with a warning
    rc = main(cmd[1:] + ["--starts", "2", "--gates", "32", "--quiet", "--overwrite", "--beta", "1.5"])
    assert "--beta 1.5 differs from the beta" in capsys.readouterr().err
    assert json.loads((out / "certificate.json").read_text())["beta"] == 1.5


def test_certify_without_beta_anywhere_is_bad_input(tmp_path, small_solution, digits_small, capsys):
    noisy, clean = digits_small
    small_solution.network.save(tmp_path / "net.pt")  # no metadata
    np.savez(tmp_path / "d.npz", noisy=noisy, clean=clean)
    assert main(["certify", "--net", str(tmp_path / "net.pt"), "--data", str(tmp_path / "d.npz"),
                 "--out", str(tmp_path / "c.json")]) == 2
    assert "records no beta in its metadata; give" in capsys.readouterr().err


def test_mosek_fallback_note_printed_once(tmp_path):
    import convexdual as cd

    if cd.available_solvers().get("mosek") == "ok":
        pytest.skip("MOSEK is licensed here: 'auto' does not fall back")
    # auto is active_set for the squared loss; for other losses it is MOSEK when licensed, else Clarabel
    res = _run_cli("solve", "--digits", "2", "--patterns", "4", "--loss", "huber", "--solver", "auto",
                   "--out", tmp_path / "r")
    assert res.returncode == 0, res.stderr
    assert (res.stdout + res.stderr).count("MOSEK unavailable") == 1


def test_out_that_is_a_file_is_refused_before_any_work(tmp_path, capsys):
    f = tmp_path / "taken"
    f.write_text("x")
    # the data file does not exist: a refusal that names --out shows the check came first
    for argv in (["solve", "--data", str(tmp_path / "missing.npz")], ["demo"]):
        assert main(argv + ["--out", str(f)]) == 2
        assert f"--out {f} is an existing file" in capsys.readouterr().err
    assert f.read_text() == "x"


def test_earlier_outputs_refused_then_replaced_with_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "network.pt").write_text("old")
    (out / "notes.txt").write_text("mine")
    argv = ["solve", "--digits", "2", "--patterns", "4", "--solver", "clarabel", "-q", "--out", str(out)]
    assert main(argv) == 2
    assert "already holds the outputs of an earlier run (network.pt)" in capsys.readouterr().err
    assert (out / "network.pt").read_text() == "old"
    assert main(argv + ["--overwrite"]) == 0
    __import__("convexdual").TwoLayerConvNet.load(out / "network.pt")  # the new one
    assert (out / "notes.txt").read_text() == "mine"  # not an output: kept
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temporary files left behind"


def test_overwrite_removes_old_outputs_first(tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    for name in ("a.json", "b.pt", "keep.txt"):
        (out / name).write_text("old")
    prepare_output_folder(out, ("a.json", "b.pt", "c.npz"), overwrite=True, command="test")
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert "removed the earlier run's a.json, b.pt" in capsys.readouterr().err


def test_failed_write_leaves_no_partial_output(tmp_path, monkeypatch):
    def broken(file, *a, **k):
        file.write(b"PK partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez_compressed", broken)
    out = tmp_path / "run"
    with pytest.raises(OSError, match="disk full"):
        main(["solve", "--digits", "2", "--patterns", "4", "--solver", "clarabel", "-q", "--out", str(out)])
    names = sorted(p.name for p in out.iterdir())
    assert "dual_weights.npz" not in names and "result.json" not in names
    assert not [n for n in names if n.startswith(".")], names  # no temporary file left


@pytest.mark.parametrize("case", ["width", "no_config", "nan"])
def test_crafted_network_file_is_bad_input(tmp_path, small_solution, digits_small, capsys, case):
    net = small_solution.network
    blob = {"format": "convexdual.TwoLayerConvNet/1", "config": net.config(),
            "state_dict": {k: v.detach().clone() for k, v in net.state_dict().items()}, "metadata_json": '{"beta": 1.0}'}
    if case == "width":
        blob["config"] = {**blob["config"], "width": net.width + 3}
    elif case == "no_config":
        del blob["config"]
    else:
        blob["state_dict"]["conv1.weight"][0, 0, 0, 0] = float("nan")
    torch.save(blob, tmp_path / "bad.pt")
    noisy, clean = digits_small
    np.savez(tmp_path / "d.npz", noisy=noisy, clean=clean)
    rc = main(["certify", "--net", str(tmp_path / "bad.pt"), "--data", str(tmp_path / "d.npz"),
               "--out", str(tmp_path / "c.json")])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert {"width": "has shape", "no_config": "no architecture config", "nan": "NaN/Inf"}[case] in err


@pytest.mark.slow
def test_readme_command_line_block_runs_as_written(tmp_path, monkeypatch, digits_small):
    """solve -> certify -> predict exactly as the README's Command line block writes them (user files made here)."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Command line", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    noisy, clean = digits_small
    monkeypatch.chdir(tmp_path)
    np.savez("pairs.npz", noisy=noisy[:3], clean=clean[:3])
    np.savez("new.npz", noisy=noisy[3:], clean=clean[3:])
    ran = []
    for line in block.strip().splitlines():
        argv = shlex.split(line.split("#")[0])
        if argv[1] in ("solve", "certify", "predict"):
            assert main(argv[1:]) in (0, 1), line  # 1: certify's honest "not optimal"
            ran.append(argv[1])
    assert ran.count("solve") == 2 and "certify" in ran and "predict" in ran
    assert Path("denoised.npz").is_file() and Path("certificate.json").is_file()


@pytest.mark.parametrize("argv, message", [
    (["demo", "--threads", "0"], "--threads must be >= 1"),
    (["experiment", "zero-gap", "--threads", "-2"], "--threads must be >= 1"),
    (["experiment", "zero-gap", "--device", "tpu9"], "unknown device 'tpu9'"),
])
def test_device_and_threads_checked_before_any_command_runs(tmp_path, capsys, argv, message):
    assert main(argv + ["--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only message")
def test_cuda_on_cpu_only_torch_is_refused_up_front(tmp_path, capsys):
    assert main(["experiment", "zero-gap", "--smoke", "--device", "cuda", "--out", str(tmp_path / "o")]) == 2
    assert "CPU-only; use device='cpu'" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_static_help_matches_the_commands_own(name):
    from convexdual.cli import build_parser

    text = " ".join(build_parser([name]).format_help().split())
    assert f"{name} {COMMANDS[name].help}" in text


@pytest.mark.parametrize("quiet", [False, True])
def test_progress_follows_quiet(tmp_path, monkeypatch, quiet):
    import functools
    import inspect

    import convexdual as cd

    seen = {}
    for name in ("solve", "build_problem", "sample_patterns"):
        original = getattr(cd, name)
        if "progress" not in inspect.signature(original).parameters:
            continue

        @functools.wraps(original)  # keeps the signature the CLI inspects
        def wrapper(*a, _name=name, _f=original, **k):
            seen[_name] = k.get("progress")
            return _f(*a, **k)

        monkeypatch.setattr(cd, name, wrapper)
    argv = ["solve", "--digits", "2", "--patterns", "4", "--solver", "clarabel", "--out", str(tmp_path / "r")]
    assert main(argv + (["--quiet"] if quiet else [])) == 0
    assert seen and set(seen.values()) == {not quiet}, seen


def test_certify_global_time_limit_flag(tmp_path):
    # --global-time-limit 0 skips the branch-and-bound proof; a positive budget runs it and is recorded
    import json

    import numpy as np

    import convexdual as cd
    from convexdual.cli import main

    rng = np.random.default_rng(0)
    noisy = rng.standard_normal((1, 3, 3))
    clean = noisy + 0.3 * rng.standard_normal((1, 3, 3))
    np.savez(tmp_path / "pair.npz", noisy=noisy, clean=clean)
    net = cd.TwoLayerConvNet.from_filters(rng.standard_normal((2, 9)), np.array([0.5, -0.3]), 1, 3)
    net.save(tmp_path / "net.pt", metadata={"beta": 0.2, "loss": "squared"})
    for budget, ran in (("0", False), ("20", True)):
        out = tmp_path / f"c{budget}.json"
        main(["certify", "--net", str(tmp_path / "net.pt"), "--data", str(tmp_path / "pair.npz"), "--patterns",
              "40", "--global-time-limit", budget, "--out", str(out), "--quiet"])
        rep = json.loads(out.read_text())["certificate"]
        assert bool(rep.get("global_checked")) is ran
