"""`import "FILE"` and `model A extends B`: what a model inherits, and where each
diagnostic points (into the file and line where the offending statement is written)."""

from __future__ import annotations

import pytest

import rnnspec
from rnnspec import ModelSpec, SpecError
from rnnspec.lang.lower import load_file

BASE = """\
# The base.
model Base {
    input      features 40
    cell       lstm
    peephole   true
    hidden     128
    dropout    0.3 locked=true
    layers     2
}
"""


@pytest.fixture
def family(tmp_path, monkeypatch):
    """Write files into a fresh folder (the working directory, so that messages
    name them as written); returns the writer."""
    monkeypatch.chdir(tmp_path)

    def write(name: str, text: str) -> str:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text, encoding="utf-8")
        return name

    write("base.rnn", BASE)
    return write


def error_of(path: str, **kwargs) -> str:
    with pytest.raises(SpecError) as info:
        rnnspec.parse_file(path, **kwargs)
    return str(info.value)


def base_dict() -> dict:
    (base,) = rnnspec.parse(BASE)
    return base.model_dump()


def test_extends_copies_the_base_and_overrides_what_it_restates(family):
    family("wide.rnn", 'import "base.rnn"\n\nmodel Wide extends Base { hidden 512 }\n')
    (wide,) = rnnspec.parse_file("wide.rnn")  # the import's models are not its own
    assert wide == ModelSpec.model_validate(
        {**base_dict(), "name": "Wide", "hidden": 512}
    )


def test_a_restated_statement_is_replaced_whole_options_included(family):
    family(
        "drop.rnn",
        'import "base.rnn"\nmodel Drop extends Base {\n    dropout 0.1\n}\n',
    )
    (drop,) = rnnspec.parse_file("drop.rnn")
    assert (drop.dropout, drop.dropout_locked) == (0.1, False)


def test_bases_chain_across_files_each_seeing_its_own_imports(family):
    family("mid/mid.rnn", 'import "../base.rnn"\nmodel Mid extends Base { layers 3 }\n')
    family("top.rnn", 'import "mid/mid.rnn"\nmodel Top extends Mid { hidden 64 }\n')
    (top,) = rnnspec.parse_file("top.rnn")
    expected = {**base_dict(), "name": "Top", "layers": 3, "hidden": 64}
    assert top == ModelSpec.model_validate(expected)
    # top.rnn imports mid.rnn only: Base is mid's import, not top's.
    family("top2.rnn", 'import "mid/mid.rnn"\nmodel T extends Base {}\n')
    assert error_of("top2.rnn") == (
        "top2.rnn:2:17: error: unknown model 'Base' to extend; it may extend 'Mid'\n"
        "model T extends Base {}\n"
        "                ^~~~"
    )


def test_a_base_defined_later_in_the_file_and_an_empty_body(family):
    family(
        "later.rnn",
        'import "base.rnn"\nmodel Copy extends Gru {}\nmodel Gru extends Base {\n'
        "    cell gru\n    peephole false\n}\n",
    )
    copy, gru = rnnspec.parse_file("later.rnn")
    assert copy.model_dump() == {**gru.model_dump(), "name": "Copy"}
    assert gru.cell == "gru" and gru.hidden == 128


def test_diamond_imports_are_read_once(family):
    family("left.rnn", 'import "base.rnn"\nmodel Left extends Base { hidden 8 }\n')
    family("right.rnn", 'import "base.rnn"\nmodel Right extends Base { hidden 9 }\n')
    family(
        "top.rnn",
        'import "left.rnn"\nimport "right.rnn"\nmodel Both extends Left { layers 4 }\n',
    )
    program = load_file("top.rnn")
    assert [f.name for f in program.files] == [
        "top.rnn",
        "base.rnn",
        "left.rnn",
        "right.rnn",
    ]
    assert [m.name for m in program.imported] == ["Base", "Left", "Right"]
    assert program.specs[0].hidden == 8 and program.specs[0].layers == 4


def test_an_error_in_an_imported_file_points_into_it_once(family):
    family("base.rnn", BASE.replace("hidden     128", "hidden     0"))
    family("wide.rnn", 'import "base.rnn"\nmodel Wide extends Base { layers 3 }\n')
    assert error_of("wide.rnn") == (
        "base.rnn:6:16: error: hidden must be ≥ 1, got 0\n"
        "    hidden     0\n"
        "               ^"
    )


def test_an_override_that_breaks_an_inherited_statement_names_both_places(family):
    family("gru.rnn", 'import "base.rnn"\n\nmodel Gru extends Base { cell gru }\n')
    assert error_of("gru.rnn") == (
        "base.rnn:5:16: error: 'peephole true' needs cell lstm, got cell gru "
        "(in model Gru, which extends Base)\n"
        "    peephole   true\n"
        "               ^~~~\n"
        "gru.rnn:3:26: note: model Gru overrides 'cell' here\n"
        "model Gru extends Base { cell gru }\n"
        "                         ^~~~"
    )


def test_an_own_statement_broken_by_an_inherited_one_names_both_places(family):
    family(
        "peep.rnn",
        'import "base.rnn"\n'
        "model Gru extends Base {\n    cell gru\n    peephole false\n}\n"
        "model Peep extends Gru {\n    peephole true\n}\n",
    )
    assert error_of("peep.rnn") == (
        "peep.rnn:7:14: error: 'peephole true' needs cell lstm, got cell gru\n"
        "    peephole true\n"
        "             ^~~~\n"
        "peep.rnn:3:5: note: 'cell' comes from model Gru here\n"
        "    cell gru\n"
        "    ^~~~"
    )


