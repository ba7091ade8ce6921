"""The Pygments lexer: every example and fixture lexes without an error token, the
words are what the language says they are, and the lexer is an entry point."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

pytest.importorskip("pygments")

from pygments.token import Comment, Error, Keyword, Name, Number, String  # noqa: E402

from rnnspec.lang.highlight import RnnspecLexer  # noqa: E402
from rnnspec.lang.statements import STATEMENTS  # noqa: E402
from tests.conftest import EXAMPLES, ROOT  # noqa: E402

FIXTURES = sorted((ROOT / "tests" / "fixtures").rglob("*.rnn"))
SPECS = [*EXAMPLES, *FIXTURES]

#: The file statements of issue 16, in every form the lexer must know.
FAMILY = """\
rnnspec 1
# A family of models: a base imported, variants overriding it.
import "base.rnn"

model Wide extends Base { hidden 512 }
model Deep extends Base {  # more layers
    layers     3
    attention  general mask=strict combine=concat
}
"""


def lex(text: str) -> list[tuple]:
    return list(RnnspecLexer().get_tokens(text))


def test_the_specs_are_there():
    assert len(EXAMPLES) >= 7 and len(FIXTURES) >= 8


@pytest.mark.parametrize("path", SPECS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_spec_lexes_without_error_tokens(path):
    text = path.read_text(encoding="utf-8")
    tokens = lex(text)
    assert [t for t in tokens if t[0] in Error] == []
    assert "".join(value for _, value in tokens) == text.rstrip("\n") + "\n"
    # Each statement's first word is a keyword of the language.
    keywords = {doc.keyword for doc in STATEMENTS}
    for token, value in tokens:
        if token is Keyword:
            assert value in keywords
    # a statement opens an indented line, or a one-line block: `{ layers 3 }`
    statements = re.findall(r"(?:^[ \t]+|\{[ \t]*)(\w+)", text, re.MULTILINE)
    assert sorted(v for t, v in tokens if t is Keyword) == sorted(statements)


def test_file_statements_and_inheritance_are_keywords():
    tokens = [(t, v) for t, v in lex(FAMILY) if v.strip()]
    assert tokens[:5] == [
        (Keyword.Namespace, "rnnspec"),
        (Number.Integer, "1"),
        (Comment.Single, tokens[2][1]),
        (Keyword.Namespace, "import"),
        (String.Double, '"base.rnn"'),
    ]
    assert tokens[5:12] == [
        (Keyword.Declaration, "model"),
        (Name.Class, "Wide"),
        (Keyword.Declaration, "extends"),
        (Name.Class, "Base"),
        (tokens[9][0], "{"),
        (Keyword, "hidden"),
        (Number.Integer, "512"),
    ]
    assert (Name.Attribute, "mask") in tokens and (Name.Constant, "strict") in tokens
    assert not [t for t in tokens if t[0] in Error]


def test_typos_show_and_what_the_grammar_cannot_read_is_an_error():
    tokens = lex("model A {\n    peeophole true\n    hidden 12x\n    cell @\n}\n")
    assert (Name, "peeophole") in tokens  # not a keyword: the typo shows
    assert (Keyword.Constant, "true") in tokens
    errors = [v for t, v in tokens if t in Error]
    assert errors == ["1", "2", "@"]  # `12x` is no number; `@` no token at all


def test_the_entry_point_is_declared_and_loads_the_lexer():
    tomllib = pytest.importorskip("tomllib")  # the standard library from 3.11
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    target = project["project"]["entry-points"]["pygments.lexers"]["rnnspec"]
    module, name = target.split(":")
    assert getattr(importlib.import_module(module), name) is RnnspecLexer


def test_pygments_finds_the_lexer_through_the_entry_point(tmp_path, monkeypatch):
    """As an installed rnnspec declares it: a distribution's entry_points.txt."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    lexers = project["project"]["entry-points"]["pygments.lexers"]
    info = tmp_path / "rnnspec_entry_point_test-0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: rnnspec-entry-point-test\nVersion: 0\n"
    )
    (info / "entry_points.txt").write_text(
        "[pygments.lexers]\n"
        + "".join(f"{name} = {target}\n" for name, target in lexers.items())
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from pygments.lexers import get_lexer_by_name, get_lexer_for_filename

    assert isinstance(get_lexer_by_name("rnn"), RnnspecLexer)
    assert isinstance(get_lexer_by_name("rnnspec"), RnnspecLexer)
    assert isinstance(get_lexer_for_filename("tagger.rnn"), RnnspecLexer)


def _rnn_blocks(path: Path) -> list[str]:
    return re.findall(r"^```rnn\n(.*?)^```", path.read_text("utf-8"), re.S | re.M)


def test_rnn_blocks_of_the_docs_lex_without_errors():
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    blocks = [block for path in docs for block in _rnn_blocks(path)]
    assert blocks, "the docs mark their spec blocks ```rnn"
    for block in blocks:
        assert not [t for t in lex(block) if t[0] in Error], block
