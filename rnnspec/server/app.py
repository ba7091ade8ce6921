"""The language server (pygls): `rnnspec lsp` serves it on stdin/stdout.

Diagnostics are `rnnspec check`'s, all of them, as the text is typed (`parse` on the
buffer, never the file on disk); formatting is `rnnspec fmt`'s `format_source`; hover,
completion and go-to-definition come from `rnnspec.server.features`. Positions are
converted here, once, between the server's code points and the client's encoding
(UTF-16 unless the client offers another).
"""

from __future__ import annotations

import logging
from pathlib import Path

from lsprotocol import types
from pygls.lsp.server import LanguageServer
from pygls.uris import from_fs_path, to_fs_path

from rnnspec.lang.diagnostics import Diagnostic, SpecError
from rnnspec.lang.source import read_spec_file
from rnnspec.server import features
from rnnspec.server.scan import scan, split_lines
from rnnspec.version import __version__

logger = logging.getLogger(__name__)

#: Typing one of these opens completion (a space: the next value or option).
TRIGGERS = [" ", "=", '"']


class SpecServer(LanguageServer):
    """pygls's server with the text of documents and of files they import."""

    def text(self, uri: str) -> str:
        return self.workspace.get_text_document(uri).source

    def read(self, path: Path) -> str | None:
        """An imported file's text: the open buffer if there is one, else the disk."""
        uri = from_fs_path(str(path))
        if uri is not None and uri in self.workspace.text_documents:
            return self.workspace.text_documents[uri].source
        try:
            return read_spec_file(path)
        except (OSError, SpecError):
            return None

    # -- positions: code points here, the client's units there ----------------------

    def units(self, text: str) -> int:
        encoding = self.workspace.position_encoding
        if encoding == types.PositionEncodingKind.Utf32:
            return len(text)
        if encoding == types.PositionEncodingKind.Utf8:
            return len(text.encode("utf-8", "surrogatepass"))
        return len(text.encode("utf-16-le", "surrogatepass")) // 2

    def column(self, line: str, character: int) -> int:
        """A client column on `line` as a code-point index."""
        for index in range(len(line)):
            if self.units(line[:index]) >= character:
                return index
        return len(line)

    def range(self, lines: list[str], line: int, start: int, end: int) -> types.Range:
        text = lines[line] if line < len(lines) else ""
        return types.Range(
            types.Position(line, self.units(text[:start])),
            types.Position(line, self.units(text[:end])),
        )

    def span_range(self, span: features.Span, lines: list[str]) -> types.Range:
        return self.range(lines, span.line, span.start, span.end)

    def cursor(self, uri: str, position: types.Position) -> tuple[str, int, int]:
        """The document's text and the cursor as (line, code-point column)."""
        text = self.text(uri)
        lines = split_lines(text)
        line = lines[position.line] if position.line < len(lines) else ""
        return text, position.line, self.column(line, position.character)


server = SpecServer(
    "rnnspec",
    __version__,
    text_document_sync_kind=types.TextDocumentSyncKind.Full,
)


def _path(uri: str) -> Path | None:
    path = to_fs_path(uri)
    return Path(path) if path and uri.startswith("file:") else None


# -- diagnostics -----------------------------------------------------------------------


def diagnostics(ls: SpecServer, uri: str) -> list[types.Diagnostic]:
    """`rnnspec check`'s diagnostics of the document as it is now."""
    from rnnspec.lang.lower import parse

    text = ls.text(uri)
    path = _path(uri)
    base_dir = path.parent if path else None  # imports are relative to the file
    filename = str(path) if path else uri
    try:
        parse(text, filename=filename, base_dir=base_dir)
    except SpecError as error:
        lines = split_lines(text)
        return [_diagnostic(ls, lines, d, filename) for d in error.errors]
    return []


def _diagnostic(
    ls: SpecServer, lines: list[str], diag: Diagnostic, filename: str
) -> types.Diagnostic:
    """One of `check`'s problems, where the open document shows it: a problem in
    an imported file is shown on the document's first line, naming its place."""
    message = diag.message
    elsewhere = diag.file is not None and diag.file != filename
    if diag.line > 0 and not elsewhere:
        line, start = diag.line - 1, max(diag.column - 1, 0)
        where = ls.range(lines, line, start, start + diag.width)
    else:  # a problem of the whole file ("no model in spec"), or of an import
        where = types.Range(types.Position(0, 0), types.Position(0, 0))
        if elsewhere:
            message = f"{diag.file}:{diag.line}:{diag.column}: {message}"
    for note in diag.notes:
        place = f"{note.file or 'here'}:{note.line}:{note.column}"
        message += f"\nnote: {place}: {note.message}"
    return types.Diagnostic(
        range=where,
        message=message,
        severity=types.DiagnosticSeverity.Error,
        source="rnnspec",
    )


