"""A Pygments lexer for .rnn specs, registered as the `pygments.lexers` entry point
`rnnspec` (aliases `rnn`, `rnnspec`), so Sphinx and MkDocs highlight ```` ```rnn ````
blocks once rnnspec is installed.

It follows the grammar's token shapes (grammars/rnnspec.lark) and knows the
statements, values and options from `rnnspec.lang.statements`: a known statement is
a keyword, an unknown one a plain name (a typo shows), options are attributes. The
file statements `rnnspec N`, `import "path"` and `model A extends B` are keywords
too. Only text the grammar cannot read is an error token.
"""

from __future__ import annotations

import re

from pygments.lexer import RegexLexer, bygroups, words
from pygments.token import (
    Comment,
    Keyword,
    Name,
    Number,
    Operator,
    Punctuation,
    String,
    Whitespace,
)

from rnnspec.lang.statements import STATEMENTS
from rnnspec.lang.textmate import FLOAT, INT, NAME, value_words


def statement_keywords() -> list[str]:
    return [doc.keyword for doc in STATEMENTS]


_SPACE = (r"[ \t\f]+", Whitespace)
_COMMENT = (r"#[^\r\n]*", Comment.Single)
_NEWLINE = r"\r\n|\r|\n"


class RnnspecLexer(RegexLexer):
    """.rnn model specs (rnnspec)."""

    name = "rnnspec"
    aliases = ["rnn", "rnnspec"]
    filenames = ["*.rnn"]
    mimetypes = ["text/x-rnnspec"]
    url = "https://pypi.org/project/rnnspec/"
    flags = re.UNICODE

    tokens = {
        "root": [
            _SPACE,
            (_NEWLINE, Whitespace),
            _COMMENT,
            (
                r"(rnnspec)([ \t\f]+)(" + INT + ")",
                bygroups(Keyword.Namespace, Whitespace, Number.Integer),
            ),
            (
                r'(import)([ \t\f]+)("[^"\r\n]*")',
                bygroups(Keyword.Namespace, Whitespace, String.Double),
            ),
            (
                r"(model)([ \t\f]+)(" + NAME + ")",
                bygroups(Keyword.Declaration, Whitespace, Name.Class),
                "header",
            ),
        ],
        "header": [
            _SPACE,
            _COMMENT,
            (_NEWLINE, Whitespace, "#pop"),  # no brace on the header's line
            (
                r"(extends)([ \t\f]+)(" + NAME + ")",
                bygroups(Keyword.Declaration, Whitespace, Name.Class),
            ),
            (r"\{", Punctuation, ("#pop", "block")),
        ],
        "block": [
            _SPACE,
            (_NEWLINE, Whitespace),
            _COMMENT,
            (r"\}", Punctuation, "#pop"),
            (words(statement_keywords(), suffix=r"(?!\w)"), Keyword, "arguments"),
            (NAME, Name, "arguments"),
        ],
        "arguments": [
            _SPACE,
            _COMMENT,
            (_NEWLINE, Whitespace, "#pop"),
            (r"\}", Punctuation, "#pop:2"),
            (
                r"(" + NAME + r")([ \t\f]*)(=)",
                bygroups(Name.Attribute, Whitespace, Operator),
            ),
            (INT, Number.Integer),
            (FLOAT, Number.Float),
            (words(("true", "false"), suffix=r"(?!\w)"), Keyword.Constant),
            (words(value_words(), suffix=r"(?!\w)"), Name.Constant),
            (NAME, Name),
        ],
    }
