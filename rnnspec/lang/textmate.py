"""The TextMate grammar of .rnn specs (VS Code and every editor that reads TextMate
grammars), generated from the statement table with the Pygments lexer's regular
expressions, so that both highlighters know the same words and agree on every token
(`tests/lang/test_highlight_textmate.py` runs the grammar with vscode-textmate).

`python -m rnnspec.lang.textmate` rewrites
editors/vscode/syntaxes/rnnspec.tmLanguage.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rnnspec.lang.statements import STATEMENTS

SCOPE = "source.rnnspec"
#: Where the VS Code extension keeps it, from the repository root.
GRAMMAR_PATH = Path("editors/vscode/syntaxes/rnnspec.tmLanguage.json")

#: The grammar's NAME, INT and FLOAT (grammars/rnnspec.lark); Pygments uses them too.
NAME = r"[^\W\d]\w*"
INT = r"[+-]?[0-9]+(?![.\w])"
FLOAT = r"[+-]?(?:[0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)(?:[eE][+-]?[0-9]+)?(?![.\w])"
_SPACE = r"[ \t\f]+"


def value_words() -> list[str]:
    """Every word a value or an option's value may be, but true and false."""
    found = {w.word for doc in STATEMENTS for w in doc.words}
    found |= {w.word for doc in STATEMENTS for o in doc.options for w in o.words}
    return sorted(w for w in found if w not in ("true", "false") and w.isidentifier())


def _alternatives(words: list[str]) -> str:
    return "(?:" + "|".join(sorted(words, key=lambda w: (-len(w), w))) + r")(?!\w)"


def _scope(name: str) -> dict[str, str]:
    return {"name": f"{name}.rnnspec"}


def grammar() -> dict[str, Any]:
    """The grammar as JSON data."""
    statements = _alternatives([doc.keyword for doc in STATEMENTS])
    invalid = {"match": r"\S", **_scope("invalid.illegal")}
    return {
        "$schema": "https://raw.githubusercontent.com/martinring/tmlanguage/master/"
        "tmlanguage.json",
        "name": "rnnspec",
        "scopeName": SCOPE,
        "fileTypes": ["rnn"],
        "patterns": [
            {"include": "#comment"},
            {"include": "#version"},
            {"include": "#import"},
            {"include": "#model"},
            invalid,
        ],
        "repository": {
            "comment": {"match": "#.*$", **_scope("comment.line.number-sign")},
            "version": {
                "match": rf"^[ \t\f]*(rnnspec){_SPACE}({INT})",
                "captures": {
                    "1": _scope("keyword.control.version"),
                    "2": _scope("constant.numeric.integer"),
                },
            },
            "import": {
                "match": rf'\b(import){_SPACE}("[^"]*")',
                "captures": {
                    "1": _scope("keyword.control.import"),
                    "2": _scope("string.quoted.double"),
                },
            },
            "model": {
                "begin": rf"\b(model){_SPACE}({NAME})(?:{_SPACE}(extends){_SPACE}"
                rf"({NAME}))?",
                "beginCaptures": {
                    "1": _scope("storage.type.model"),
                    "2": _scope("entity.name.type.model"),
                    "3": _scope("storage.modifier.extends"),
                    "4": _scope("entity.other.inherited-class"),
                },
                "end": r"\}",
                "endCaptures": {"0": _scope("punctuation.section.block.end")},
                **_scope("meta.model"),
                "patterns": [
                    {"include": "#comment"},
                    {"match": r"\{", **_scope("punctuation.section.block.begin")},
                    {"include": "#statement"},
                    invalid,
                ],
            },
            "statement": {
                "begin": rf"(?:^|(?<=\{{))[ \t\f]*(?:({statements})|({NAME}))",
                "beginCaptures": {
                    "1": _scope("keyword.other.statement"),
                    "2": _scope("variable.other.statement"),
                },
                "end": r"(?=$|\}|#)",
                **_scope("meta.statement"),
                "patterns": [
                    {
                        "match": rf"({NAME})[ \t\f]*(=)",
                        "captures": {
                            "1": _scope("variable.parameter.option"),
                            "2": _scope("keyword.operator.assignment"),
                        },
                    },
                    {"match": INT, **_scope("constant.numeric.integer")},
                    {"match": FLOAT, **_scope("constant.numeric.float")},
                    {
                        "match": _alternatives(["true", "false"]),
                        **_scope("constant.language.boolean"),
                    },
                    {
                        "match": _alternatives(value_words()),
                        **_scope("support.constant.value"),
                    },
                    {"match": NAME, **_scope("variable.other.value")},
                    invalid,
                ],
            },
        },
    }


def grammar_text() -> str:
    return json.dumps(grammar(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else GRAMMAR_PATH
    path.write_text(grammar_text(), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
