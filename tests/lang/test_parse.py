"""Front end: grammar, lowering, IR rules and compiler-style diagnostics."""

from __future__ import annotations

import pytest

import rnnspec
from rnnspec import ModelSpec, SpecError
from tests.conftest import EXAMPLES

TAGGER = """\
# a tagger
model Tagger {
    input      features 40
    cell       lstm
    peeophole true
    hidden     128
}
"""


def errors_of(source: str) -> list[tuple[int, int, str]]:
    with pytest.raises(SpecError) as info:
        rnnspec.parse(source, "t.rnn")
    return [(d.line, d.column, d.message) for d in info.value.errors]


def test_unknown_statement_caret_text_exact():
    with pytest.raises(SpecError) as info:
        rnnspec.parse(TAGGER, "tagger.rnn")
    assert str(info.value) == (
        "tagger.rnn:5:5: error: unknown statement 'peeophole'; "
        "did you mean 'peephole'?\n"
        "    peeophole true\n"
        "    ^~~~~~~~~"
    )
    assert isinstance(info.value, ValueError)
    (diag,) = info.value.errors
    assert (diag.line, diag.column) == (5, 5)


def test_cell_typo_did_you_mean():
    source = "model M {\n    input features 3\n    cell lstn\n    hidden 4\n}\n"
    assert errors_of(source) == [(3, 10, "unknown cell 'lstn'; did you mean 'lstm'?")]


def test_every_problem_is_reported_in_source_order():
    source = """\
model M {
    input features 0
    cell lstm
    hidden 0
    layers 2 3
    directions 3
    dropout 1.0
    impl fast
    head classes 3 pool=maxx
}
"""
    found = errors_of(source)
    assert [line for line, _, _ in found] == [2, 4, 5, 6, 7, 8, 9]
    messages = "\n".join(m for _, _, m in found)
    assert "size must be ≥ 1, got 0" in messages
    assert "hidden must be ≥ 1, got 0" in messages
    assert "'layers' takes 1 value; unexpected '3'" in messages
    assert "unknown pool 'maxx'; did you mean 'max'?" in messages
    assert "dropout must be < 1.0, got 1.0" in messages


def test_duplicate_names_earlier_line():
    source = "model M {\n input features 3\n cell gru\n hidden 2\n hidden 3\n}\n"
    assert errors_of(source) == [
        (5, 2, "duplicate statement 'hidden'; first given on line 4")
    ]


def test_missing_required_points_at_model_line():
    source = "# comment\n\nmodel M {\n    cell gru\n}\n"
    assert errors_of(source) == [
        (3, 1, "missing required statement 'input'"),
        (3, 1, "missing required statement 'hidden'"),
    ]


def test_missing_cell_points_at_model_line():
    assert errors_of("model M {\n input features 3\n hidden 2\n}\n") == [
        (1, 1, "missing required statement 'cell'")
    ]


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        ("peephole true", "'peephole true' needs cell lstm, got cell gru"),
        ("cell gru nonlinearity=relu", "nonlinearity=relu needs cell rnn"),
    ],
)
def test_statement_that_does_not_fit_the_cell_points_at_it(statement, message):
    cell = "" if statement.startswith("cell") else "    cell gru\n"
    source = (
        f"model M {{\n    input features 3\n{cell}    {statement}\n    hidden 2\n}}\n"
    )
    ((line, column, text),) = errors_of(source)
    assert message in text
    assert source.splitlines()[line - 1].strip().startswith(statement.split()[0])


def test_defaults_are_accepted_anywhere():
    source = """\
model M {
    input features 3
    cell gru nonlinearity=tanh
    peephole false
    hidden 2
}
"""
    (spec,) = rnnspec.parse(source)
    assert spec.cell == "gru" and spec.peephole is False


def test_impl_torch_with_peephole_is_an_error():
    source = "model M {\n input features 3\n cell lstm\n peephole true\n"
    source += " hidden 2\n impl torch\n}\n"
    assert errors_of(source) == [
        (6, 7, "impl torch has no peephole LSTM; use impl auto or custom")
    ]


def test_tie_needs_matching_sizes():
    source = "model M {\n input tokens 10 embed=4\n cell gru\n hidden 3\n"
    source += " head logits tie=true\n}\n"
    ((line, col, message),) = errors_of(source)
    assert (line, col) == (5, 18)
    assert "embed is 4, the head's input size is 3" in message


