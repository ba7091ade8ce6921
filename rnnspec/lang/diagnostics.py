"""Diagnostics: every problem in a spec, with a position, printed like a compiler."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

#: How many diagnostics `str(SpecError)` prints before "... and N more".
MAX_SHOWN = 20


@dataclass(frozen=True)
class Span:
    """A 1-based range on one line: from `column` up to (not including) `end`.

    `file` names the file the line is in, as diagnostics show it (None: the file
    being compiled, in a spec without imports).
    """

    line: int
    column: int
    end: int
    file: str | None = None

    @property
    def width(self) -> int:
        return max(1, self.end - self.column)


@dataclass(frozen=True)
class Diagnostic:
    """One problem: where it is and what is wrong.

    `file` is the file the problem is in when that is not the spec being compiled
    (an imported file, or the `--set` arguments); `notes` point at other places
    that take part (the override that made an inherited statement invalid).
    """

    message: str
    line: int = 0
    column: int = 0
    width: int = 1
    file: str | None = None
    notes: tuple[Diagnostic, ...] = ()

    @classmethod
    def at(cls, span: Span | None, message: str) -> Diagnostic:
        if span is None:
            return cls(message)
        return cls(message, span.line, span.column, span.width, span.file)


class SpecError(ValueError):
    """A spec that cannot be compiled; carries every problem found, in source order.

    `errors` is the list of `Diagnostic`s (each with `line`, `column`, `message`,
    and `file` when the problem is in another file than `filename`); `str(err)`
    shows them as `file:line:col: error: message` with the source line and a caret
    under the offending text. `sources` holds the text of every other file named;
    those listed in `arguments` are command-line arguments (`--set`), shown by
    their text instead of `file:line:col`.
    """

    def __init__(
        self,
        errors: Iterable[Diagnostic],
        *,
        source: str | None = None,
        filename: str = "<spec>",
        sources: Mapping[str, str] | None = None,
        arguments: Iterable[str] = (),
    ) -> None:
        self.source = source
        self.filename = filename
        self.sources = dict(sources or {})
        self.arguments = frozenset(arguments)
        order = {name: rank for rank, name in enumerate(self.sources)}
        self.errors = sorted(
            errors,
            key=lambda d: (order.get(d.file or filename, -1), d.line, d.column),
        )
        super().__init__(self._render())

    @property
    def diagnostics(self) -> list[Diagnostic]:
        return self.errors

    def _text(self, file: str | None) -> str | None:
        if file is None or file == self.filename and file not in self.sources:
            return self.source
        return self.sources.get(file)

    def _render(self) -> str:
        out: list[str] = []
        for diag in self.errors[:MAX_SHOWN]:
            out.extend(self._render_one(diag, "error"))
            for note in diag.notes:
                out.extend(self._render_one(note, "note"))
        hidden = len(self.errors) - MAX_SHOWN
        if hidden > 0:
            out.append(f"... and {hidden} more")
        return "\n".join(out)

    def _render_one(self, diag: Diagnostic, kind: str) -> list[str]:
        file = diag.file or self.filename
        text = self._text(diag.file)
        lines = text.split("\n") if text is not None else []
        shown = 0 < diag.line <= len(lines)
        if file in self.arguments and shown:
            where = lines[diag.line - 1]
        elif diag.line:
            where = f"{file}:{diag.line}:{diag.column}"
        else:
            where = file
        out = [printable(f"{where}: {kind}: {diag.message}")]
        if shown:
            line = lines[diag.line - 1].rstrip("\r")
            start = diag.column - 1
            before, marked = line[:start], line[start : start + diag.width]
            out.append(printable(line))
            out.append(
                " " * display_width(printable(before))
                + "^"
                + "~" * (display_width(printable(marked)) - 1)
            )
        return out


def printable(text: str) -> str:
    """`text` safe to echo on a terminal: tabs as one space, other unprintable
    characters (ESC, bidi overrides, line separators...) as Python escapes."""
    if text.isprintable():
        return text
    return "".join(_printable_char(char) for char in text)


def _printable_char(char: str) -> str:
    if char.isprintable():
        return char
    if char == "\t":
        return " "  # one column, as the parser counts it
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def display_width(text: str) -> int:
    """Terminal columns of printable `text`: wide (CJK, fullwidth) characters take
    two, combining marks none, so that a caret lands under what it marks."""
    if text.isascii():
        return len(text)
    import unicodedata

    return sum(
        0
        if unicodedata.combining(char)
        else 2
        if unicodedata.east_asian_width(char) in "WF"
        else 1
        for char in text
    )


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """'; did you mean 'x'?' for the closest choice, or '' when nothing is close."""
    import difflib  # only when there is a mistake: not on the start-up path

    close = difflib.get_close_matches(str(word), sorted(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def one_of(choices: Iterable[str]) -> str:
    """Human list of choices: 'a', 'b' or 'c'."""
    quoted = [f"'{c}'" for c in choices]
    if len(quoted) <= 1:
        return "".join(quoted)
    return ", ".join(quoted[:-1]) + " or " + quoted[-1]
