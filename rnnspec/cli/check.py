"""`rnnspec check SPEC... [--set ...]`: validate only (never imports torch); exit 0
or 1."""

from __future__ import annotations

import argparse

from rnnspec.cli.specs import add_set_argument, load_specs

HELP = "validate specs only"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("specs", nargs="+", metavar="SPEC")
    add_set_argument(parser)


def run(args: argparse.Namespace) -> int:
    loaded, failures = load_specs(args.specs, args.overrides)
    for path, program in loaded.items():
        print(f"{path}: ok ({', '.join(spec.name for spec in program.specs)})")
    return 1 if failures else 0
