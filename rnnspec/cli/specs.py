"""Reading the specs a command names: every diagnostic printed, the good ones kept."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from rnnspec.files import shown
from rnnspec.lang.diagnostics import SpecError
from rnnspec.lang.ir import ModelSpec
from rnnspec.lang.lower import parse
from rnnspec.lang.source import read_spec_file

#: spec path → (its text, its models)
Loaded = dict[Path, tuple[str, list[ModelSpec]]]


def load_specs(paths: Sequence[str]) -> tuple[Loaded, int]:
    """Parse every spec, printing all diagnostics; returns the good ones and a count."""
    loaded: Loaded = {}
    failures = 0
    for name in paths:
        path = Path(name)
        try:
            text = read_spec_file(path, filename=name)
            loaded[path] = (text, parse(text, filename=name))
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
