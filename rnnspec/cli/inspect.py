"""`rnnspec inspect SPEC`: parameters, shapes and kernels per model (imports torch)."""

from __future__ import annotations

import argparse

from rnnspec.cli.specs import load_specs

HELP = "parameters, shapes and kernels per model (imports torch)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", metavar="SPEC")


def run(args: argparse.Namespace) -> int:
    loaded, failures = load_specs([args.spec])
    if failures:
        return 1
    from rnnspec.compile.describe import describe

    for _, specs in loaded.values():
        for spec in specs:
            print(describe(spec))
    return 0
