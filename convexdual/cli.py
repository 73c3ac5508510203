"""The ``convexdual`` command line.

The commands live in a static table of lazy :class:`~convexdual._commands.Command` entries
(name -> module, function that registers the subparser, one-line help), so
``convexdual --help`` imports no command module: only the module of the command that runs
is imported. Each registering function takes the argparse ``subparsers`` object, adds its
subcommand and sets ``func``. ``experiment`` has subcommands of its own, registered the same
way from :data:`convexdual.experiments.EXPERIMENTS` (its function also gets the arguments
after ``experiment``, so only the experiment that runs is imported).

Also here, shared by the commands (kept free of heavy imports):

* ``--quiet`` on every command that reports progress (added here when the command's
  module does not define it; ``args.progress`` is ``not args.quiet``);
* :func:`prepare_output_folder` / :func:`prepare_output_file`: check ``--out`` before
  any work (exit 2 on an unusable path; an earlier run's outputs are kept unless
  ``--overwrite``, and then removed first so two runs' files never mix);
* ``--device`` and ``--threads`` of any command are checked before it starts;
* under ``--quiet``, tqdm bars are off (``TQDM_DISABLE``), and the step messages that
  ``demo`` and ``experiment`` print are dropped (stderr is kept) for one closing line.

Exit status: 0 success (for ``solve``/``certify``: optimal), 1 not optimal or not
certified, 2 bad input.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator

from convexdual._commands import Command, add_subcommands

__all__ = ["main", "build_parser", "COMMANDS", "Command", "prepare_output_folder", "prepare_output_file"]

COMMANDS: dict[str, Command] = {
    "demo": Command("convexdual.demo", "add_parser",
                    "the main job: solve, recover, certify and compare with Adam on bundled digits", True),
    "solve": Command("convexdual.cli_solve", "add_solve_parser",
                     "solve program (4) on your data or the bundled digits", True),
    "solvers": Command("convexdual.cli_solve", "add_solvers_parser",
                       "list registered solvers and whether each can run here", False),
    "certify": Command("convexdual.cli_certify", "add_parser",
                       "certify a trained network: globally optimal, or by how much it can improve", True),
    "predict": Command("convexdual.cli_predict", "add_parser",
                       "denoise images with a saved network (PSNR/SSIM when clean images are given)", True),
    "experiment": Command("convexdual.experiments", "add_parser", "reproduce one of the paper's experiments", True),
    "benchmark": Command("convexdual.benchmark.cli", "add_parser",
                         "benchmark every available solver on a standard instance suite (profiles, summary.md)", True),
}

# Commands whose modules print their own step messages (their stdout is dropped under --quiet).
_PRINTS_STEPS = ("demo", "experiment")

# Commands with subcommands of their own: their registering function also gets the arguments after the name.
_NESTED = ("experiment",)

# Files `convexdual demo` writes into --out (used to refuse/clear an earlier run). demo.py may define OUTPUTS.
_DEMO_OUTPUTS = ("report.json", "summary.md", "reconstructions.png", "objective.png", "filters.png", "train.npz",
                 "adam_net.pt", "convex_net.pt", "certificate.json")


# ------------------------------------------------------------------------------------------ outputs
def prepare_output_folder(out: str | os.PathLike, outputs: Iterable[str], *, overwrite: bool,
                          command: str) -> Path:
    """Check an output folder before any work; return it (created).

    Raises:
        FileExistsError: ``out`` is an existing file, or holds outputs of an earlier run
            (any of ``outputs``) and ``overwrite`` is false.
    With ``overwrite``, the earlier run's outputs are deleted here, before the new run,
    so the folder never mixes the files of two runs.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} is an existing file; {command} writes a folder of outputs there. "
                              "Give a new or empty folder")
    old = sorted(name for name in outputs if (out / name).exists())
    if old:
        if not overwrite:
            raise FileExistsError(f"--out {out} already holds the outputs of an earlier run ({', '.join(old)}); "
                                  "give another folder, or --overwrite to delete them and run again")
        for name in old:
            target = out / name
            if target.is_dir() and not target.is_symlink():
                raise FileExistsError(f"--overwrite: {target} is a folder, not an output of {command}; remove it "
                                      "yourself or give another --out")
            target.unlink()
        print(f"convexdual {command}: --overwrite: removed the earlier run's {', '.join(old)} from {out}",
              file=sys.stderr, flush=True)
    out.mkdir(parents=True, exist_ok=True)
    return out


