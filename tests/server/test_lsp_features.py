"""Hover, completion, go-to-definition and formatting of `rnnspec lsp`, end to end
over stdio; and the server never imports torch."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pygls")

from rnnspec.lang.formatter import format_source  # noqa: E402
from rnnspec.lang.statements import FILE_KEYWORDS, STATEMENTS  # noqa: E402
from tests.conftest import EXAMPLES, ROOT  # noqa: E402
from tests.server.lsp_client import Client  # noqa: E402


@pytest.fixture(scope="module")
def client():
    lsp = Client()
    yield lsp
    lsp.close()


# -- hover: every statement, value and option of the table -----------------------------


def _hover_cases() -> tuple[str, list[tuple[int, int, str, str]]]:
    """A document using every entry of the table, and (line, column, the word
    hovered, the help text its hover must show) for each."""
    lines = ["rnnspec 1", 'import "base.rnn"', "model Everything extends Base {"]
    cases = []

    def add(text: str, *hovered: tuple[str, str]) -> None:
        """A statement line; each (word, help) is hovered at the word's middle."""
        column = 0
        for word, help_text in hovered:
            column = text.index(word, column)
            cases.append((len(lines), column + len(word) // 2, word, help_text))
            column += len(word)
        lines.append(text)

    for doc in STATEMENTS:
        add(f"    {doc.keyword}", (doc.keyword, doc.help))
        if doc.value:
            add(f"    {doc.keyword} 3", (doc.keyword, doc.help), ("3", doc.help))
        for word in doc.words:
            if word.size:
                add(
                    f"    {doc.keyword} {word.word} 7",
                    (word.word, word.help),
                    ("7", word.size_help),
                )
            else:
                add(f"    {doc.keyword} {word.word}", (word.word, word.help))
        for option in doc.options:
            if option.kinds:
                kind = option.kinds[0]
            else:
                kind = doc.words[-1].word if doc.words else "1"
            head = f"    {doc.keyword} {kind}"
            add(f"{head} {option.key}=1", (option.key, option.help))
            for word in option.words:
                add(f"{head} {option.key}={word.word}", (word.word, word.help))
    lines.append("}")
    for number, text in enumerate(lines[:3]):
        for doc in FILE_KEYWORDS:
            found = re.search(rf"\b{doc.keyword}\b", text)
            if found:
                cases.append((number, found.start() + 1, doc.keyword, doc.help))
    return "\n".join(lines) + "\n", cases


def test_hover_explains_every_statement_value_and_option(client, tmp_path):
    text, cases = _hover_cases()
    uri = client.open(tmp_path / "everything.rnn", text)
    lines = text.split("\n")
    helps = {d.help for d in (*STATEMENTS, *FILE_KEYWORDS)}
    assert len(cases) > 100
    assert {c[3] for c in cases} >= helps
    for line, column, word, help_text in cases:
        hover = client.hover(uri, line, column)
        assert hover is not None, f"no hover on {word!r} in {lines[line]!r}"
        assert help_text in hover.contents.value, (word, lines[line])
        start, end = hover.range.start.character, hover.range.end.character
        assert lines[line][start:end] == word


def test_hover_says_nothing_on_blank_space_and_comments(client, tmp_path):
    uri = client.open(tmp_path / "quiet.rnn", "# cell lstm\nmodel A {\n\n}\n")
    assert client.hover(uri, 0, 4) is None
    assert client.hover(uri, 2, 0) is None


# -- completion ------------------------------------------------------------------------


def _complete(client, tmp_path, text: str) -> list[str]:
    """Completions at the `|` of `text`."""
    lines = text.split("\n")
    line = next(n for n, t in enumerate(lines) if "|" in t)
    column = lines[line].index("|")
    path = tmp_path / f"complete{abs(hash(text))}.rnn"
    uri = client.open(path, text.replace("|", ""))
    return client.complete(uri, line, column)


def test_completion_of_statements_leaves_out_those_written(client, tmp_path):
    labels = _complete(client, tmp_path, "model A {\n    cell lstm\n    |\n}\n")
    assert labels == [d.keyword for d in STATEMENTS if d.keyword != "cell"]
    typed = _complete(client, tmp_path, "model A {\n    hid|\n}\n")
    assert "hidden" in typed and "cell" in typed


def test_completion_of_values_options_and_option_values(client, tmp_path):
    assert _complete(client, tmp_path, "model A {\n    cell |\n}\n") == [
        "rnn",
        "lstm",
        "gru",
    ]
    assert _complete(client, tmp_path, "model A {\n    cell l|\n}\n") == [
        "rnn",
        "lstm",
        "gru",
    ]
    assert _complete(client, tmp_path, "model A {\n    peephole |\n}\n") == [
        "true",
        "false",
    ]
    tokens = "model A {\n    input tokens 100 embed=8 |\n}\n"
    assert _complete(client, tmp_path, tokens) == [
        "padding=",
        "dropout=",
        "locked=",
        "word_dropout=",
    ]
    assert _complete(client, tmp_path, "model A {\n    input features 3 |\n}\n") == []
    logits = _complete(client, tmp_path, "model A {\n    head logits |\n}\n")
    assert logits == ["tie=", "dropout=", "locked="]
    classes = _complete(client, tmp_path, "model A {\n    head classes 3 |\n}\n")
    assert classes == ["pool=", "dropout=", "locked=", "pair=", "mlp=", "mlp_hidden="]
    assert _complete(client, tmp_path, "model A {\n    attention dot mask=|\n}\n") == [
        "causal",
        "strict",
    ]
    assert _complete(client, tmp_path, "model A {\n    zoneout 0.1 |\n}\n") == ["cell="]
    assert _complete(client, tmp_path, "model A {\n    cell rnn nonl|\n}\n") == [
        "nonlinearity="
    ]


def test_completion_outside_models_and_in_headers(client, tmp_path):
    (tmp_path / "base.rnn").write_text(
        "model Base {\n    input features 3\n    cell gru\n    hidden 4\n}\n",
        encoding="utf-8",
    )
    assert _complete(client, tmp_path, "|") == ["rnnspec", "import", "model"]
    assert _complete(client, tmp_path, "model A {\n}\n|") == ["import", "model"]
    header = 'import "base.rnn"\nmodel Local {\n}\nmodel A |'
    assert _complete(client, tmp_path, header) == ["extends"]
    base = 'import "base.rnn"\nmodel Local {\n}\nmodel A extends |'
    assert _complete(client, tmp_path, base) == ["Local", "Base"]
    assert "base.rnn" in _complete(client, tmp_path, 'import "|')


# -- go to definition ------------------------------------------------------------------


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_definition_of_extends_finds_the_base_here_and_through_imports(
    client, tmp_path
):
    root = _write(
        tmp_path / "lib" / "root.rnn",
        "# the root of the family\nmodel Root {\n    input features 3\n"
        "    cell gru\n    hidden 4\n}\n",
    )
    base = _write(
        tmp_path / "lib" / "base.rnn",
        'import "root.rnn"\n\nmodel Base extends Root { hidden 8 }\n',
    )
    text = (
        'import "lib/base.rnn"\n'
        "model Local extends Root {\n    layers 2\n}\n"
        "model Wide extends Base { hidden 512 }\n"
        "model Twice extends Local { layers 3 }\n"
    )
    uri = client.open(tmp_path / "family.rnn", text)
    found = client.definition(uri, 1, len("model Local extends R"))
    assert found.uri == root.as_uri()
    assert (found.range.start.line, found.range.start.character) == (1, 6)
    assert found.range.end.character == 10
    found = client.definition(uri, 4, len("model Wide extends Ba"))
    assert found.uri == base.as_uri()
    assert (found.range.start.line, found.range.start.character) == (2, 6)
    found = client.definition(uri, 5, len("model Twice extends Lo"))
    assert found.uri == uri and found.range.start.line == 1
    found = client.definition(uri, 0, len('import "li'))
    assert found.uri == base.as_uri() and found.range.start.line == 0
    assert client.definition(uri, 2, 6) is None  # a statement: nowhere to go


def test_definition_prefers_the_open_buffer_and_survives_cycles(client, tmp_path):
    other = _write(tmp_path / "other.rnn", 'import "family.rnn"\nmodel Old {\n}\n')
    edited = 'import "family.rnn"\n\n\nmodel New {\n}\n'
    client.open(other, edited)  # unsaved: New exists only in the buffer
    uri = client.open(
        tmp_path / "family.rnn", 'import "other.rnn"\nmodel A extends New { }\n'
    )
    found = client.definition(uri, 1, len("model A extends N"))
    assert found.uri == other.as_uri() and found.range.start.line == 3
    assert client.definition(uri, 1, len("model A extends N") + 40) is None


# -- formatting ------------------------------------------------------------------------


def test_formatting_is_fmts_text(client, tmp_path):
    text = "# keep me\nmodel A {  # and me\n  hidden 4\n    cell gru\n"
    text += "  input features 3  # input\n}\n\n\n"
    uri = client.open(tmp_path / "messy.rnn", text)
    (edit,) = client.format(uri)
    assert edit.new_text == format_source(text)
    start, end = edit.range.start, edit.range.end
    assert (start.line, start.character) == (0, 0)
    assert (end.line, end.character) == (len(text.split("\n")) - 1, 0)
    client.change(uri, edit.new_text)
    assert client.format(uri) == []


def test_formatting_a_spec_with_errors_changes_nothing_and_says_why(client, tmp_path):
    uri = client.open(tmp_path / "bad.rnn", "model A {\n    hidden 0\n}\n")
    before = len(client.messages)
    assert client.format(uri) is None
    client.hover(uri, 0, 0)  # a round trip: the message has arrived
    assert "not formatted" in client.messages[before].message


def test_formatting_leaves_examples_as_they_are(client):
    for path in EXAMPLES:
        uri = client.open(path, path.read_text(encoding="utf-8"))
        assert client.format(uri) == [], path.name


# -- the process -----------------------------------------------------------------------


def test_the_server_never_imports_torch(tmp_path):
    lsp = Client(python_flags=("-X", "importtime"))
    try:
        path = tmp_path / "a.rnn"
        uri = lsp.open(path, EXAMPLES[0].read_text(encoding="utf-8"))
        assert lsp.diagnostics(uri) == []
        assert lsp.hover(uri, 3, 6) is not None
        lsp.format(uri)
        lsp.complete(uri, 3, 4)
    finally:
        lsp.close()
    imported = {
        line.rsplit("|", 1)[-1].strip()
        for line in lsp.stderr.decode().splitlines()
        if line.startswith("import time:")
    }
    assert {"rnnspec.server.app", "pygls", "rnnspec.lang.formatter"} <= imported
    assert not {name for name in imported if name.split(".")[0] == "torch"}


def test_the_console_script_serves_with_the_stdio_flag(tmp_path):
    script = Path(sys.executable).with_name("rnnspec")
    if not script.is_file():
        pytest.skip(f"no rnnspec console script beside {sys.executable}")
    lsp = Client(command=(str(script), "lsp", "--stdio"))
    try:
        assert lsp.initialized.server_info.name == "rnnspec"
        uri = lsp.open(tmp_path / "a.rnn", "model A {\n    hidden 0\n}\n")
        assert lsp.diagnostics(uri)
    finally:
        lsp.close()


def test_without_pygls_the_command_says_what_to_install(tmp_path):
    blocker = _write(tmp_path / "pygls" / "__init__.py", "raise ImportError('gone')\n")
    result = subprocess.run(
        [sys.executable, "-m", "rnnspec", "lsp"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": f"{blocker.parent.parent}{os.pathsep}{ROOT}"},
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 1
    assert "pip install 'rnnspec[lsp]'" in result.stderr
