"""The ``dnncost`` command line: one parser, one module per subcommand under ``dnncost.commands``.

Each command module defines ``add_parser(subparsers)`` (which sets ``func``) and ``run(args) -> int``.
Commands are discovered, so adding a subcommand is adding one file. Exit codes (the ``EXIT_*``
constants of :mod:`dnncost.commands._exit_codes`, which commands return): 0 success, 1 the work
ran but found a problem, 2 bad input (one line, no traceback unless ``--debug``; argparse's usage
errors too), 130 interrupted.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence
from typing import NoReturn

from dnncost.commands._exit_codes import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_OK
from dnncost.core.errors import DnncostError
from dnncost.core.version import __version__


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line, ``dnncost <cmd>: error: ...``, exit 2 --
    the same shape as every other bad-input error -- instead of argparse's multi-line usage dump.
    Subcommand parsers inherit the class (``add_subparsers`` uses the parent parser's type)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every discovered subcommand."""
    parser = OneLineParser(
        prog="dnncost",
        description="What a deep neural network costs, in computation and in time.",
    )
    parser.add_argument("--version", action="version", version=f"dnncost {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    import dnncost.commands as commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"dnncost.commands.{info.name}").add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI in-process and return its exit code (so tests can call it)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_BAD_INPUT
    try:
        return int(args.func(args) or EXIT_OK)
    except DnncostError as exc:
        if args.debug:
            raise
        print(f"dnncost {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"dnncost {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
