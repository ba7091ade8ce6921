"""Hover, completion and go-to-definition, from the scan and the statement table.

Each function takes the document's text (or its `Outline`) and a cursor in code
points and answers in code points too (`Span`s); `rnnspec.server.app` converts to
and from the client's position encoding. Other files (imports) are read through a
`Reader`, so that an open, unsaved buffer wins over the file on disk.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lsprotocol import types

from rnnspec.lang.statements import (
    FILE_KEYWORDS,
    STATEMENTS,
    OptionDoc,
    StatementDoc,
    Word,
    statement,
)
from rnnspec.server.scan import (
    Model,
    Outline,
    Place,
    Statement,
    import_path,
    scan,
    split_lines,
)

#: A file's text, or None when it cannot be read.
Reader = Callable[[Path], "str | None"]

#: How deeply `extends` follows imports of imports.
MAX_IMPORT_DEPTH = 32


@dataclass(frozen=True)
class Span:
    """A place in a file: 0-based line, code-point columns [start, end)."""

    path: Path | None
    line: int
    start: int
    end: int


# -- hover ---------------------------------------------------------------------------


def hover(outline: Outline, line: int, column: int) -> tuple[str, Span] | None:
    """Markdown about the word at the cursor, and the word's span."""
    place = outline.place_at(line, column)
    if place is None:
        return None
    text = _hover_text(place)
    if text is None:
        return None
    token = place.token
    return text, Span(None, token.line, token.start, token.end)


def _hover_text(place: Place) -> str | None:
    role, word = place.role, place.token.text
    if role == "file-keyword":
        doc = statement(word)
        return statement_markdown(doc) if doc else None
    if role == "version":
        doc = statement("rnnspec")
        return f"Language version {word}.\n\n" + statement_markdown(doc)
    if role == "import-path":
        return f"Imports the models of `{import_path(place.token)}`."
    if role in ("model-name", "base-name"):
        what = "Model" if role == "model-name" else "Extends model"
        return f"{what} `{word}`."
    doc = statement(place.statement.keyword.text) if place.statement else None
    if doc is None:
        return None
    kind = place.statement.kind
    if role == "statement":
        return statement_markdown(doc)
    if role == "value":
        return _value_markdown(doc, place)
    if role == "option-key":
        option = doc.option(word, kind)
        return option_markdown(doc, option) if option else None
    option = doc.option(place.key, kind)  # option-value
    if option is None:
        return None
    found = _word(option.words, word)
    if found is None:
        return option_markdown(doc, option)
    return word_markdown(found, f"`{option.key}=` of `{doc.keyword}`")


def _value_markdown(doc: StatementDoc, place: Place) -> str | None:
    word = place.token.text
    if place.index == 0:
        found = doc.word(word)
        if found is not None:
            return word_markdown(found, f"`{doc.keyword}`")
        if doc.value:
            return f"`{doc.keyword} {doc.value}`: {doc.help}"
        return None
    kind = doc.word(place.statement.kind or "")
    if place.index == 1 and kind is not None and kind.size:
        return f"`{doc.keyword} {kind.word}` {kind.size_help}"
    return None


def _word(words: tuple[Word, ...], text: str) -> Word | None:
    return next((w for w in words if w.word == text), None)


def statement_markdown(doc: StatementDoc) -> str:
    default = f"\n\nDefault: {doc.default}." if doc.default else ""
    return f"**{doc.keyword}** {doc.form}\n\n{doc.help}{default}"


def option_markdown(doc: StatementDoc, option: OptionDoc) -> str:
    where = f"`{doc.keyword}`"
    if option.kinds:
        where = " / ".join(f"`{doc.keyword} {kind}`" for kind in option.kinds)
    return (
        f"**{option.key}**=`{option.form}`, option of {where}\n\n{option.help}"
        f"\n\nDefault: {option.default}."
    )


def word_markdown(word: Word, of: str) -> str:
    return f"**{word.word}**, a value of {of}\n\n{word.help}"


# -- completion ------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    label: str
    kind: types.CompletionItemKind
    detail: str
    documentation: str
    insert: str | None = None


def completions(
    text: str, line: int, column: int, here: Path | None, read: Reader
) -> list[Item]:
    """What may be written at the cursor: statements at the start of a statement,
    the values after a keyword, options after the values, option values after
    `key=`, `extends` and base models in a header, file statements outside models."""
    lines = split_lines(text)
    current = lines[line] if line < len(lines) else ""
    start = _word_start(current, column)
    before = "\n".join(lines[:line] + [current[:start]])
    outline = scan(before)
    end = outline.end
    if end.after_import or _in_string(current[:column]):
        return _import_items(here)
    if end.header is not None:
        return _header_items(end.header, outline, here, read)
    if end.block is None:
        return _file_items(first=end.first)
    if end.statement is None:
        written = {s.keyword.text for s in end.block.statements}
        return [_statement_item(d) for d in STATEMENTS if d.keyword not in written]
    return _argument_items(end.statement)


