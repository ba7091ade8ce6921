"""Tables computed ahead of time, so that `rnnspec build` and `check` start fast.

`prebuilt.json`, next to this module, holds two things the compiler needs on every
run and that cost more to compute than the rest of a build:

- rnnspec/nn's index (`nnsource.index`: what each module defines and uses), which
  codegen copies definitions by and model names are checked against; computing it
  parses rnnspec/nn with `ast`. Used while `nn_sha256` matches rnnspec/nn's sources.
- the grammar's LALR parser as lark's `Lark.save` writes it. Used while
  `grammar_sha256` matches the grammar and `lark_version` the installed lark.

A stale entry is ignored (the slow path gives the same result), and
tests/lang/test_limits_and_encoding.py fails until it is refreshed with

    python -m rnnspec.prebuild

This module only reads (it imports nothing of rnnspec, so both stages can use it);
`rnnspec.prebuild` writes. Nothing is ever written at run time.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

PATH = Path(__file__).with_name("prebuilt.json")


@functools.cache
def _data() -> dict[str, Any]:
    try:
        return json.loads(PATH.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing or damaged: everything takes the slow path
        return {}


def nn_table(nn_sha256: str) -> dict[str, Any] | None:
    """rnnspec/nn's index if it was computed from sources with this hash."""
    data = _data()
    return data.get("nn") if data.get("nn_sha256") == nn_sha256 else None


def saved_parser(grammar_sha256: str, lark_version: str) -> bytes | None:
    """`Lark.save`'s bytes if saved from this grammar by this lark version."""
    import base64

    data = _data()
    if (data.get("grammar_sha256"), data.get("lark_version")) != (
        grammar_sha256,
        lark_version,
    ):
        return None
    return base64.b64decode(data["parser"])


def saved_parser_text() -> str:
    """The saved parser as stored (base64), to keep it when nothing changed."""
    return _data()["parser"]


def nn_names() -> frozenset[str]:
    """Every name rnnspec/nn's modules define or import, as last computed.

    The language checks model names against it without reading rnnspec/nn (that is
    the back end's business); the freshness test keeps it equal to the sources.
    """
    table = _data().get("nn") or {}
    return frozenset(table.get("definitions", {})) | frozenset(table.get("imports", {}))
