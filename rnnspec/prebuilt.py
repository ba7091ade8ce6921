"""Tables computed ahead of time, so that `rnnspec build` and `check` start fast.

`prebuilt.json`, next to this module, holds two things the compiler needs on every
run and that cost more to compute than the rest of a build:

- rnnspec/nn's index (`nnsource.index`: what each module defines and uses), which
  codegen copies definitions by and model names are checked against; computing it
  parses rnnspec/nn with `ast`. Used while `nn_sha256` matches rnnspec/nn's sources.
- the grammar's LALR parser as lark's `Lark.save` writes it. Used while
  `grammar_sha256` matches the grammar and `lark_version` the installed lark.

A stale entry is ignored (the slow path gives the same result), and
tests/test_hardening_lang.py fails until it is refreshed with

    python -m rnnspec.prebuilt

Nothing is ever written at run time.
"""

from __future__ import annotations

import functools
import json
import sys
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


def compute() -> dict[str, Any]:
    """The tables for rnnspec/nn and the grammar as they are now.

    Lark's saved tables differ from run to run (they follow set order), so a saved
    parser that still applies is kept: the file changes only when its sources do.
    """
    import base64
    import io

    import lark

    from rnnspec import nnsource
    from rnnspec.parse import build_parser, grammar_sha256, grammar_text

    grammar = grammar_text()
    data = {
        "nn_sha256": nnsource.sources_sha256(nnsource.nn_texts()),
        "nn": nnsource.index_table(),
        "grammar_sha256": grammar_sha256(grammar),
        "lark_version": lark.__version__,
    }
    if saved_parser(data["grammar_sha256"], data["lark_version"]) is not None:
        data["parser"] = _data()["parser"]
    else:
        saved = io.BytesIO()
        build_parser(grammar).save(saved)
        data["parser"] = base64.b64encode(saved.getvalue()).decode("ascii")
    return data


def main() -> int:
    """Rewrite prebuilt.json from rnnspec/nn and the grammar."""
    text = json.dumps(compute(), indent=1, sort_keys=True) + "\n"
    if PATH.exists() and PATH.read_text(encoding="utf-8") == text:
        print(f"unchanged {PATH}")
    else:
        PATH.write_text(text, encoding="utf-8")
        print(f"wrote {PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
