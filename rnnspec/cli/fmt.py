"""`rnnspec fmt SPEC... [--check | --diff] [--upgrade]`: rewrite specs in canonical
form; `--upgrade` also rewrites them into this rnnspec's language version, stamped
`rnnspec N` (see rnnspec/lang/versions.py).

Every spec is formatted, and every changed file staged, before anything is replaced,
so a spec with errors or a file that cannot be written leaves all files untouched
(diagnostics on stderr, exit 1). Files are replaced atomically and keep their
permissions; a symbolic link stays a link (the file it points to is formatted), and a
file with several hard links is rewritten in place so that all its names see the
change (`rnnspec.files`). `-` reads stdin and writes stdout, for editors.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

from rnnspec.files import WriteError, shown, write_all
from rnnspec.lang.diagnostics import SpecError
from rnnspec.lang.source import MAX_SPEC_BYTES, decode_spec, read_spec_file

STDIN = "-"


HELP = "print or check the canonical text of specs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "specs", nargs="+", metavar="SPEC", help="spec files; '-' for stdin → stdout"
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--check",
        action="store_true",
        help="write nothing; show a diff and exit 1 if a spec is not canonical",
    )
    mode.add_argument(
        "--diff", action="store_true", help="write nothing; show what would change"
    )
    parser.add_argument(
        "--upgrade",
        action="store_true",
        help="rewrite each spec into this rnnspec's language version and state it "
        "(`rnnspec N` as its first line)",
    )


def run(args: argparse.Namespace) -> int:
    from rnnspec.lang.formatter import format_source
    from rnnspec.lang.versions import upgrade_source

    results: list[tuple[str, str, str]] = []  # (name, old, new)
    failures = 0
    for name in args.specs:
        filename = "<stdin>" if name == STDIN else name
        try:
            old = _read_stdin() if name == STDIN else _read(name)
            new = upgrade_source(old) if args.upgrade else old
            results.append((name, old, format_source(new, filename=filename)))
        except OSError as exc:
            print(
                f"{shown(name)}: error: cannot read: {exc.strerror}",
                file=sys.stderr,
            )
            failures += 1
        except SpecError as exc:
            print(exc, file=sys.stderr)
            failures += 1
    if failures:
        print(f"rnnspec: {failures} spec(s) failed; nothing written", file=sys.stderr)
        return 1

    changed = [(name, old, new) for name, old, new in results if old != new]
    if args.check or args.diff:
        for name, old, new in changed:
            sys.stdout.write(unified_diff(old, new, name))
            if args.check:
                print(f"would reformat {shown(name)}", file=sys.stderr)
        if args.check and changed:
            print(
                f"rnnspec: {len(changed)} of {len(results)} spec(s) not canonical",
                file=sys.stderr,
            )
            return 1
        if args.check:
            print(f"{len(results)} spec(s) canonical")
        return 0

    rewrites = {Path(n): new for n, old, new in results if n != STDIN and old != new}
    try:
        write_all(rewrites)
    except WriteError as exc:
        print(exc, file=sys.stderr)
        return 1
    for name, old, new in results:
        if name == STDIN:
            sys.stdout.write(new)
        elif old != new:
            print(f"reformatted {shown(name)}")
        else:
            print(f"unchanged {shown(name)}")
    return 0


def _read(name: str) -> str:
    # Raw: a BOM or '\r\n' stays visible, so such a file counts as not canonical.
    return read_spec_file(name, raw=True)


def _read_stdin() -> str:
    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is None:  # stdin replaced by a text stream
        return sys.stdin.read()
    return decode_spec(buffer.read(MAX_SPEC_BYTES + 1), "<stdin>")


def unified_diff(old: str, new: str, name: str) -> str:
    """A `patch -p0` compatible diff, marking a missing final newline as diff does."""
    lines = list(
        difflib.unified_diff(
            old.splitlines(keepends=True),
            new.splitlines(keepends=True),
            fromfile=name,
            tofile=name,
            fromfiledate="(original)",
            tofiledate="(canonical)",
        )
    )
    return "".join(
        line if line.endswith("\n") else line + "\n\\ No newline at end of file\n"
        for line in lines
    )
