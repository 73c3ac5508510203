"""The ``convexdual`` command line.

Subcommands are registered by name -> "module:function" strings and imported
only when used, so ``convexdual --help`` stays fast. Each module provides
``add_parser(subparsers)`` which registers its subcommand and sets ``func``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

__all__ = ["main", "COMMANDS"]

# name -> module providing add_parser(subparsers)
COMMANDS: dict[str, str] = {
    "demo": "convexdual.demo",
    "solve": "convexdual.cli_solve",
    "solvers": "convexdual.cli_solve",
    "experiment": "convexdual.experiments",
    "certify": "convexdual.cli_certify",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convexdual",
        description="Train two-layer conv ReLU denoisers through their exact convex dual, and certify them.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    seen = set()
    for module in COMMANDS.values():
        if module in seen:
            continue
        seen.add(module)
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from convexdual.errors import ConvexDualError

    try:
        return int(args.func(args) or 0)
    except (ConvexDualError, ValueError, TypeError, FileNotFoundError) as exc:
        print(f"convexdual {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