def prepare_output_file(path: str | os.PathLike, *, overwrite: bool, option: str = "--out") -> Path:
    """Check an output file before any work: not a folder, and not an existing file unless ``overwrite``."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{option} {path} is an existing folder; give a file name")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{option} {path} already exists; give another name, or --overwrite to replace it")
    if path.parent.exists() and not path.parent.is_dir():
        raise NotADirectoryError(f"{option} {path}: {path.parent} is a file, not a folder")
    return path


# ------------------------------------------------------------------------------------------ parser
def _subparser_actions(parser: argparse.ArgumentParser) -> list[argparse._SubParsersAction]:
    return [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]


def _add_common_flags(parser: argparse.ArgumentParser) -> None:
    """``--quiet`` and ``--overwrite`` on a command's parser (and its nested ones) unless it has them."""
    for flags, kw in ((("-q", "--quiet"), {"action": "store_true", "help": "no progress bars or step messages; "
                                                                          "errors and warnings still print"}),
                      (("--overwrite",), {"action": "store_true",
                                          "help": "replace the outputs of an earlier run in --out"})):
        try:
            parser.add_argument(*flags, **kw)
        except argparse.ArgumentError:  # the command defines it itself
            pass
    for action in _subparser_actions(parser):
        for nested in action.choices.values():
            _add_common_flags(nested)


def _attach(sub: Any, name: str, cmd: Command, module: Any, rest: list[str]) -> None:
    """Build the real parser of the command that runs (``add_subcommands`` lists the others)."""
    register = getattr(module, cmd.register)
    if name in _NESTED:
        register(sub, rest)
    else:
        register(sub)
    if cmd.quiet:
        _add_common_flags(sub.choices[name])


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; only the module of the command named in ``argv`` is imported."""
    parser = argparse.ArgumentParser(
        prog="convexdual",
        description="Train two-layer conv ReLU denoisers through their exact convex dual, and certify them.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_subcommands(sub, COMMANDS, list(argv or []), _attach)
    return parser


@contextlib.contextmanager
def _tqdm_disabled(disabled: bool) -> Iterator[None]:
    """With ``--quiet``, tqdm bars created by any module stay off (tqdm reads TQDM_DISABLE)."""
    if not disabled:
        yield
        return
    old = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = old


def _check_common_options(args: Any) -> None:
    """``--device`` and ``--threads`` of any command, checked before the command starts."""
    from convexdual._validation import check_device, check_num_threads

    if getattr(args, "device", None) is not None:
        check_device(args.device)
    if getattr(args, "threads", None) is not None:
        check_num_threads(args.threads, "--threads")


def _run_demo(args: Any, func: Any) -> Any:
    """``convexdual demo``: check --out before the run (demo.py writes the files)."""
    outputs = getattr(importlib.import_module("convexdual.demo"), "OUTPUTS", _DEMO_OUTPUTS)
    prepare_output_folder(args.out, outputs, overwrite=args.overwrite, command="demo")
    return func(args)


def _run_quietly(args: Any, run: Any) -> int:
    """``--quiet`` for commands whose modules print step messages themselves (demo, experiment):
    their stdout is dropped (stderr, with warnings and errors, is kept) and one line says how it ended."""
    with contextlib.redirect_stdout(open(os.devnull, "w")) as sink:
        try:
            code = int(run() or 0)
        finally:
            sink.close()
    where = f"; outputs in {args.out}/" if getattr(args, "out", None) is not None else ""
    print(f"{args.command}: finished with exit status {code}{where}", flush=True)
    return code


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    func = getattr(args, "func", None)
    if not func:
        parser.print_help()
        return 2
    quiet = bool(getattr(args, "quiet", False))
    args.progress = not quiet
    from convexdual.errors import ConvexDualError

    try:
        _check_common_options(args)
        with _tqdm_disabled(quiet):
            if args.command == "demo" and hasattr(args, "out"):
                run = lambda: _run_demo(args, func)  # noqa: E731
            else:
                run = lambda: func(args)  # noqa: E731
            if quiet and args.command in _PRINTS_STEPS:
                return _run_quietly(args, run)
            return int(run() or 0)
    except (ConvexDualError, ValueError, TypeError, FileNotFoundError, FileExistsError, IsADirectoryError,
            NotADirectoryError) as exc:
        print(f"convexdual {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