def publish(ls: SpecServer, uri: str, version: int | None) -> None:
    ls.text_document_publish_diagnostics(
        types.PublishDiagnosticsParams(
            uri=uri, diagnostics=diagnostics(ls, uri), version=version
        )
    )


@server.feature(types.TEXT_DOCUMENT_DID_OPEN)
def did_open(ls: SpecServer, params: types.DidOpenTextDocumentParams) -> None:
    publish(ls, params.text_document.uri, params.text_document.version)


@server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
def did_change(ls: SpecServer, params: types.DidChangeTextDocumentParams) -> None:
    publish(ls, params.text_document.uri, params.text_document.version)


@server.feature(types.TEXT_DOCUMENT_DID_SAVE)
def did_save(ls: SpecServer, params: types.DidSaveTextDocumentParams) -> None:
    publish(ls, params.text_document.uri, None)  # an imported file may have changed


@server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
def did_close(ls: SpecServer, params: types.DidCloseTextDocumentParams) -> None:
    ls.text_document_publish_diagnostics(
        types.PublishDiagnosticsParams(uri=params.text_document.uri, diagnostics=[])
    )


# -- hover, completion, definition, formatting -----------------------------------------


@server.feature(types.TEXT_DOCUMENT_HOVER)
def hover(ls: SpecServer, params: types.HoverParams) -> types.Hover | None:
    text, line, column = ls.cursor(params.text_document.uri, params.position)
    found = features.hover(scan(text), line, column)
    if found is None:
        return None
    markdown, span = found
    return types.Hover(
        contents=types.MarkupContent(kind=types.MarkupKind.Markdown, value=markdown),
        range=ls.span_range(span, split_lines(text)),
    )


@server.feature(
    types.TEXT_DOCUMENT_COMPLETION,
    types.CompletionOptions(trigger_characters=TRIGGERS),
)
def completion(ls: SpecServer, params: types.CompletionParams) -> types.CompletionList:
    uri = params.text_document.uri
    text, line, column = ls.cursor(uri, params.position)
    items = features.completions(text, line, column, _path(uri), ls.read)
    return types.CompletionList(
        is_incomplete=False,
        items=[
            types.CompletionItem(
                label=item.label,
                kind=item.kind,
                detail=item.detail or None,
                documentation=types.MarkupContent(
                    kind=types.MarkupKind.Markdown, value=item.documentation
                )
                if item.documentation
                else None,
                insert_text=item.insert,
            )
            for item in items
        ],
    )


@server.feature(types.TEXT_DOCUMENT_DEFINITION)
def definition(ls: SpecServer, params: types.DefinitionParams) -> types.Location | None:
    uri = params.text_document.uri
    text, line, column = ls.cursor(uri, params.position)
    here = _path(uri)
    span = features.definition(scan(text), line, column, here, ls.read)
    if span is None:
        return None
    if span.path is None or span.path == here:
        target_uri, target_text = uri, text
    else:
        target_uri = from_fs_path(str(span.path)) or str(span.path)
        target_text = ls.read(span.path) or ""
    return types.Location(
        uri=target_uri, range=ls.span_range(span, split_lines(target_text))
    )


@server.feature(types.TEXT_DOCUMENT_FORMATTING)
def formatting(
    ls: SpecServer, params: types.DocumentFormattingParams
) -> list[types.TextEdit] | None:
    """`rnnspec fmt`'s text as one edit; none while the spec has errors."""
    from rnnspec.lang.formatter import format_source

    uri = params.text_document.uri
    text = ls.text(uri)
    path = _path(uri)
    try:
        formatted = format_source(text, filename=str(path) if path else uri)
    except SpecError as error:
        ls.window_show_message(
            types.ShowMessageParams(
                type=types.MessageType.Warning,
                message=f"rnnspec: not formatted: {len(error.errors)} error(s)",
            )
        )
        return None
    if formatted == text:
        return []
    lines = split_lines(text)
    end = types.Position(len(lines) - 1, ls.units(lines[-1]))
    return [types.TextEdit(types.Range(types.Position(0, 0), end), formatted)]


def serve() -> None:
    """Serve on stdin/stdout until the client says exit."""
    server.start_io()
