"""Diagnostics: every problem in a spec, with a position, printed like a compiler."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass

#: How many diagnostics `str(SpecError)` prints before "... and N more".
MAX_SHOWN = 20


@dataclass(frozen=True)
class Span:
    """A 1-based range on one line: from `column` up to (not including) `end`."""

    line: int
    column: int
    end: int

    @property
    def width(self) -> int:
        return max(1, self.end - self.column)


@dataclass(frozen=True)
class Diagnostic:
    """One problem: where it is and what is wrong."""

    message: str
    line: int = 0
    column: int = 0
    width: int = 1

    @classmethod
    def at(cls, span: Span | None, message: str) -> Diagnostic:
        if span is None:
            return cls(message)
        return cls(message, span.line, span.column, span.width)


class SpecError(ValueError):
    """A spec that cannot be compiled; carries every problem found, in source order.

    `errors` is the list of `Diagnostic`s (each with `line`, `column`, `message`);
    `str(err)` shows them as `file:line:col: error: message` with the source line
    and a caret under the offending text.
    """

    def __init__(
        self,
        errors: Iterable[Diagnostic],
        *,
        source: str | None = None,
        filename: str = "<spec>",
    ) -> None:
        self.errors = sorted(errors, key=lambda d: (d.line, d.column))
        self.source = source
        self.filename = filename
        super().__init__(self._render())

    @property
    def diagnostics(self) -> list[Diagnostic]:
        return self.errors

    def _render(self) -> str:
        lines = self.source.splitlines() if self.source is not None else []
        out = []
        for diag in self.errors[:MAX_SHOWN]:
            if diag.line:
                out.append(
                    f"{self.filename}:{diag.line}:{diag.column}: error: {diag.message}"
                )
            else:
                out.append(f"{self.filename}: error: {diag.message}")
            if 0 < diag.line <= len(lines):
                text = lines[diag.line - 1].expandtabs(1)
                out.append(text)
                out.append(" " * (diag.column - 1) + "^" + "~" * (diag.width - 1))
        hidden = len(self.errors) - MAX_SHOWN
        if hidden > 0:
            out.append(f"... and {hidden} more")
        return "\n".join(out)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """'; did you mean 'x'?' for the closest choice, or '' when nothing is close."""
    close = difflib.get_close_matches(str(word), sorted(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def one_of(choices: Iterable[str]) -> str:
    """Human list of choices: 'a', 'b' or 'c'."""
    quoted = [f"'{c}'" for c in choices]
    if len(quoted) <= 1:
        return "".join(quoted)
    return ", ".join(quoted[:-1]) + " or " + quoted[-1]
