"""A forgiving scan of spec text: what each word is, even while the text is broken.

The language server needs to know, at the cursor, whether a word is a statement, a
value, an option or a model name, in text that is often half typed and does not
parse. This scan reads the text a line at a time with the grammar's token shapes and
never fails: it records the role of every token (`Place`) and, at the end of the
text, the state a completion continues from (`Outline.end`). It also sees the file
statements `rnnspec N`, `import "path"` and `model A extends B`, so that
go-to-definition works whatever the parser of the day accepts.

Lines and columns are 0-based and count code points, on lines split at LF, CRLF and
CR alike (as the LSP and `rnnspec.lang.source.spec_text` split them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

#: The grammar's tokens (grammars/rnnspec.lark), plus strings for `import`.
_TOKEN = re.compile(
    r"""
    (?P<comment>\#.*)
  | (?P<string>"[^"]*"?)
  | (?P<number>[+-]?(?:[0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)(?:[eE][+-]?[0-9]+)?)
  | (?P<word>[^\W\d]\w*)
  | (?P<punct>[{}=])
  | (?P<space>\s+)
  | (?P<other>.)
    """,
    re.VERBOSE,
)

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def split_lines(text: str) -> list[str]:
    """Lines as the LSP counts them: split at LF, CRLF and CR."""
    return _LINE_BREAK.split(text)


@dataclass(frozen=True)
class Token:
    kind: str  # comment, string, number, word, punct, other
    text: str
    line: int
    start: int
    end: int


@dataclass
class Statement:
    """A statement line: its keyword, positional values and `key=value` options."""

    keyword: Token
    model: Model
    values: list[Token] = field(default_factory=list)
    options: list[tuple[Token, Token | None]] = field(default_factory=list)
    pending_key: Token | None = None  # `key=` seen, its value not yet

    @property
    def kind(self) -> str | None:
        """The first value, which picks the options (`tokens`, `logits`)."""
        return self.values[0].text if self.values else None


@dataclass
class Model:
    """`model NAME [extends BASE] { ... }`, as far as it is written."""

    keyword: Token
    name: Token | None = None
    extends: Token | None = None
    base: Token | None = None
    opened: bool = False
    statements: list[Statement] = field(default_factory=list)


@dataclass(frozen=True)
class Place:
    """A token and what it is: `role` is one of file-keyword, version, import-path,
    model-name, base-name, statement, value, option-key, option-value."""

    token: Token
    role: str
    statement: Statement | None = None
    model: Model | None = None
    index: int = 0  # a value's position among the statement's values
    key: str = ""  # an option value's key


@dataclass
class End:
    """Where the text stops: what a completion there would continue."""

    block: Model | None = None  # inside this model's braces
    header: Model | None = None  # reading this model's header
    statement: Statement | None = None  # this statement is under way on the line
    after_import: bool = False  # `import` written, its path not yet
    first: bool = True  # nothing but comments so far


@dataclass
class Outline:
    version: Token | None = None
    imports: list[Token] = field(default_factory=list)  # the path strings
    models: list[Model] = field(default_factory=list)
    places: list[Place] = field(default_factory=list)
    end: End = field(default_factory=End)

    def place_at(self, line: int, column: int) -> Place | None:
        """The token at the cursor, or ending right before it (cursor after a word)."""
        found = None
        for place in self.places:
            token = place.token
            if token.line == line and token.start <= column <= token.end:
                found = place
                if column < token.end:
                    break
        return found

    def model(self, name: str) -> Model | None:
        return next((m for m in self.models if m.name and m.name.text == name), None)


def tokens(line: str, number: int) -> list[Token]:
    """The non-space tokens of one line."""
    found = []
    for match in _TOKEN.finditer(line):
        kind = match.lastgroup or "other"
        if kind != "space":
            found.append(Token(kind, match.group(), number, match.start(), match.end()))
    return found


def import_path(token: Token) -> str:
    """The path of an `import` string token (quotes stripped, even if unclosed)."""
    return token.text[1:].removesuffix('"')


def scan(text: str) -> Outline:
    """The outline of `text`; never raises."""
    outline = Outline()
    end = outline.end
    for number, line in enumerate(split_lines(text)):
        # A new line: a statement, an import and a header (whose brace belongs on
        # its line) end with the previous one.
        end.statement = None
        end.after_import = False
        if end.header is not None and not end.header.opened:
            end.header = None
        line_tokens = tokens(line, number)
        for index, token in enumerate(line_tokens):
            if token.kind == "comment":
                break
            following = line_tokens[index + 1] if index + 1 < len(line_tokens) else None
            if end.block is not None:
                _in_block(outline, token, following)
            else:
                _at_top(outline, token)
            end.first = False
    return outline


def _at_top(outline: Outline, token: Token) -> None:
    """A token outside the braces: a file statement, or a model's header."""
    end = outline.end
    header = end.header
    if header is not None:
        _header(outline, header, token)
    elif end.after_import and token.kind == "string":
        outline.imports.append(token)
        outline.places.append(Place(token, "import-path"))
        end.after_import = False
    elif token.text == "model":
        end.header = Model(token)
        outline.models.append(end.header)
        outline.places.append(Place(token, "file-keyword", model=end.header))
    elif token.text == "import":
        end.after_import = True
        outline.places.append(Place(token, "file-keyword"))
    elif token.text == "rnnspec" and end.first:
        outline.places.append(Place(token, "file-keyword"))
    elif token.kind == "number" and outline.places and outline.version is None:
        last = outline.places[-1].token
        if last.text == "rnnspec" and last.line == token.line:
            outline.version = token
            outline.places.append(Place(token, "version"))


def _header(outline: Outline, header: Model, token: Token) -> None:
    """`model NAME [extends BASE] {`, a token at a time."""
    end = outline.end
    if token.text == "{":
        header.opened = True
        end.header, end.block = None, header
    elif token.kind != "word":
        return
    elif header.name is None:
        header.name = token
        outline.places.append(Place(token, "model-name", model=header))
    elif token.text == "extends" and header.extends is None:
        header.extends = token
        outline.places.append(Place(token, "file-keyword", model=header))
    elif header.extends is not None and header.base is None:
        header.base = token
        outline.places.append(Place(token, "base-name", model=header))


def _in_block(outline: Outline, token: Token, following: Token | None) -> None:
    """A token inside a model's braces: a statement, a value or an option."""
    end = outline.end
    model = end.block
    assert model is not None
    statement = end.statement
    if token.text == "}":
        end.block = end.statement = None
    elif statement is None:
        if token.kind == "word":
            end.statement = Statement(token, model)
            model.statements.append(end.statement)
            outline.places.append(Place(token, "statement", end.statement, model))
    elif token.text == "=":
        return
    elif statement.pending_key is not None:
        key = statement.pending_key
        statement.pending_key = None
        statement.options.append((key, token))
        place = Place(token, "option-value", statement, model, key=key.text)
        outline.places.append(place)
    elif token.kind == "word" and following is not None and following.text == "=":
        statement.pending_key = token
        outline.places.append(Place(token, "option-key", statement, model))
    else:
        index = len(statement.values)
        statement.values.append(token)
        outline.places.append(Place(token, "value", statement, model, index=index))
