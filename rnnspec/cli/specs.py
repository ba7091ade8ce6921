"""Reading the specs a command names: every diagnostic printed, the good ones kept."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from rnnspec.files import shown
from rnnspec.lang.diagnostics import SpecError
from rnnspec.lang.lower import Program, load_file

#: spec path → the program it compiles to (its models, the files that went in)
Loaded = dict[Path, Program]

#: How diagnostics name an override: as the command line wrote it.
SET = "--set"


def add_set_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        SET,
        action="append",
        default=[],
        dest="overrides",
        metavar="[MODEL.]STATEMENT[.OPTION]=VALUE",
        help="override a value of the spec, checked like a written one (repeatable;"
        " MODEL may be left out when the spec has one model): "
        "--set Wide.hidden=1024 --set Wide.attention.mask=strict",
    )


def load_specs(
    paths: Sequence[str], overrides: Sequence[str] = (), model: str | None = None
) -> tuple[Loaded, int]:
    """Parse every spec, printing all diagnostics; returns the good ones and a count.

    `overrides` (`--set`) apply to one spec only: with several, that is an error;
    one that names no model is for `model` (or for the spec's only model).
    """
    if overrides and len(paths) > 1:
        print(
            f"rnnspec: error: {SET} applies to one SPEC; {len(paths)} given",
            file=sys.stderr,
        )
        return {}, len(paths)
    loaded: Loaded = {}
    failures = 0
    for name in paths:
        path = Path(name)
        try:
            loaded[path] = load_file(path, overrides=overrides, label=SET, model=model)
        except OSError as exc:
            print(
                f"{shown(name)}: error: cannot read: {exc.strerror}",
                file=sys.stderr,
            )
            failures += 1
        except SpecError as exc:
            print(exc, file=sys.stderr)
            failures += 1
    return loaded, failures
