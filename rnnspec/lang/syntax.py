"""Spec text → syntax tree of statements with positions (stage 2: lark).

The grammar (`grammars/rnnspec.lark`, shipped in the wheel) only knows the shape of a
statement; which keywords and options exist is decided in `rnnspec.lang.lower` (and,
for the `rnnspec` and `import` lines outside models, in `rnnspec.lang.link`), so that
a typo is reported with a did-you-mean instead of "unexpected token".
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import lark
from lark import (
    Lark,
    Token,
    Transformer,
    UnexpectedCharacters,
    UnexpectedInput,
    v_args,
)
from lark.exceptions import UnexpectedEOF, UnexpectedToken

from rnnspec.lang.diagnostics import Diagnostic, Span
from rnnspec.lang.source import spec_text

Scalar = Union[int, float, bool, str]

#: An integer literal longer than this is an error (no size comes close, and Python
#: refuses to convert 4300 digits and more).
MAX_DIGITS = 100

#: Readable names of the grammar's terminals, for "expected ..." messages.
_TERMINALS = {
    "NAME": "a name",
    "INT": "a number",
    "FLOAT": "a number",
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "EQUAL": "'='",
    "_NL": "end of line",
    "MODEL": "'model'",
    "EXTENDS": "'extends'",
    "STRING": "a quoted path",
    "$END": "end of file",
}


@dataclass(frozen=True)
class Value:
    """A positional value or the value of an option, as written."""

    value: Scalar
    text: str
    span: Span

    @property
    def quoted(self) -> bool:
        """A "quoted" path (only `import` takes one)."""
        return self.text.startswith('"')


@dataclass(frozen=True)
class Option:
    """`key=value`."""

    key: str
    key_span: Span
    value: Value

    @property
    def span(self) -> Span:
        return dataclasses.replace(self.key_span, end=self.value.span.end)


@dataclass(frozen=True)
class Statement:
    keyword: str
    span: Span  # the keyword
    arguments: tuple[Value | Option, ...]

    @property
    def line(self) -> int:
        return self.span.line


@dataclass
class ModelBlock:
    name: str
    name_span: Span
    span: Span  # the `model` keyword
    statements: list[Statement] = field(default_factory=list)
    base: str | None = None  # `extends BASE`
    base_span: Span | None = None
    one_line: bool = False  # `model A extends B { hidden 512 }`: body on one line

    @property
    def file(self) -> str | None:
        return self.span.file


@dataclass
class FileSyntax:
    """A file's statements outside models (`rnnspec 1`, `import "x.rnn"`), in
    order, its model blocks, and its syntax errors."""

    headers: list[Statement]
    models: list[ModelBlock]
    errors: list[Diagnostic]


def grammar_text() -> str:
    """The grammar: from the installed package, or from the source checkout."""
    package = Path(__file__).resolve().parents[1]  # rnnspec/, in a wheel or checkout
    for path in (
        package / "grammars" / "rnnspec.lark",
        package.parent / "grammars" / "rnnspec.lark",
    ):
        if path.is_file():
            return path.read_text(encoding="utf-8")
    # A package that is not a directory (a zip): importlib.resources reads it.
    from importlib import resources

    return (resources.files("rnnspec") / "grammars" / "rnnspec.lark").read_text(
        encoding="utf-8"
    )


def grammar_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def build_parser(grammar: str) -> Lark:
    """LALR, positions kept on every node."""
    return Lark(
        grammar, parser="lalr", propagate_positions=True, maybe_placeholders=False
    )


@functools.cache
def parser() -> Lark:
    """Once per process: loaded from the tables `rnnspec.prebuilt` saved for this
    grammar and this lark version (fast), else built from the grammar."""
    from rnnspec import prebuilt

    grammar = grammar_text()
    saved = prebuilt.saved_parser(grammar_sha256(grammar), lark.__version__)
    if saved is None:
        return build_parser(grammar)
    return Lark.load(io.BytesIO(saved))


class _ToSyntax(Transformer):
    """Methods named after the grammar's rules; literal errors land in `errors`.
    Every span names `file`."""

    def __init__(self, file: str | None = None) -> None:
        super().__init__()
        self.file = file
        self.errors: list[Diagnostic] = []

    def _span(self, token: Token) -> Span:
        return Span(token.line, token.column, token.end_column, self.file)

    def start(self, items: list) -> list:
        return list(items)

    @v_args(meta=True)
    def model(self, meta, children: list) -> ModelBlock:
        name, *rest = children
        body: tuple[list[Statement], bool] = rest.pop()
        base = rest[0] if rest else None
        statements, one_line = body
        return ModelBlock(
            name=str(name),
            name_span=self._span(name),
            span=Span(meta.line, meta.column, meta.column + len("model"), self.file),
            statements=statements,
            base=None if base is None else str(base),
            base_span=None if base is None else self._span(base),
            one_line=one_line,
        )

    def extends(self, children: list[Token]) -> Token:
        (name,) = children
        return name

    def block_body(self, children: list) -> tuple[list[Statement], bool]:
        return list(children), False

    def line_body(self, children: list) -> tuple[list[Statement], bool]:
        return list(children), True

    def statement(self, children: list) -> Statement:
        keyword, *arguments = children
        return Statement(str(keyword), self._span(keyword), tuple(arguments))

    line_statement = statement
    header = statement

    def option(self, children: list) -> Option:
        key, value = children
        return Option(str(key), self._span(key), value)

    def integer(self, children: list[Token]) -> Value:
        (token,) = children
        digits = len(token.lstrip("+-"))
        if digits > MAX_DIGITS:
            self.errors.append(
                Diagnostic.at(
                    self._span(token),
                    f"number too long: {digits} digits (at most {MAX_DIGITS})",
                )
            )
            return Value(str(token), str(token), self._span(token))
        return Value(int(token), str(token), self._span(token))

    def float(self, children: list[Token]) -> Value:
        (token,) = children
        return Value(float(token), str(token), self._span(token))

    def word(self, children: list[Token]) -> Value:
        (token,) = children
        text = str(token)
        value: Scalar = {"true": True, "false": False}.get(text, text)
        return Value(value, text, self._span(token))

    def path(self, children: list[Token]) -> Value:
        (token,) = children
        return Value(str(token)[1:-1], str(token), self._span(token))


def _expected(expected: set[str]) -> str:
    names = sorted({_TERMINALS.get(t, f"'{t.lower()}'") for t in expected})
    return " or ".join(names)


def _describe(error: UnexpectedInput, source: str) -> Diagnostic:
    if isinstance(error, UnexpectedCharacters):
        char = source[error.pos_in_stream] if error.pos_in_stream < len(source) else ""
        return Diagnostic(f"unexpected character {char!r}", error.line, error.column)
    if isinstance(error, UnexpectedToken):
        token = error.token
        if token.type == "$END":
            lines = source.rstrip("\n").split("\n")
            line = len(lines)
            message = "unexpected end of file"
            if "RBRACE" in error.expected:
                message += "; the model block is missing its closing '}'"
            return Diagnostic(message, line, len(lines[-1]) + 1)
        if token.type == "_NL":
            what = "end of line"
        else:
            what = f"'{token}'"
        message = f"unexpected {what}; expected {_expected(error.expected)}"
        width = max(1, len(str(token))) if token.type != "_NL" else 1
        return Diagnostic(message, token.line, token.column, width)
    if isinstance(error, UnexpectedEOF):
        lines = source.rstrip("\n").split("\n")
        return Diagnostic("unexpected end of file", len(lines), len(lines[-1]) + 1)
    return Diagnostic(
        str(error), getattr(error, "line", 0), getattr(error, "column", 0)
    )


def _finish_line(error: UnexpectedToken) -> None:
    """A line ended early (`hidden=`): stand in a placeholder value, end the line.

    Without this the parser would drop the newline and run on into the next line,
    reporting a second, confusing error there.
    """
    interactive = error.interactive_parser
    for _ in range(3):
        accepts = interactive.accepts()
        if "_NL" in accepts:
            interactive.feed_token(error.token)
            return
        if "NAME" not in accepts:
            return
        interactive.feed_token(Token.new_borrow_pos("NAME", "__error__", error.token))


#: Stop recovering after this many syntax errors.
_MAX_SYNTAX_ERRORS = 50


def parse_syntax(source: str) -> tuple[list[ModelBlock], list[Diagnostic]]:
    """The model blocks of `source` and its syntax errors (see `parse_file_syntax`)."""
    syntax = parse_file_syntax(source)
    return syntax.models, syntax.errors


def parse_file_syntax(source: str, file: str | None = None) -> FileSyntax:
    """Parse, recovering after errors so that every broken line is reported once.

    Returns what could be read (possibly nothing) and the diagnostics; every span and
    diagnostic names `file`. Positions are in `spec_text(source)`, the text with every
    line ending in LF.
    """
    source = spec_text(source)
    if not source.endswith("\n"):
        source += "\n"
    errors: list[Diagnostic] = []
    lines_with_errors: set[int] = set()

    def recover(error: UnexpectedInput) -> bool:
        diag = _describe(error, source)
        if diag.line not in lines_with_errors:
            lines_with_errors.add(diag.line)
            errors.append(diag)
        if isinstance(error, UnexpectedToken) and error.token.type == "$END":
            return False
        if isinstance(error, UnexpectedToken) and error.token.type == "_NL":
            _finish_line(error)
        return len(errors) < _MAX_SYNTAX_ERRORS

    def in_file(found: list[Diagnostic]) -> list[Diagnostic]:
        return [dataclasses.replace(d, file=file) for d in found]

    try:
        tree = parser().parse(source, on_error=recover)
    except UnexpectedInput as error:
        diag = _describe(error, source)
        if diag.line not in lines_with_errors:
            errors.append(diag)
        return FileSyntax([], [], in_file(errors))
    to_syntax = _ToSyntax(file)
    try:
        items = to_syntax.transform(tree)
    except Exception:  # a tree mangled by error recovery: keep the syntax errors
        if not errors:
            raise
        return FileSyntax([], [], in_file(errors))
    return FileSyntax(
        headers=[item for item in items if isinstance(item, Statement)],
        models=[item for item in items if isinstance(item, ModelBlock)],
        errors=in_file(errors) + to_syntax.errors,
    )
