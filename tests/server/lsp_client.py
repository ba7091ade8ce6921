"""A real LSP client for the tests: pygls's `LanguageClient` talking JSON-RPC over
stdio to `python -m rnnspec lsp` in a subprocess, wrapped so that tests call it
synchronously (its event loop runs in a thread of its own)."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from pathlib import Path

from lsprotocol import types
from pygls.lsp.client import LanguageClient

from tests.conftest import ROOT

#: How long a test waits for one answer of the server.
TIMEOUT = 60


class Client:
    """One server process; `open`, `change`, `hover`, ... are LSP messages."""

    def __init__(
        self,
        encodings: list[types.PositionEncodingKind] | None = None,
        python_flags: tuple[str, ...] = (),
        command: tuple[str, ...] | None = None,
    ) -> None:
        """`encodings`: the position encodings the client offers (None: UTF-16 only);
        `command` starts the server (default `python [python_flags] -m rnnspec lsp`)."""
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.client = LanguageClient("rnnspec-tests", "1")
        self.published: dict[str, list[types.PublishDiagnosticsParams]] = {}
        self.messages: list[types.ShowMessageParams] = []
        self.changed = threading.Condition()
        self.versions: dict[str, int] = {}
        self.stderr = b""

        @self.client.feature(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
        def _diagnostics(params: types.PublishDiagnosticsParams) -> None:
            with self.changed:
                self.published.setdefault(params.uri, []).append(params)
                self.changed.notify_all()

        @self.client.feature(types.WINDOW_SHOW_MESSAGE)
        def _message(params: types.ShowMessageParams) -> None:
            self.messages.append(params)

        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        if command is None:
            command = (sys.executable, *python_flags, "-m", "rnnspec", "lsp")
        self._call(self.client.start_io(*command, env=env))
        capabilities = types.ClientCapabilities(
            general=types.GeneralClientCapabilities(position_encodings=encodings)
            if encodings
            else None
        )
        self.initialized = self._call(
            self.client.initialize_async(
                types.InitializeParams(
                    process_id=os.getpid(),
                    root_uri=ROOT.as_uri(),
                    capabilities=capabilities,
                )
            )
        )
        self.client.initialized(types.InitializedParams())

    def _call(self, coroutine):
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result(TIMEOUT)

    def close(self) -> None:
        """shutdown, exit, and wait for the process (its stderr kept in `stderr`)."""
        self._call(self.client.shutdown_async(None))
        self.client.exit(None)
        server = self.client._server
        if server is not None and server.stderr is not None:
            self.stderr = self._call(server.stderr.read())
        self._call(self.client.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(TIMEOUT)

    # -- documents -------------------------------------------------------------------

    def open(self, path: Path, text: str) -> str:
        uri = path.as_uri()
        self.versions[uri] = 1
        self.client.text_document_did_open(
            types.DidOpenTextDocumentParams(
                types.TextDocumentItem(
                    uri=uri, language_id="rnnspec", version=1, text=text
                )
            )
        )
        return uri

    def change(self, uri: str, text: str) -> None:
        self.versions[uri] += 1
        self.client.text_document_did_change(
            types.DidChangeTextDocumentParams(
                types.VersionedTextDocumentIdentifier(
                    version=self.versions[uri], uri=uri
                ),
                [types.TextDocumentContentChangeWholeDocument(text=text)],
            )
        )

    def diagnostics(self, uri: str) -> list[types.Diagnostic]:
        """The diagnostics published for the document's current version."""
        version = self.versions.get(uri)
        with self.changed:
            ok = self.changed.wait_for(
                lambda: any(p.version == version for p in self.published.get(uri, [])),
                TIMEOUT,
            )
            assert ok, f"no diagnostics for {uri} version {version}"
            current = [p for p in self.published[uri] if p.version == version]
            return list(current[-1].diagnostics)

    # -- requests ----------------------------------------------------------------------

    def hover(self, uri: str, line: int, character: int) -> types.Hover | None:
        return self._call(
            self.client.text_document_hover_async(
                types.HoverParams(
                    types.TextDocumentIdentifier(uri), types.Position(line, character)
                )
            )
        )

    def complete(self, uri: str, line: int, character: int) -> list[str]:
        answer = self._call(
            self.client.text_document_completion_async(
                types.CompletionParams(
                    types.TextDocumentIdentifier(uri), types.Position(line, character)
                )
            )
        )
        items = answer.items if isinstance(answer, types.CompletionList) else answer
        return [item.label for item in items or []]

    def definition(self, uri: str, line: int, character: int):
        return self._call(
            self.client.text_document_definition_async(
                types.DefinitionParams(
                    types.TextDocumentIdentifier(uri), types.Position(line, character)
                )
            )
        )

    def format(self, uri: str) -> list[types.TextEdit] | None:
        edits = self._call(
            self.client.text_document_formatting_async(
                types.DocumentFormattingParams(
                    types.TextDocumentIdentifier(uri),
                    types.FormattingOptions(tab_size=4, insert_spaces=True),
                )
            )
        )
        return None if edits is None else list(edits)
