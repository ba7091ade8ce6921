"""The VS Code extension in editors/vscode: the .rnn language, its comments and
brackets, the grammar, and a language client that starts `rnnspec lsp`."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from rnnspec.lang.textmate import GRAMMAR_PATH, SCOPE
from tests.conftest import ROOT

EXTENSION = ROOT / "editors" / "vscode"


def _json(name: str) -> dict:
    return json.loads((EXTENSION / name).read_text(encoding="utf-8"))


def test_the_extension_contributes_the_language_and_its_grammar():
    package = _json("package.json")
    (language,) = package["contributes"]["languages"]
    assert language["id"] == "rnnspec" and language["extensions"] == [".rnn"]
    (grammar,) = package["contributes"]["grammars"]
    assert grammar["language"] == "rnnspec" and grammar["scopeName"] == SCOPE
    path = EXTENSION / grammar["path"]
    assert path.resolve() == (ROOT / GRAMMAR_PATH).resolve()
    assert json.loads(path.read_text(encoding="utf-8"))["scopeName"] == SCOPE
    assert (EXTENSION / package["main"]).is_file()
    assert "onLanguage:rnnspec" in package["activationEvents"]
    assert "vscode-languageclient" in package["dependencies"]


def test_comments_and_brackets_are_the_languages():
    package = _json("package.json")
    (language,) = package["contributes"]["languages"]
    configuration = _json(language["configuration"])
    assert configuration["comments"] == {"lineComment": "#"}
    assert configuration["brackets"] == [["{", "}"]]


def _activate(settings: dict) -> dict:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the extension's activation is not run")
    result = subprocess.run(
        [node, str(EXTENSION / "test" / "activate.js"), json.dumps(settings)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(result.stdout)


def test_activation_starts_rnnspec_lsp_for_rnn_documents():
    activated = _activate({})
    (client,) = activated["created"]
    assert client["id"] == "rnnspec"
    assert client["serverOptions"]["run"] == {"command": "rnnspec", "args": ["lsp"]}
    assert client["clientOptions"]["documentSelector"] == [{"language": "rnnspec"}]
    assert activated["subscriptions"] == 1  # stopped with the extension


def test_the_server_command_is_a_setting_with_the_workspace_folder_expanded():
    activated = _activate(
        {"rnnspec.server.command": "${workspaceFolder}/.venv/bin/rnnspec"}
    )
    (client,) = activated["created"]
    assert client["serverOptions"]["run"] == {
        "command": "/work/project/.venv/bin/rnnspec",
        "args": ["lsp"],
    }