def test_unknown_base_did_you_mean(family):
    family("typo.rnn", 'import "base.rnn"\nmodel Wide extends Bsae { hidden 4 }\n')
    assert error_of("typo.rnn") == (
        "typo.rnn:2:20: error: unknown model 'Bsae' to extend; did you mean 'Base'?\n"
        "model Wide extends Bsae { hidden 4 }\n"
        "                   ^~~~"
    )


def test_no_imports_no_base(family):
    family("alone.rnn", "model A extends Base {}\n")
    assert error_of("alone.rnn").splitlines()[0] == (
        "alone.rnn:1:17: error: unknown model 'Base' to extend; "
        "import the file that defines it"
    )


def test_extends_cycles_are_positioned_errors(family):
    family(
        "cycle.rnn",
        "model A extends B {}\nmodel B extends C {}\nmodel C extends A {}\n"
        "model D extends D {}\n",
    )
    assert error_of("cycle.rnn") == (
        "cycle.rnn:3:17: error: model 'C' extends a cycle: A extends B extends C "
        "extends A\n"
        "model C extends A {}\n"
        "                ^\n"
        "cycle.rnn:4:17: error: model 'D' extends itself\n"
        "model D extends D {}\n"
        "                ^"
    )


def test_import_cycles_are_positioned_errors(family):
    family("a.rnn", 'import "b.rnn"\nmodel A extends B {}\n')
    family("b.rnn", 'import "a.rnn"\nmodel B { input features 3 }\n')
    text = error_of("a.rnn")
    assert text.startswith(
        'b.rnn:1:8: error: import cycle: a.rnn → b.rnn → a.rnn\nimport "a.rnn"\n'
        "       ^~~~~~~"
    )


def test_missing_import_did_you_mean(family):
    family("wide.rnn", 'import "bsae.rnn"\nmodel Wide extends Base { hidden 4 }\n')
    assert error_of("wide.rnn") == (  # and no "unknown model 'Base'" after it
        "wide.rnn:1:8: error: cannot import 'bsae.rnn': No such file or directory; "
        "did you mean 'base.rnn'?\n"
        'import "bsae.rnn"\n'
        "       ^~~~~~~~~~"
    )


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            'import "base.txt"',
            "1:8: error: an imported file must end in .rnn, got 'base.txt'",
        ),
        ("import 3", '1:1: error: expected import "FILE.rnn", a path in double quotes'),
        (
            'imprt "base.rnn"',
            "1:1: error: unknown statement 'imprt' outside a model; "
            "did you mean 'import'?",
        ),  # fmt: skip
        (
            'model A { hidden "3" }',
            "1:18: error: unexpected '\"3\"'; expected '}' or a name or a number",
        ),
    ],
)
def test_import_statement_errors(family, line, expected):
    family("m.rnn", line + "\nmodel M extends Base {}\n")
    assert error_of("m.rnn").splitlines()[0] == "m.rnn:" + expected


def test_imports_come_first_and_once(family):
    family(
        "m.rnn",
        'import "base.rnn"\nimport "./base.rnn"\nmodel M extends Base {}\n'
        'import "nothing-like-it.rnn"\n',
    )
    assert [line for line in error_of("m.rnn").splitlines() if "error" in line] == [
        "m.rnn:2:8: error: './base.rnn' is already imported on line 1",
        "m.rnn:4:1: error: 'import' must come before the first model",
        "m.rnn:4:8: error: cannot import 'nothing-like-it.rnn': No such file or "
        "directory",
    ]


def test_a_model_may_not_take_an_imported_name(family):
    family("m.rnn", 'import "base.rnn"\nmodel Base { input features 3 }\n')
    assert (
        "m.rnn:2:7: error: model 'Base' is also defined in base.rnn, which this file "
        "imports; rename one\n"
        "model Base { input features 3 }\n"
        "      ^~~~"
    ) in error_of("m.rnn")


def test_a_one_line_block_reports_like_any_other(family):
    family("m.rnn", "model M { input features 3 }\n")
    assert error_of("m.rnn").splitlines() == [
        "m.rnn:1:1: error: missing required statement 'hidden'",
        "model M { input features 3 }",
        "^~~~~",
        "m.rnn:1:1: error: missing required statement 'cell'",
        "model M { input features 3 }",
        "^~~~~",
    ]


def test_parse_text_imports_relative_to_base_dir(tmp_path):
    (tmp_path / "base.rnn").write_text(BASE)
    text = 'import "base.rnn"\nmodel W extends Base { hidden 3 }\n'
    (spec,) = rnnspec.parse(text, base_dir=tmp_path)
    assert spec.hidden == 3 and spec.cell == "lstm"


MESSY_FAMILY = """\
# Variants.

rnnspec   1
import "base.rnn"  # the base
# Wider.
model Wide extends Base {
  layers   3
    hidden     512  # wider
}
model Deep extends Wide {   layers   4 }
model Same extends Base {
}
model Copy extends Base {}  # a copy
"""

CANONICAL_FAMILY = """\
# Variants.

rnnspec 1

import "base.rnn"  # the base

# Wider.
model Wide extends Base {
    hidden     512  # wider
    layers     3
}

model Deep extends Wide { layers 4 }

model Same extends Base {
}

model Copy extends Base {}  # a copy
"""


def test_fmt_keeps_version_imports_extends_and_one_line_blocks(family):
    from rnnspec.lang.formatter import format_source

    family("messy.rnn", MESSY_FAMILY)
    assert format_source(MESSY_FAMILY, "messy.rnn") == CANONICAL_FAMILY
    assert format_source(CANONICAL_FAMILY, "messy.rnn") == CANONICAL_FAMILY
    assert rnnspec.parse(CANONICAL_FAMILY) == rnnspec.parse_file("messy.rnn")
