"""`rnnspec schema [--output FILE]`: the JSON Schema of a model's dict form.

Editors (the YAML language server, VS Code's JSON support) use it to complete and
check the `model:` section of experiment configs before anything runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "print the JSON Schema of the IR"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o", "--output", metavar="FILE", help="write the schema to FILE (stdout)"
    )


def schema_text() -> str:
    """Deterministic JSON: same rnnspec, same bytes."""
    from rnnspec.lang.config import json_schema

    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


def run(args: argparse.Namespace) -> int:
    text = schema_text()
    if args.output is None:
        sys.stdout.write(text)
        return 0
    from rnnspec.files import WriteError, problem, shown, write_atomic

    target = Path(args.output)
    reason = problem(target)
    if reason:
        print(f"{shown(target)}: error: {reason}", file=sys.stderr)
        return 1
    try:
        write_atomic(target, text)
    except WriteError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(f"wrote {shown(target)}")
    return 0