def test_logits_needs_tokens_and_padding_below_vocab():
    found = errors_of(
        "model M {\n input features 3\n cell gru\n hidden 3\n head logits\n}\n"
        "model N {\n input tokens 5 embed=2 padding=5\n cell gru\n hidden 3\n}\n"
    )
    assert found == [
        (5, 7, "'head logits' needs 'input tokens'"),
        (8, 33, "padding must be < vocab (5), got 5"),
    ]


def test_unknown_option_with_did_you_mean():
    source = "model M {\n input tokens 5 embed=2 dropuot=0.1\n cell gru\n hidden 3\n}\n"
    assert errors_of(source) == [
        (2, 25, "unknown option 'dropuot' for 'input tokens'; did you mean 'dropout'?")
    ]


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("range", "shadows the Python builtin 'range'"),
        ("super", "shadows the Python builtin"),
        ("class", "is a Python keyword"),
        ("_Hidden", "must not start with '_'"),
        ("torch", "which generated code uses"),
        ("nn", "which generated code uses"),
        ("F", "which generated code uses"),
        ("Tensor", "which generated code uses"),
        ("RecurrentModel", "which generated code uses"),
    ],
)
def test_model_name_rules(name, why):
    source = f"model {name} {{\n input features 3\n cell gru\n hidden 2\n}}\n"
    ((line, column, message),) = errors_of(source)
    assert (line, column) == (1, 7)
    assert why in message


def test_duplicate_model_names():
    block = "model M {\n input features 3\n cell gru\n hidden 2\n}\n"
    assert errors_of(block + block) == [
        (6, 7, "duplicate model 'M'; first defined on line 1")
    ]


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("model M {\n cell @lstm\n}\n", (2, 7, "unexpected character '@'")),
        (
            "model M {\n cell lstm\n",
            (
                2,
                11,
                "unexpected end of file; the model block is missing its closing '}'",
            ),
        ),
        ("", (0, 0, "no model in spec; expected 'model NAME { ... }'")),
    ],
)
def test_syntax_errors(source, expected):
    assert errors_of(source)[0] == expected


def test_option_missing_value_reports_once():
    source = "model M {\n input features 3\n cell lstm nonlinearity=\n hidden 2\n}\n"
    assert errors_of(source) == [
        (3, 25, "unexpected end of line; expected a name or a number")
    ]


def test_more_than_max_errors_are_summarised():
    body = "".join(f" bogus{i} 1\n" for i in range(25))
    with pytest.raises(SpecError) as info:
        rnnspec.parse(f"model M {{\n{body}}}\n")
    assert len(info.value.errors) == 28  # 25 unknown + input, cell, hidden missing
    assert str(info.value).endswith("... and 8 more")


def test_spinn_rejects_recurrent_statements():
    source = """\
model T {
    input   tokens 20 embed=8
    encoder spinn
    hidden  8
    layers  2
    tracker 4
    head    classes 3
}
"""
    assert errors_of(source) == [(5, 5, "'layers' does not apply to encoder spinn")]


def test_tracker_needs_spinn():
    source = "model M {\n input features 3\n cell gru\n hidden 2\n tracker 3\n}\n"
    assert errors_of(source) == [(5, 10, "'tracker' needs encoder spinn")]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_examples_round_trip(path):
    for spec in rnnspec.parse_file(path):
        assert ModelSpec.model_validate(spec.model_dump()) == spec
        assert ModelSpec.model_validate_json(spec.model_dump_json()) == spec
        assert rnnspec.parse(spec.to_source()) == [spec]


def test_ir_is_frozen_and_forbids_unknown_fields():
    (spec,) = rnnspec.parse_file(EXAMPLES[0])
    with pytest.raises(ValueError, match="frozen"):
        spec.hidden = 3
    data = spec.model_dump()
    data["colour"] = "blue"
    with pytest.raises(ValueError):
        ModelSpec.model_validate(data)


def test_dict_form_reports_cross_field_rules_with_locations():
    from pydantic import ValidationError

    data = {
        "name": "M",
        "input": {"kind": "features", "size": 3},
        "cell": "gru",
        "hidden": 4,
        "peephole": True,
    }
    with pytest.raises(ValidationError) as info:
        ModelSpec.model_validate(data)
    assert [e["loc"] for e in info.value.errors()] == [("peephole",)]