def _word_start(line: str, column: int) -> int:
    start = min(column, len(line))
    while start > 0 and (line[start - 1].isalnum() or line[start - 1] in "_.+-"):
        start -= 1
    return start


def _in_string(text: str) -> bool:
    """Whether `text` (a line up to the cursor) ends inside an `import "` string."""
    return text.lstrip().startswith("import") and text.count('"') % 2 == 1


def _statement_item(doc: StatementDoc) -> Item:
    return Item(
        doc.keyword,
        types.CompletionItemKind.Keyword,
        doc.form.replace("`", ""),
        statement_markdown(doc),
    )


def _argument_items(current: Statement) -> list[Item]:
    """After a keyword: its values; after them, its options; after `key=`, the
    option's values."""
    doc = statement(current.keyword.text)
    if doc is None:
        return []
    if current.pending_key is not None:
        option = doc.option(current.pending_key.text, current.kind)
        words = option.words if option else ()
        of = f"`{option.key}=` of `{doc.keyword}`" if option else ""
        return [_word_item(word, of) for word in words]
    if not current.values and not current.options:
        return [_word_item(word, f"`{doc.keyword}`") for word in doc.words]
    written = {key.text for key, _ in current.options}
    return [
        Item(
            f"{option.key}=",
            types.CompletionItemKind.Property,
            option.form,
            option_markdown(doc, option),
            f"{option.key}=",
        )
        for option in doc.options_for(current.kind)
        if option.key not in written
    ]


def _word_item(word: Word, of: str) -> Item:
    return Item(
        word.word, types.CompletionItemKind.EnumMember, "", word_markdown(word, of)
    )


def _file_items(first: bool) -> list[Item]:
    return [
        Item(
            doc.keyword,
            types.CompletionItemKind.Keyword,
            doc.form,
            statement_markdown(doc),
        )
        for doc in FILE_KEYWORDS
        if doc.keyword != "extends" and (first or doc.keyword != "rnnspec")
    ]


def _header_items(
    header: Model, outline: Outline, here: Path | None, read: Reader
) -> list[Item]:
    if header.name is None:
        return []
    if header.extends is None:
        doc = statement("extends")
        return [Item("extends", types.CompletionItemKind.Keyword, doc.form, doc.help)]
    if header.base is not None:
        return []
    items = []
    for path, model in visible_models(outline, here, read):
        if model is header or model.name is None:
            continue
        where = path.name if path is not None and path != here else "this file"
        items.append(
            Item(
                model.name.text,
                types.CompletionItemKind.Class,
                f"model in {where}",
                f"Model `{model.name.text}`, line {model.name.line + 1} of {where}.",
            )
        )
    return items


def _import_items(here: Path | None) -> list[Item]:
    """The spec files in the document's folder (and its subfolders, one level)."""
    if here is None:
        return []
    folder = here.parent
    found = sorted([*folder.glob("*.rnn"), *folder.glob("*/*.rnn")])
    return [
        Item(
            path.relative_to(folder).as_posix(),
            types.CompletionItemKind.File,
            "spec file",
            "",
        )
        for path in found
        if path != here
    ]


# -- definitions -------------------------------------------------------------------


def definition(
    outline: Outline, line: int, column: int, here: Path | None, read: Reader
) -> Span | None:
    """Where the base model of `extends` or the file of an `import` is."""
    place = outline.place_at(line, column)
    if place is None:
        return None
    if place.role == "import-path":
        path = resolve_import(here, import_path(place.token))
        return Span(path, 0, 0, 0) if path is not None and path.is_file() else None
    if place.role == "base-name":
        for path, model in visible_models(outline, here, read):
            name = model.name
            if name is not None and name.text == place.token.text:
                return Span(path, name.line, name.start, name.end)
    return None


def resolve_import(here: Path | None, written: str) -> Path | None:
    """An import's file: relative to the importing file's folder."""
    if not written:
        return None
    path = Path(written).expanduser()
    if path.is_absolute():
        return path
    base = here.parent if here is not None else Path(os.getcwd())
    return base / path


def visible_models(
    outline: Outline, here: Path | None, read: Reader
) -> list[tuple[Path | None, Model]]:
    """The models `extends` may name: this file's, then each import's (and their
    imports'), in order; each file once."""
    found: list[tuple[Path | None, Model]] = [(here, m) for m in outline.models]
    seen = {here.resolve()} if here is not None else set()
    pending = [(here, token) for token in outline.imports]
    depth = 0
    while pending and depth < MAX_IMPORT_DEPTH:
        depth += 1
        following = []
        for base, token in pending:
            path = resolve_import(base, import_path(token))
            if path is None or path.resolve() in seen:
                continue
            seen.add(path.resolve())
            text = read(path)
            if text is None:
                continue
            imported = scan(text)
            found.extend((path, m) for m in imported.models)
            following.extend((path, t) for t in imported.imports)
        pending = following
    return found
