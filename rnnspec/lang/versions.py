"""Language versions: the `rnnspec N` line, and how older files are read.

A spec file may state the language version it is written in as its first statement,
`rnnspec 1`; a file that states none is version 1, the language as it was before the
statement existed. A file stating a version newer than `LANGUAGE_VERSION` is an
error naming the version it needs.

An incompatible change to the language bumps `LANGUAGE_VERSION` to N and adds
`UPGRADES[N - 1]`: a function rewriting the text of a version N-1 file into version
N (keeping every statement on its line, so diagnostics still point into the file as
written). Older files are then read through the chain of upgrades, and
`rnnspec fmt --upgrade` writes the upgraded text back, stamped `rnnspec N`.
docs/language.md says the same for users.
"""

from __future__ import annotations

from collections.abc import Callable

from rnnspec.lang.diagnostics import Diagnostic
from rnnspec.lang.syntax import Statement

#: The language version this rnnspec reads and writes.
LANGUAGE_VERSION = 1

#: The first language version (what a file without an `rnnspec` line is).
FIRST_VERSION = 1

#: version v → the function rewriting a version-v file's text into version v+1.
UPGRADES: dict[int, Callable[[str], str]] = {}

#: The keyword of the version statement.
KEYWORD = "rnnspec"


def stated_version(
    headers: list[Statement],
    errors: list[Diagnostic],
    first_model: int | None = None,
) -> tuple[int, Statement | None]:
    """The version a file states (FIRST_VERSION when none) and its statement.

    Problems (not first: after another header or the model on line `first_model`;
    not a known version, not an integer) land in `errors`; a
    version above `LANGUAGE_VERSION` is returned as stated (and is an error).
    """
    found = [h for h in headers if h.keyword == KEYWORD]
    if not found:
        return FIRST_VERSION, None
    statement = found[0]
    for extra in found[1:]:
        errors.append(
            Diagnostic.at(
                extra.span,
                f"duplicate '{KEYWORD}' statement; first given on line "
                f"{statement.line}",
            )
        )
    if headers[0] is not statement or (first_model or statement.line) < statement.line:
        errors.append(
            Diagnostic.at(
                statement.span,
                f"'{KEYWORD} VERSION' must be the file's first statement",
            )
        )
    version = _version_value(statement, errors)
    return version, statement


def _version_value(statement: Statement, errors: list[Diagnostic]) -> int:
    arguments = statement.arguments
    value = arguments[0] if arguments else None
    number = getattr(value, "value", None)
    if (
        len(arguments) != 1
        or not hasattr(value, "text")
        or isinstance(number, bool)
        or not isinstance(number, int)
        or number < FIRST_VERSION
    ):
        where = value.span if hasattr(value, "span") else statement.span
        errors.append(
            Diagnostic.at(
                where, f"expected '{KEYWORD} N', N the language version ({_known()})"
            )
        )
        return LANGUAGE_VERSION
    if number > LANGUAGE_VERSION:
        from rnnspec.version import __version__

        errors.append(
            Diagnostic.at(
                value.span,  # type: ignore[union-attr]
                f"this file needs rnnspec language version {number}; rnnspec "
                f"{__version__} reads {_known()}: upgrade rnnspec",
            )
        )
        return number  # newer than this rnnspec: the file is not read further
    return number


def _known() -> str:
    if FIRST_VERSION == LANGUAGE_VERSION:
        return f"version {LANGUAGE_VERSION}"
    return f"versions {FIRST_VERSION} to {LANGUAGE_VERSION}"


def upgraded(text: str, version: int) -> str:
    """`text`, written in language `version`, rewritten into `LANGUAGE_VERSION`."""
    for step in range(version, LANGUAGE_VERSION):
        text = UPGRADES[step](text)
    return text


def upgrade_source(source: str) -> str:
    """`source` rewritten into `LANGUAGE_VERSION` and stamped `rnnspec N` (what
    `rnnspec fmt --upgrade` formats). A file whose version line has errors is left
    as it is: formatting it reports them."""
    from rnnspec.lang.source import spec_text
    from rnnspec.lang.syntax import parse_file_syntax

    text = spec_text(source)
    errors: list[Diagnostic] = []
    version, statement = stated_version(parse_file_syntax(text).headers, errors)
    if errors:
        return source
    return stamp(upgraded(text, version), statement.line if statement else None)


def stamp(text: str, version_line: int | None) -> str:
    """`text` with its `rnnspec N` line (1-based line number, or None when it has
    none) saying `LANGUAGE_VERSION`: the last step of `rnnspec fmt --upgrade`."""
    lines = text.split("\n")
    line = f"{KEYWORD} {LANGUAGE_VERSION}"
    if version_line is None:
        return f"{line}\n\n{text}"
    lines[version_line - 1] = line
    return "\n".join(lines)
