"""Rewrites `rnnspec/prebuilt.json` (read by `rnnspec.prebuilt`).

Run `python -m rnnspec.prebuild` after changing rnnspec/nn or the grammar.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from rnnspec.compile import nnsource
from rnnspec.lang.syntax import build_parser, grammar_sha256, grammar_text
from rnnspec.prebuilt import PATH, saved_parser, saved_parser_text


def compute() -> dict[str, Any]:
    """The tables for rnnspec/nn and the grammar as they are now.

    Lark's saved tables differ from run to run (they follow set order), so a saved
    parser that still applies is kept: the file changes only when its sources do.
    """
    import base64
    import io

    import lark

    grammar = grammar_text()
    data = {
        "nn_sha256": nnsource.sources_sha256(nnsource.nn_texts()),
        "nn": nnsource.index_table(),
        "grammar_sha256": grammar_sha256(grammar),
        "lark_version": lark.__version__,
    }
    if saved_parser(data["grammar_sha256"], data["lark_version"]) is not None:
        data["parser"] = saved_parser_text()
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
