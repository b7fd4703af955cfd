"""The `nextbest` command line.

Each subcommand lives in its own module (`nextbest.commands.*`, or a plugin package registered under the
`nextbest.commands` entry-point group, which is how training and serving add `train` and `serve` without
the core importing them). A command module exposes `register(subparsers)`, which adds its parser and sets
`handler` to a function taking the parsed arguments and returning the exit status.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from typing import Protocol, cast

from nextbest import __version__
from nextbest.errors import NextbestError

CORE_COMMANDS = (
    "simulate",
    "validate",
    "convert",
    "score",
    "evaluate",
    "promote",
    "journeys",
    "monitor",
    "store",
)
PLUGIN_GROUP = "nextbest.commands"

Handler = Callable[[argparse.Namespace], int]


class CommandModule(Protocol):
    def register(self, subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None: ...


def _command_modules() -> list[CommandModule]:
    modules = [
        cast(CommandModule, importlib.import_module(f"nextbest.commands.{name}")) for name in CORE_COMMANDS
    ]
    modules += [cast(CommandModule, ep.load()) for ep in entry_points(group=PLUGIN_GROUP)]
    return modules


def build_parser() -> argparse.ArgumentParser:
    """The full parser, core commands first, then plugins in entry-point order."""
    parser = argparse.ArgumentParser(
        prog="nextbest",
        description="Next-best-action decisioning for customer journeys.",
    )
    parser.add_argument("--version", action="version", version=f"nextbest {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for module in _command_modules():
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `nextbest` console script; returns the process exit status."""
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    # Commands that wrap another CLI (e.g. `train`, LightningCLI) receive the arguments they did not declare.
    if rest and not getattr(args, "passes_through", False):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.passthrough = rest
    handler = cast(Handler, args.handler)
    try:
        return handler(args)
    except NextbestError as exc:
        print(f"nextbest: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("nextbest: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
