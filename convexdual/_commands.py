"""The one command registry: lazy ``Command`` entries for the CLI and for the experiments.

A table maps a name to a :class:`Command` (module, registering function, one-line help).
:func:`add_subcommands` turns a table into argparse subcommands: the command named in
``argv`` gets its real parser (its module is imported and its function called); every
other one becomes a placeholder that ``--help`` lists with the table's help and that never
runs, so listing commands imports none of their modules. The same function serves
``convexdual COMMAND`` (:data:`convexdual.cli.COMMANDS`) and ``convexdual experiment NAME``
(:data:`convexdual.experiments.EXPERIMENTS`), which is a command with subcommands of its own.

Imports nothing but the standard library (``convexdual --help`` stays fast).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any, Callable, Mapping, NamedTuple, Sequence

__all__ = ["Command", "command_in", "add_subcommands"]


class Command(NamedTuple):
    """One lazily imported command.

    Attributes:
        module: imported only when this command is the one named on the command line.
        register: the function of ``module`` that builds the command's parser (what it is
            called with is up to the table's owner: the CLI passes the subparsers object,
            the experiments the experiment's own parser).
        help: the line ``--help`` lists (kept equal to the command's own by tests).
        quiet: gets the ``--quiet`` / ``--overwrite`` plumbing of :mod:`convexdual.cli`.
    """

    module: str
    register: str
    help: str
    quiet: bool = True


def command_in(argv: Sequence[str], table: Mapping[str, Command]) -> str | None:
    """The command of ``table`` named in ``argv``: the first argument that is not an option, if registered."""
    for a in argv:
        if a == "--":
            return None
        if not a.startswith("-"):
            return a if a in table else None
    return None


def add_subcommands(sub: Any, table: Mapping[str, Command], argv: Sequence[str],
                    attach: Callable[[Any, str, Command, ModuleType, list[str]], None]) -> str | None:
    """Register every command of ``table`` on ``sub`` (an argparse subparsers object); return the chosen name.

    The one named in ``argv`` is built by ``attach(sub, name, command, module, rest)`` (``rest``:
    the arguments after its name, for a command with subcommands of its own); the others are
    placeholders with the table's help, listed by ``--help`` and never run.
    """
    argv = list(argv)
    chosen = command_in(argv, table)
    for name, cmd in table.items():
        if name != chosen:
            sub.add_parser(name, help=cmd.help, add_help=False)  # placeholder: listed by --help, never run
            continue
        rest = argv[argv.index(name) + 1:]
        attach(sub, name, cmd, importlib.import_module(cmd.module), rest)
    return chosen

