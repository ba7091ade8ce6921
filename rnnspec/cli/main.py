"""`rnnspec COMMAND ...`: one module per command in rnnspec/cli, dispatched from here.

Each command module defines `HELP`, `add_arguments(parser)` and `run(args) -> int`,
and imports torch only inside `run` (so `build` and `check` never import it).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from rnnspec.version import __version__

#: The commands, in the order `rnnspec --help` lists them; each is rnnspec.cli.NAME.
COMMANDS = (
    "build",
    "check",
    "explain",
    "inspect",
    "fmt",
    "schema",
    "train",
    "sample",
    "lsp",
)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; with `only`, just that command's module is imported
    (the others cost start-up time that `build` and `check` should not pay)."""
    parser = argparse.ArgumentParser(
        prog="rnnspec",
        description="Compile .rnn model specs into PyTorch models.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS if only is None else (only,):
        command = importlib.import_module(f"rnnspec.cli.{name}")
        sub = commands.add_parser(name, help=command.HELP)
        command.add_arguments(sub)
        sub.set_defaults(run=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:  # run as the `rnnspec` program, not called from Python
        # Spec validation needs no pydantic plugins; finding them costs ~10 ms.
        os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
        argv = sys.argv[1:]
    chosen = argv[0] if argv and argv[0] in COMMANDS else None
    args = build_parser(chosen).parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
