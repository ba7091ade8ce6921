"""`rnnspec inspect SPEC [--set ...]`: parameters, shapes and kernels per model
(imports torch)."""

from __future__ import annotations

import argparse

from rnnspec.cli.specs import add_set_argument, load_specs

HELP = "parameters, shapes and kernels per model (imports torch)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", metavar="SPEC")
    add_set_argument(parser)


def run(args: argparse.Namespace) -> int:
    loaded, failures = load_specs([args.spec], args.overrides)
    if failures:
        return 1
    from rnnspec.compile.describe import describe

    for program in loaded.values():
        for spec in program.specs:
            print(describe(spec))
    return 0
