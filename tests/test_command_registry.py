"""One command registry (convexdual/_commands.py) for the CLI and the experiments: lazy entries, static help."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys

import pytest

from convexdual._commands import Command, add_subcommands, command_in
from convexdual.cli import COMMANDS
from convexdual.experiments import EXPERIMENTS, add_parser

EXPERIMENT_MODULES = tuple(cmd.module for cmd in EXPERIMENTS.values())


def _loaded_after(argv: list[str]) -> tuple[list[str], str]:
    """The experiment modules imported by ``main(argv)`` in a fresh interpreter, and its stdout."""
    code = ("import sys\nfrom convexdual.cli import main\ntry:\n    main(%r)\nexcept SystemExit:\n    pass\n"
            "print('LOADED', [m for m in %r if m in sys.modules])" % (argv, EXPERIMENT_MODULES))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("LOADED"))
    return eval(line.split(" ", 1)[1]), out.stdout


def test_experiment_help_lists_every_experiment_and_imports_none():
    loaded, text = _loaded_after(["experiment", "--help"])
    assert loaded == []
    flat = " ".join(text.split())
    for name, cmd in EXPERIMENTS.items():
        assert f"{name} {cmd.help[:40]}" in flat, name


def test_one_experiment_imports_only_its_own_module():
    loaded, _ = _loaded_after(["experiment", "reconstructions", "--help"])
    assert loaded == ["convexdual.experiments.mnist.reconstructions"]


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_experiment_entry_matches_its_module(name):
    """The static help line is the first line of the module's docstring; the module has the two functions."""
    cmd = EXPERIMENTS[name]
    assert isinstance(cmd, Command) and cmd.register == "add_arguments"
    mod = importlib.import_module(cmd.module)
    first = (mod.__doc__ or "").strip().splitlines()[0]
    assert cmd.help == first, (f"convexdual/experiments/__init__.py: the help of {name!r} must be the first line of "
                               f"{cmd.module}'s docstring, {first!r}")
    assert callable(getattr(mod, cmd.register)) and callable(mod.run)


def test_both_tables_use_the_one_entry_type():
    assert all(isinstance(c, Command) for c in COMMANDS.values())
    assert all(isinstance(c, Command) for c in EXPERIMENTS.values())


def test_add_parser_without_argv_builds_every_experiment():
    parser = argparse.ArgumentParser(prog="convexdual")
    add_parser(parser.add_subparsers(dest="command"), None)
    for name in EXPERIMENTS:
        args = parser.parse_args(["experiment", name, "--smoke", "--out", "o"])
        assert args.experiment == name and args.func.__module__ == EXPERIMENTS[name].module


def test_add_subcommands_builds_only_the_named_one():
    table = {"a": Command("json", "dumps", "help of a"), "b": Command("no.such.module", "x", "help of b")}
    built = []
    parser = argparse.ArgumentParser(prog="t")
    sub = parser.add_subparsers(dest="cmd")
    chosen = add_subcommands(sub, table, ["-v", "a", "--x", "1"],
                             lambda s, name, cmd, mod, rest: built.append((name, mod.__name__, rest)) or
                             s.add_parser(name, help=cmd.help))
    assert chosen == "a" and built == [("a", "json", ["--x", "1"])]  # b's module is never imported
    assert "help of b" in parser.format_help()
    assert command_in(["--", "a"], table) is None and command_in(["c"], table) is None
