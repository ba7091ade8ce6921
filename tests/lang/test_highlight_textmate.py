"""The TextMate grammar (editors/vscode): generated from the statement table, and,
run by vscode-textmate on vscode-oniguruma as VS Code runs it, it colours every
character of every example and fixture as the Pygments lexer does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from rnnspec.lang.textmate import GRAMMAR_PATH, grammar_text
from tests.conftest import EXAMPLES, ROOT

from .test_highlight import FAMILY, FIXTURES

EXTENSION = ROOT / "editors" / "vscode"
TOKENIZE = EXTENSION / "test" / "tokenize.js"
PACKAGES = ("vscode-textmate", "vscode-oniguruma")

#: A file that exercises what the examples do not: file statements, inheritance,
#: one-line blocks, unknown words and characters the grammar cannot read.
BROKEN = """\
model A {
    peeophole  true
    hidden     12x
    cell       lstm nonlinearity = relu  # spaced option
    head       classes 3 pool=mean
    input      tokens 10 embed=4 @
}
"""


def _node_modules() -> Path:
    return Path(os.environ.get("RNNSPEC_NODE_MODULES", EXTENSION / "node_modules"))


def test_the_grammar_is_generated_from_the_table():
    assert (ROOT / GRAMMAR_PATH).read_text(encoding="utf-8") == grammar_text(), (
        "the TextMate grammar is stale: python -m rnnspec.lang.textmate"
    )


def _textmate(paths: list[Path]) -> dict[str, list]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the TextMate grammar is not run")
    missing = [p for p in PACKAGES if not (_node_modules() / p).is_dir()]
    if missing:
        pytest.skip(
            f"npm packages {', '.join(missing)} are not installed in "
            f"{_node_modules()}: run `npm install` in editors/vscode (or set "
            "RNNSPEC_NODE_MODULES) to test the TextMate grammar"
        )
    result = subprocess.run(
        [node, str(TOKENIZE), str(ROOT / GRAMMAR_PATH), *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "RNNSPEC_NODE_MODULES": str(_node_modules())},
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


#: What a character is, in both highlighters' words: TextMate scope prefix and
#: Pygments token type.
_CATEGORIES = [
    ("comment", "comment.", "Comment"),
    ("file", "keyword.control.", "Keyword.Namespace"),
    ("file", "storage.", "Keyword.Declaration"),
    ("class", "entity.", "Name.Class"),
    ("statement", "keyword.other.statement", "Keyword"),
    ("option", "variable.parameter.option", "Name.Attribute"),
    ("equals", "keyword.operator.assignment", "Operator"),
    ("number", "constant.numeric.", "Literal.Number"),
    ("boolean", "constant.language.boolean", "Keyword.Constant"),
    ("value", "support.constant.value", "Name.Constant"),
    ("string", "string.", "Literal.String"),
    ("brace", "punctuation.", "Punctuation"),
    ("error", "invalid.", "Error"),
    ("name", "variable.other.", "Name"),
]


def _scope_category(scopes: list[str]) -> str:
    scope = scopes[-1]
    for category, prefix, _ in _CATEGORIES:
        if scope.startswith(prefix):
            return category
    return "plain"  # source.rnnspec, meta.*: no colour of its own


def _token_category(token) -> str:
    name = str(token).removeprefix("Token.")
    matches = [
        (len(kind), category)
        for category, _, kind in _CATEGORIES
        if name == kind or name.startswith(kind + ".")
    ]
    return max(matches)[1] if matches else "plain"


def _pygments_colours(text: str) -> list[list[str]]:
    from rnnspec.lang.highlight import RnnspecLexer

    colours: list[list[str]] = [[]]
    for token, value in RnnspecLexer().get_tokens(text):
        for char in value:
            if char == "\n":
                colours.append([])
            else:
                colours[-1].append(_token_category(token))
    return colours


def _textmate_colours(tokens: list, text: str) -> list[list[str]]:
    lines = text.split("\n")
    colours = [["plain"] * len(line) for line in lines]
    for number, start, end, scopes in tokens:
        line = lines[number]
        assert line.isascii() or all(ord(c) < 0x10000 for c in line)
        for column in range(start, end):
            colours[number][column] = _scope_category(scopes)
    return colours


def test_textmate_and_pygments_colour_every_character_alike(tmp_path):
    extra = []
    for name, text in (("family.rnn", FAMILY), ("broken.rnn", BROKEN)):
        extra.append(tmp_path / name)
        extra[-1].write_text(text, encoding="utf-8")
    paths = [*EXAMPLES, *FIXTURES, *extra]
    tokenized = _textmate(paths)
    assert len(tokenized) == len(paths)
    compared = 0
    for path in paths:
        text = path.read_text(encoding="utf-8")
        theirs = _textmate_colours(tokenized[str(path)], text)
        ours = _pygments_colours(text)
        for number, line in enumerate(text.split("\n")):
            for column, char in enumerate(line):
                if char.isspace():
                    continue
                compared += 1
                assert theirs[number][column] == ours[number][column], (
                    f"{path.name}:{number + 1}:{column + 1} {line!r}: TextMate says "
                    f"{theirs[number][column]}, Pygments {ours[number][column]}"
                )
    assert compared > 3000


def test_textmate_scopes_of_a_family_of_specs(tmp_path):
    path = tmp_path / "family.rnn"
    path.write_text(FAMILY + BROKEN, encoding="utf-8")
    tokens = _textmate([path])[str(path)]
    lines = path.read_text(encoding="utf-8").split("\n")
    scoped = {
        (lines[n][s:e], scopes[-1])
        for n, s, e, scopes in tokens
        if lines[n][s:e].strip()
    }
    for expected in [
        ("rnnspec", "keyword.control.version.rnnspec"),
        ("import", "keyword.control.import.rnnspec"),
        ('"base.rnn"', "string.quoted.double.rnnspec"),
        ("model", "storage.type.model.rnnspec"),
        ("Wide", "entity.name.type.model.rnnspec"),
        ("extends", "storage.modifier.extends.rnnspec"),
        ("Base", "entity.other.inherited-class.rnnspec"),
        ("hidden", "keyword.other.statement.rnnspec"),
        ("512", "constant.numeric.integer.rnnspec"),
        ("mask", "variable.parameter.option.rnnspec"),
        ("strict", "support.constant.value.rnnspec"),
        ("true", "constant.language.boolean.rnnspec"),
        ("peeophole", "variable.other.statement.rnnspec"),
        ("@", "invalid.illegal.rnnspec"),
        ("}", "punctuation.section.block.end.rnnspec"),
    ]:
        assert expected in scoped, expected
