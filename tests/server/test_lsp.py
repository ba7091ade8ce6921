"""`rnnspec lsp` end to end: a real LSP client (pygls's) talks JSON-RPC over stdio to
`python -m rnnspec lsp` in a subprocess; nothing here calls a handler directly."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pygls")

from lsprotocol import types  # noqa: E402

import rnnspec  # noqa: E402
from tests.conftest import EXAMPLES, ROOT  # noqa: E402
from tests.server.lsp_client import Client  # noqa: E402

TAGGER = """\
# Three mistakes, as in the README.
model Tagger {
    input      features 40
    cell       lstn
    peeophole  true
    hidden     0
    head       linear 12
}
"""


@pytest.fixture(scope="module")
def client():
    lsp = Client()
    yield lsp
    lsp.close()


def _check_output(path: Path) -> list[tuple[int, int, str]]:
    """(line, column, message) of every diagnostic `rnnspec check` prints."""
    result = subprocess.run(
        [sys.executable, "-m", "rnnspec", "check", str(path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert result.returncode == 1
    found = re.findall(
        rf"^{re.escape(str(path))}:(\d+):(\d+): error: (.*)$", result.stderr, re.M
    )
    return [(int(line), int(column), message) for line, column, message in found]


def _positions(diagnostics) -> list[tuple[int, int, str]]:
    """LSP diagnostics as `check` numbers them (1-based line and column)."""
    return [
        (d.range.start.line + 1, d.range.start.character + 1, d.message)
        for d in diagnostics
    ]


# -- diagnostics ---------------------------------------------------------------------


def test_diagnostics_are_checks_messages_at_checks_positions(client, tmp_path):
    path = tmp_path / "tagger.rnn"
    path.write_text(TAGGER, encoding="utf-8")
    uri = client.open(path, TAGGER)
    diagnostics = client.diagnostics(uri)
    assert _positions(diagnostics) == _check_output(path)
    assert [d.message for d in diagnostics] == [
        "unknown cell 'lstn'; did you mean 'lstm'?",
        "unknown statement 'peeophole'; did you mean 'peephole'?",
        "hidden must be ≥ 1, got 0",
    ]
    lstn = diagnostics[0].range
    assert (lstn.start.line, lstn.start.character, lstn.end.character) == (3, 15, 19)
    assert {d.severity for d in diagnostics} == {types.DiagnosticSeverity.Error}
    assert {d.source for d in diagnostics} == {"rnnspec"}


def test_every_diagnostic_is_published_not_only_those_check_prints(client, tmp_path):
    lines = [f"    hiddn{i} 1" for i in range(30)]
    text = "model A {\n" + "\n".join(lines) + "\n}\n"
    path = tmp_path / "many.rnn"
    path.write_text(text, encoding="utf-8")
    diagnostics = client.diagnostics(client.open(path, text))
    with pytest.raises(rnnspec.SpecError) as error:
        rnnspec.parse(text)
    assert len(error.value.errors) == 33  # 30 unknown, 3 missing statements
    assert _positions(diagnostics) == [
        (d.line, d.column, d.message) for d in error.value.errors
    ]
    printed = _check_output(path)
    assert len(printed) == 20 and _positions(diagnostics)[:20] == printed


def test_diagnostics_follow_the_text_as_it_is_typed(client, tmp_path):
    uri = client.open(tmp_path / "typing.rnn", "model A {\n")
    (early,) = client.diagnostics(uri)
    assert "end of file" in early.message
    client.change(uri, "model A {\n    input features 3\n    cell gru\n}\n")
    (missing,) = client.diagnostics(uri)
    assert missing.message == "missing required statement 'hidden'"
    assert missing.range.start.line == 0  # at the model line, as check says
    client.change(
        uri, "model A {\n    input features 3\n    cell gru\n    hidden 4\n}\n"
    )
    assert client.diagnostics(uri) == []


@pytest.mark.parametrize(
    ("encoding", "columns"),
    [
        (None, (9, 11, 25, 30)),  # UTF-16, the default: 𝔸 is two code units
        (types.PositionEncodingKind.Utf32, (9, 10, 24, 29)),
        (types.PositionEncodingKind.Utf8, (9, 13, 27, 32)),
    ],
)
def test_positions_are_in_the_encoding_the_client_speaks(tmp_path, encoding, columns):
    text = "model A {\n    input features 3\n    cell 𝔸 nonlinearity=reluu\n"
    text += "    hidden 2\n}\n"
    lsp = Client(encodings=[encoding] if encoding else None)
    try:
        expected = encoding or types.PositionEncodingKind.Utf16
        assert lsp.initialized.capabilities.position_encoding == expected
        diagnostics = lsp.diagnostics(lsp.open(tmp_path / "wide.rnn", text))
        hover = lsp.hover(lsp.open(tmp_path / "hover.rnn", text), 2, columns[1] + 3)
    finally:
        lsp.close()
    cell, relu = (d.range for d in diagnostics)
    found = (cell.start.character, cell.end.character)
    found += (relu.start.character, relu.end.character)
    assert found == columns
    assert hover.contents.value.startswith("**nonlinearity**")
    assert (hover.range.start.character, hover.range.end.character) == (
        columns[1] + 1,
        columns[2] - 1,
    )


def test_examples_have_no_diagnostics(client):
    for path in EXAMPLES:
        uri = client.open(path, path.read_text(encoding="utf-8"))
        assert client.diagnostics(uri) == [], path.name


def test_imports_resolve_next_to_the_document(client, tmp_path):
    """`import "base.rnn"` is read from the document's folder, as `check` reads it;
    a problem inside the imported file names that file and line."""
    variants = (ROOT / "examples" / "family" / "variants.rnn").read_text()
    base = (ROOT / "examples" / "family" / "base.rnn").read_text()
    (tmp_path / "base.rnn").write_text(base, encoding="utf-8")
    uri = client.open(tmp_path / "variants.rnn", variants)
    assert client.diagnostics(uri) == []
    broken = base.replace("hidden", "hiddn", 1)
    (tmp_path / "base.rnn").write_text(broken, encoding="utf-8")
    client.change(uri, variants)
    messages = [d.message for d in client.diagnostics(uri)]
    line = broken.splitlines().index(
        next(x for x in broken.splitlines() if "hiddn" in x)
    )
    assert any(
        m.startswith(f"{tmp_path / 'base.rnn'}:{line + 1}:") and "'hiddn'" in m
        for m in messages
    ), messages
