"""The regularizers of issue 14 in the language (design section 9): `recurrent_dropout`,
`weight_drop`, `zoneout P [cell=Q]`, `dropout P locked=true`, `input tokens ...
word_dropout=P locked=true`, `head ... dropout=P locked=true` — fields, rules with
positioned diagnostics, the dict form, round trips, canonical text, the plan (which
class, which keywords) and the schema.

Torch-free: the built models are tested in tests/compile and tests/nn.
"""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
from pydantic import ValidationError

import rnnspec
from rnnspec import ModelSpec, SpecError
from rnnspec.compile.plan import around_step_options, model_call, rnn_call, stack_class
from rnnspec.lang.config import json_schema
from rnnspec.lang.formatter import format_source
from rnnspec.lang.ir import RECURRENT_ONLY, parameter_counts
from rnnspec.lang.rules import REGULARIZERS
from tests.specs import error_text, one, spec_with

FIXTURE = Path(__file__).parents[1] / "fixtures" / "identity" / "regularizers.rnn"
TOKENS = {"kind": "tokens", "vocab": 9, "embed": 4}


# -- the statements parse into their fields ------------------------------------------


def test_all_of_them_parse_into_their_fields():
    (spec,) = rnnspec.parse(
        spec_with(
            "input tokens 9 embed=4 dropout=0.2 locked=true word_dropout=0.1",
            "cell lstm",
            "hidden 4",
            "layers 2",
            "dropout 0.3 locked=true",
            "recurrent_dropout 0.25",
            "weight_drop 0.5",
            "zoneout 0.1 cell=0.2",
            "head logits tie=true dropout=0.4 locked=true",
        )
    )
    assert (spec.dropout, spec.dropout_locked) == (0.3, True)
    assert (spec.recurrent_dropout, spec.weight_drop) == (0.25, 0.5)
    assert (spec.zoneout, spec.zoneout_cell) == (0.1, 0.2)
    assert spec.input.model_dump() == {
        **TOKENS,
        "padding": None,
        "dropout": 0.2,
        "locked": True,
        "word_dropout": 0.1,
    }
    assert (spec.head.dropout, spec.head.locked) == (0.4, True)
    assert isinstance(spec.weight_drop, float) and isinstance(spec.zoneout_cell, float)


def test_they_default_to_off():
    spec = one(cell="lstm", input=TOKENS, head={"kind": "linear", "size": 2})
    assert (spec.recurrent_dropout, spec.weight_drop, spec.zoneout) == (0, 0, 0)
    assert spec.zoneout_cell is None and spec.dropout_locked is False
    assert spec.input.word_dropout == 0 and spec.input.locked is False
    assert spec.head.locked is False
    text = spec.to_source()
    for word in ("locked", "word_dropout", *REGULARIZERS):
        assert word not in text


def test_the_integer_zero_and_one_are_rates_too():
    (spec,) = rnnspec.parse(
        spec_with("input features 3", "cell gru", "hidden 4", "weight_drop 0")
    )
    assert spec.weight_drop == 0.0 and isinstance(spec.weight_drop, float)


# -- every rule, at the statement or option that asks for too much ------------------

BASE = ("input features 3", "cell lstm", "hidden 4")

RULES = [
    (
        (*BASE, "recurrent_dropout 1"),
        "m.rnn:5:23: error: recurrent_dropout must be < 1.0, got 1\n"
        "    recurrent_dropout 1\n"
        "                      ^",
    ),
    (
        (*BASE, "weight_drop -0.1"),
        "m.rnn:5:17: error: weight_drop must be ≥ 0.0, got -0.1\n"
        "    weight_drop -0.1\n"
        "                ^~~~",
    ),
    (
        (*BASE, "zoneout 1.5"),
        "m.rnn:5:13: error: zoneout must be < 1.0, got 1.5\n"
        "    zoneout 1.5\n"
        "            ^~~",
    ),
    (
        (*BASE, "zoneout 0.1 cell=1.0"),
        "m.rnn:5:22: error: cell must be < 1.0, got 1.0\n"
        "    zoneout 0.1 cell=1.0\n"
        "                     ^~~",
    ),
    (
        (*BASE, "zoneout 0.1 cell=high"),
        "m.rnn:5:22: error: cell must be a number, got 'high'\n"
        "    zoneout 0.1 cell=high\n"
        "                     ^~~~",
    ),
    (
        (*BASE, "recurrent_dropout true"),
        "m.rnn:5:23: error: recurrent_dropout must be a number, got true\n"
        "    recurrent_dropout true\n"
        "                      ^~~~",
    ),
    (
        ("input features 3", "cell gru", "hidden 4", "zoneout 0.1 cell=0.2"),
        "m.rnn:5:22: error: zoneout cell=Q needs cell lstm (Q is the rate of its "
        "cell state), got cell gru\n"
        "    zoneout 0.1 cell=0.2\n"
        "                     ^~~",
    ),
    (
        ("input features 3", "cell rnn", "hidden 4", "zoneout 0 cell=0"),
        "m.rnn:5:20: error: zoneout cell=Q needs cell lstm (Q is the rate of its "
        "cell state), got cell rnn\n"
        "    zoneout 0 cell=0\n"
        "                   ^",
    ),
    (
        (*BASE, "zoneout 0.1 cel=0.2"),
        "m.rnn:5:17: error: unknown option 'cel' for 'zoneout'; "
        "did you mean 'cell'?\n"
        "    zoneout 0.1 cel=0.2\n"
        "                ^~~",
    ),
    (
        (*BASE, "zoneout 0.1 cell=0.2 cell=0.3"),
        "m.rnn:5:26: error: option 'cell' given twice\n"
        "    zoneout 0.1 cell=0.2 cell=0.3\n"
        "                         ^~~~",
    ),
    (
        (*BASE, "weight_drop 0.5 locked=true"),
        "m.rnn:5:21: error: 'weight_drop' takes no options\n"
        "    weight_drop 0.5 locked=true\n"
        "                    ^~~~~~",
    ),
    (
        (*BASE, "dropout 0.2 lockd=true"),
        "m.rnn:5:17: error: unknown option 'lockd' for 'dropout'; "
        "did you mean 'locked'?\n"
        "    dropout 0.2 lockd=true\n"
        "                ^~~~~",
    ),
    (
        (*BASE, "layers 2", "dropout 0.2 locked=yes"),
        "m.rnn:6:24: error: locked must be true or false, got 'yes'\n"
        "    dropout 0.2 locked=yes\n"
        "                       ^~~",
    ),
    # locked=true asks for a locked mask: with no dropout there is none to lock
    (
        (*BASE, "layers 2", "dropout 0 locked=true"),
        "m.rnn:6:22: error: locked=true needs dropout > 0, got dropout 0.0\n"
        "    dropout 0 locked=true\n"
        "                     ^~~~",
    ),
    (
        ("input tokens 9 embed=4 locked=true", "cell lstm", "hidden 4"),
        "m.rnn:2:35: error: locked=true needs dropout > 0, got dropout=0.0\n"
        "    input tokens 9 embed=4 locked=true\n"
        "                                  ^~~~",
    ),
    (
        (*BASE, "head linear 3 dropout=0.0 locked=true"),
        "m.rnn:5:38: error: locked=true needs dropout > 0, got dropout=0.0\n"
        "    head linear 3 dropout=0.0 locked=true\n"
        "                                     ^~~~",
    ),
    (
        ("input tokens 9 embed=4 word_dropout=1", "cell lstm", "hidden 4"),
        "m.rnn:2:41: error: word_dropout must be < 1.0, got 1\n"
        "    input tokens 9 embed=4 word_dropout=1\n"
        "                                        ^",
    ),
    (
        ("input features 3 word_dropout=0.1", "cell lstm", "hidden 4"),
        "m.rnn:2:22: error: unknown option 'word_dropout' for 'input features'\n"
        "    input features 3 word_dropout=0.1\n"
        "                     ^~~~~~~~~~~~",
    ),
    (
        ("input features 3 dropout=0.1 locked=true", "cell lstm", "hidden 4"),
        "m.rnn:2:22: error: unknown option 'dropout' for 'input features'\n"
        "    input features 3 dropout=0.1 locked=true\n"
        "                     ^~~~~~~\n"
        "m.rnn:2:34: error: unknown option 'locked' for 'input features'\n"
        "    input features 3 dropout=0.1 locked=true\n"
        "                                 ^~~~~~",
    ),
    (
        ("input tokens 9 embed=4 word_dropuot=0.1", "cell lstm", "hidden 4"),
        "m.rnn:2:28: error: unknown option 'word_dropuot' for 'input tokens'; "
        "did you mean 'word_dropout'?\n"
        "    input tokens 9 embed=4 word_dropuot=0.1\n"
        "                           ^~~~~~~~~~~~",
    ),
    # recurrent dropout and zoneout change the step: torch's kernel cannot run them
    (
        (*BASE, "recurrent_dropout 0.2", "impl torch"),
        "m.rnn:6:10: error: impl torch has no LSTM with recurrent dropout; "
        "use impl auto or custom\n"
        "    impl torch\n"
        "         ^~~~~",
    ),
    (
        ("input features 3", "cell gru", "hidden 4", "zoneout 0.1", "impl torch"),
        "m.rnn:6:10: error: impl torch has no GRU with zoneout; "
        "use impl auto or custom\n"
        "    impl torch\n"
        "         ^~~~~",
    ),
    (
        (*BASE, "zoneout 0 cell=0.1", "impl torch"),
        "m.rnn:6:10: error: impl torch has no LSTM with zoneout; "
        "use impl auto or custom\n"
        "    impl torch\n"
        "         ^~~~~",
    ),
    (
        (
            "input features 3",
            "cell rnn",
            "hidden 4",
            "recurrent_dropout 0.1",
            "zoneout 0.1",
            "impl torch",
        ),
        "m.rnn:7:10: error: impl torch has no RNN with recurrent dropout and "
        "zoneout; use impl auto or custom\n"
        "    impl torch\n"
        "         ^~~~~",
    ),
    (
        (
            "input features 3",
            "cell lstm",
            "peephole true",
            "norm layer",
            "hidden 4",
            "zoneout 0.1",
            "impl torch",
        ),
        "m.rnn:8:10: error: impl torch has no layer-norm peephole LSTM with "
        "zoneout; use impl auto or custom\n"
        "    impl torch\n"
        "         ^~~~~",
    ),
    (
        (*BASE, "recurrent_dropuot 0.1"),
        "m.rnn:5:5: error: unknown statement 'recurrent_dropuot'; "
        "did you mean 'recurrent_dropout'?\n"
        "    recurrent_dropuot 0.1\n"
        "    ^~~~~~~~~~~~~~~~~",
    ),
]


@pytest.mark.parametrize(
    ("lines", "expected"), RULES, ids=[e.split("error: ")[1][:40] for _, e in RULES]
)
def test_rule_caret_text_exact(lines, expected):
    assert error_text(spec_with(*lines)) == expected


def test_weight_drop_and_locked_dropout_run_on_impl_torch():
    (spec,) = rnnspec.parse(
        spec_with(
            "input tokens 9 embed=4 dropout=0.1 locked=true word_dropout=0.1",
            *BASE[1:],
            "layers 2",
            "dropout 0.2 locked=true",
            "weight_drop 0.5",
            "impl torch",
            "head linear 2 dropout=0.1 locked=true",
        )
    )
    assert spec.kernel == "torch"


def test_zoneout_rate_zero_is_no_zoneout_even_on_impl_torch():
    (spec,) = rnnspec.parse(spec_with(*BASE, "zoneout 0.0 cell=0", "impl torch"))
    assert spec.zoneout_cell == 0.0 and spec.kernel == "torch"


def test_locked_on_a_pooled_head_is_accepted():
    # (B, F) has one step: the locked mask is the plain one; nothing does not fit
    spec = one(cell="gru", head={"kind": "classes", "size": 2, "dropout": 0.3})
    locked = one(
        cell="gru", head={"kind": "classes", "size": 2, "dropout": 0.3, "locked": True}
    )
    assert locked.head.locked and not spec.head.locked


@pytest.mark.parametrize(
    ("line", "column"),
    [
        ("dropout 0.2 locked=true", 5),
        ("recurrent_dropout 0.1", 5),
        ("weight_drop 0.5", 5),
        ("zoneout 0.1 cell=0.2", 5),
        ("zoneout 0.0", 5),  # written at all, even at its default
    ],
)
def test_spinn_takes_none_of_the_statements(line, column):
    keyword = line.split()[0]
    source = spec_with("input tokens 5 embed=4", "encoder spinn", "hidden 4", line)
    assert error_text(source) == (
        f"m.rnn:5:{column}: error: '{keyword}' does not apply to encoder spinn\n"
        f"    {line}\n"
        f"    {'^' + '~' * (len(keyword) - 1)}"
    )


def test_spinn_takes_none_of_the_input_and_head_options():
    source = spec_with(
        "input tokens 5 embed=4 word_dropout=0.1 dropout=0.1 locked=true",
        "encoder spinn",
        "hidden 4",
        "head classes 3 dropout=0.2 locked=true",
    )
    assert error_text(source) == (
        "m.rnn:2:41: error: 'word_dropout' does not apply to encoder spinn\n"
        "    input tokens 5 embed=4 word_dropout=0.1 dropout=0.1 locked=true\n"
        "                                        ^~~\n"
        "m.rnn:2:64: error: 'locked' does not apply to encoder spinn\n"
        "    input tokens 5 embed=4 word_dropout=0.1 dropout=0.1 locked=true\n"
        "                                                               ^~~~\n"
        "m.rnn:5:39: error: 'locked' does not apply to encoder spinn\n"
        "    head classes 3 dropout=0.2 locked=true\n"
        "                                      ^~~~"
    )
    for name in (*REGULARIZERS, "dropout_locked", "zoneout_cell"):
        assert name in RECURRENT_ONLY


def test_spinn_accepts_the_defaults_in_the_dict_form():
    spinn = dict(encoder="spinn", input={**TOKENS, "locked": False}, hidden=4)
    spec = one(**spinn, recurrent_dropout=0.0, zoneout_cell=None, dropout_locked=False)
    assert spec == one(encoder="spinn", input=TOKENS, hidden=4)


def test_every_problem_is_reported_at_once():
    source = spec_with(
        "input tokens 9 embed=4 locked=true word_dropout=2",
        "cell gru",
        "hidden 4",
        "dropout 0 locked=true",
        "zoneout 0.1 cell=0.2",
        "recurrent_dropout 0.3",
        "impl torch",
    )
    with pytest.raises(SpecError) as info:
        rnnspec.parse(source)
    assert [(d.line, d.message) for d in info.value.errors] == [
        (2, "word_dropout must be < 1.0, got 2"),
        (5, "locked=true needs dropout > 0, got dropout 0.0"),
        (6, "zoneout cell=Q needs cell lstm (Q is the rate of its cell state), "
         "got cell gru"),
        (8, "impl torch has no GRU with recurrent dropout and zoneout; "
         "use impl auto or custom"),
    ]  # fmt: skip


def test_defaults_are_accepted_anywhere_in_text():
    (spec,) = rnnspec.parse(FIXTURE.read_text(encoding="utf-8"))[-1:]
    assert spec == one(
        name="Defaults",
        cell="gru",
        input={"kind": "tokens", "vocab": 10, "embed": 4},
        impl="torch",
        head={"kind": "linear", "size": 3},
    )


# -- the dict form: the same rules, at the same fields -------------------------------

DICT_RULES = [
    (dict(cell="lstm", recurrent_dropout=1.0), [("recurrent_dropout",)]),
    (dict(cell="lstm", weight_drop=-0.5), [("weight_drop",)]),
    (dict(cell="lstm", zoneout=float("nan")), [("zoneout",)]),
    (dict(cell="lstm", zoneout_cell=1), [("zoneout_cell",)]),
    (dict(cell="lstm", weight_drop="0.5"), [("weight_drop",)]),
    (dict(cell="lstm", dropout_locked=1), [("dropout_locked",)]),
    (dict(cell="gru", zoneout_cell=0.1), [("zoneout_cell",)]),
    (dict(cell="lstm", dropout_locked=True), [("dropout_locked",)]),
    (dict(cell="lstm", zoneout=0.1, impl="torch"), [("impl",)]),
    (dict(cell="gru", recurrent_dropout=0.1, impl="torch"), [("impl",)]),
    (dict(cell="lstm", input={**TOKENS, "locked": True}), [("input", "locked")]),
    (
        dict(cell="lstm", input={**TOKENS, "word_dropout": 1.5}),
        [("input", "tokens", "word_dropout")],
    ),
    (
        dict(cell="lstm", head={"kind": "linear", "size": 2, "locked": True}),
        [("head", "locked")],
    ),
    (
        dict(encoder="spinn", input=TOKENS, weight_drop=0.5),
        [("weight_drop",)],
    ),
    (
        dict(encoder="spinn", input={**TOKENS, "word_dropout": 0.1}),
        [("input", "word_dropout")],
    ),
]


@pytest.mark.parametrize(("fields", "locations"), DICT_RULES)
def test_dict_form_reports_the_same_rules(fields, locations):
    with pytest.raises(ValidationError) as info:
        one(**fields)
    assert [e["loc"] for e in info.value.errors()] == locations


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            dict(cell="gru", zoneout=0.1, zoneout_cell=0.2),
            "model.zoneout_cell: zoneout cell=Q needs cell lstm (Q is the rate of "
            "its cell state), got cell gru",
        ),
        (
            dict(cell="lstm", zoneout_cell=1.5),
            "model.zoneout_cell: zoneout_cell must be < 1.0, got 1.5",
        ),
        (
            dict(cell="lstm", layers=2, dropout_locked=True),
            "model.dropout_locked: locked=true needs dropout > 0, got dropout 0.0",
        ),
        (
            dict(cell="lstm", recurrent_dropout=0.5, impl="torch"),
            "model.impl: impl torch has no LSTM with recurrent dropout; "
            "use impl auto or custom",
        ),
        (
            dict(cell="lstm", head={"kind": "logits", "dropout": 0, "locked": True}),
            "model.head.locked: locked=true needs dropout > 0, got dropout=0.0",
        ),
        (
            dict(cell="lstm", weight_dorp=0.5),
            "model.weight_dorp: unknown key 'weight_dorp'; did you mean 'weight_drop'?",
        ),
    ],
)
def test_config_messages_name_the_key(fields, message):
    data = {"name": "M", "input": TOKENS, "hidden": 4}
    with pytest.raises(SpecError) as info:
        rnnspec.spec_from_config({**data, **fields}, path="model")
    assert [d.message for d in info.value.errors] == [message]


# -- round trips and canonical text ----------------------------------------------------

COMBINATIONS = [
    dict(cell="lstm", recurrent_dropout=0.25),
    dict(cell="gru", weight_drop=0.5, layers=2, dropout=0.1, dropout_locked=True),
    dict(cell="rnn", zoneout=0.1),
    dict(cell="lstm", zoneout=0.1, zoneout_cell=0.05),
    dict(cell="lstm", zoneout=0.0, zoneout_cell=0.3),
    dict(cell="lstm", zoneout=0.2, zoneout_cell=0.2),
    dict(
        cell="lstm",
        input={**TOKENS, "dropout": 0.4, "locked": True, "word_dropout": 0.1},
        head={"kind": "logits", "tie": True, "dropout": 0.4, "locked": True},
        layers=3,
        dropout=0.25,
        dropout_locked=True,
        weight_drop=0.5,
    ),
    dict(
        cell="lstm",
        peephole=True,
        norm="layer",
        proj=2,
        residual=True,
        initial_state="learned",
        layers=2,
        directions=2,
        packing=True,
        recurrent_dropout=0.2,
        weight_drop=0.3,
        zoneout=0.1,
        zoneout_cell=0.15,
        dropout=0.1,
        dropout_locked=True,
        head={"kind": "classes", "size": 3, "dropout": 0.2, "locked": True},
    ),
]


@pytest.mark.parametrize("fields", COMBINATIONS)
def test_round_trips(fields):
    spec = one(**fields)
    assert ModelSpec.model_validate(spec.model_dump()) == spec
    assert ModelSpec.model_validate_json(spec.model_dump_json()) == spec
    assert rnnspec.parse(spec.to_source()) == [spec]
    assert format_source(spec.to_source()) == spec.to_source()
    assert rnnspec.spec_from_config(spec.model_dump()) == spec


def test_canonical_order_puts_them_after_dropout():
    messy = spec_with(
        "zoneout 0.1 cell=0.2",
        "head linear 2 locked=true dropout=0.3",
        "weight_drop 0.5",
        "recurrent_dropout 0.2",
        "packing true",
        "dropout  0.10 locked=true",
        "hidden 4",
        "layers 2",
        "input tokens 9 word_dropout=0.1 locked=true embed=4 dropout=0.2",
        "cell lstm",
    )
    assert format_source(messy) == (
        "model M {\n"
        "    input      tokens 9 embed=4 dropout=0.2 locked=true word_dropout=0.1\n"
        "    cell       lstm\n"
        "    hidden     4\n"
        "    layers     2\n"
        "    dropout    0.1 locked=true\n"
        "    recurrent_dropout 0.2\n"
        "    weight_drop 0.5\n"
        "    zoneout    0.1 cell=0.2\n"
        "    packing    true\n"
        "    head       linear 2 dropout=0.3 locked=true\n"
        "}\n"
    )


def test_fmt_keeps_options_written_at_their_default():
    text = spec_with(
        "input features 3", "cell lstm", "hidden 4", "dropout 0.1 locked=false"
    )
    assert "    dropout    0.1 locked=false\n" in format_source(text)
    assert "locked" not in rnnspec.parse(text)[0].to_source()


def test_identity_fixture_uses_every_regularizer():
    text = FIXTURE.read_text(encoding="utf-8")
    assert format_source(text) == text
    awd, variational, cell_only, _ = rnnspec.parse(text)
    assert awd.input.word_dropout == 0.1 and awd.input.locked and awd.head.locked
    assert awd.dropout_locked and awd.weight_drop == 0.5
    assert variational.recurrent_dropout == 0.25
    assert (variational.zoneout, variational.zoneout_cell) == (0.1, 0.05)
    assert (cell_only.zoneout, cell_only.zoneout_cell) == (0.0, 0.2)


def test_the_awd_example_is_canonical_and_as_documented():
    path = Path(__file__).parents[2] / "examples" / "awd_lstm.rnn"
    text = path.read_text(encoding="utf-8")
    assert format_source(text) == text
    (spec,) = rnnspec.parse(text)
    assert (spec.cell, spec.layers, spec.hidden, spec.input.embed) == (
        "lstm",
        3,
        256,
        256,
    )
    assert spec.head.tie and spec.weight_drop == 0.5 and spec.dropout_locked
    assert (spec.input.locked, spec.input.word_dropout, spec.head.locked) == (
        True,
        0.1,
        True,
    )


# -- they add no parameters ------------------------------------------------------------


@pytest.mark.parametrize("fields", COMBINATIONS)
def test_no_parameters_are_added(fields):
    plain = {
        key: value
        for key, value in fields.items()
        if key not in (*REGULARIZERS, "zoneout_cell", "dropout_locked")
    }
    for node in ("input", "head"):
        if node in plain:
            plain[node] = {
                k: v
                for k, v in plain[node].items()
                if k not in ("locked", "word_dropout")
            }
    assert parameter_counts(one(**fields)) == parameter_counts(one(**plain))


# -- which kernel, which class, which keywords -----------------------------------------


@pytest.mark.parametrize(
    ("fields", "kernel", "changes"),
    [
        (dict(cell="lstm", recurrent_dropout=0.1), "custom", ["recurrent_dropout"]),
        (dict(cell="gru", zoneout=0.1, packing=True), "custom", ["zoneout"]),
        (dict(cell="lstm", zoneout_cell=0.1), "custom", ["zoneout"]),
        (dict(cell="lstm", zoneout_cell=0.0), "torch", []),
        (dict(cell="lstm", weight_drop=0.5), "torch", []),
        (dict(cell="lstm", weight_drop=0.5, packing=True), "auto", []),
        (dict(cell="rnn", dropout=0.1, dropout_locked=True, layers=2), "torch", []),
        (
            dict(cell="lstm", peephole=True, recurrent_dropout=0.1, zoneout=0.1),
            "custom",
            ["peephole", "recurrent_dropout", "zoneout"],
        ),
    ],
)
def test_kernel(fields, kernel, changes):
    spec = one(**fields)
    assert spec.kernel == kernel
    assert spec.changes_step() == changes


TORCH_ARGS = ("input_size", "hidden_size", "num_layers", "bias", "batch_first")
TORCH_ARGS += ("dropout", "bidirectional")

PLANS = [
    # (fields, callee, keywords after torch's own, in order)
    (
        dict(cell="lstm", weight_drop=0.5),
        "CustomLSTM",
        {"impl": "auto", "weight_drop": 0.5},
    ),
    (
        dict(cell="gru", layers=2, dropout=0.3, dropout_locked=True),
        "CustomGRU",
        {"impl": "auto", "locked_dropout": True},
    ),
    (
        dict(cell="rnn", weight_drop=0.2, impl="torch"),
        "CustomRNN",
        {"nonlinearity": "tanh", "impl": "torch", "weight_drop": 0.2},
    ),
    (
        dict(cell="lstm", recurrent_dropout=0.25),
        "CustomLSTM",
        {"impl": "auto", "recurrent_dropout": 0.25},
    ),
    (dict(cell="gru", zoneout=0.1), "CustomGRU", {"impl": "auto", "zoneout": 0.1}),
    (
        dict(cell="lstm", zoneout=0.1, zoneout_cell=0.05),
        "CustomLSTM",
        {"impl": "auto", "zoneout": 0.1, "zoneout_cell": 0.05},
    ),
    # cell= equal to the rate is the default: no keyword
    (
        dict(cell="lstm", zoneout=0.1, zoneout_cell=0.1),
        "CustomLSTM",
        {"impl": "auto", "zoneout": 0.1},
    ),
    (
        dict(cell="lstm", zoneout_cell=0.3),
        "CustomLSTM",
        {"impl": "auto", "zoneout_cell": 0.3},
    ),
    # rate 0 everywhere: off, torch's own module
    (dict(cell="lstm", zoneout_cell=0.0), "nn.LSTM", {}),
    (
        dict(cell="lstm", peephole=True, zoneout=0.1, weight_drop=0.5),
        "PeepholeLSTM",
        {"impl": "auto", "weight_drop": 0.5, "zoneout": 0.1},
    ),
    (
        dict(
            cell="gru",
            norm="layer",
            residual=True,
            layers=2,
            dropout=0.1,
            dropout_locked=True,
            recurrent_dropout=0.2,
            weight_drop=0.3,
            zoneout=0.1,
            impl="custom",
        ),
        "LayerNormGRU",
        {
            "impl": "custom",
            "residual": True,
            "recurrent_dropout": 0.2,
            "weight_drop": 0.3,
            "zoneout": 0.1,
            "locked_dropout": True,
        },
    ),
]


@pytest.mark.parametrize(("fields", "callee", "extra"), PLANS)
def test_plan_maps_options_to_class_and_keywords(fields, callee, extra):
    spec = one(**fields)
    plan = rnn_call(spec)
    assert plan.callee == callee == stack_class(spec)
    names = [name for name, _ in plan.kwargs]
    assert tuple(names[: len(TORCH_ARGS)]) == TORCH_ARGS
    assert dict(plan.kwargs[len(TORCH_ARGS) :]) == extra
    assert names[len(TORCH_ARGS) :] == list(extra)  # keyword order, too


def test_around_step_options_name_weight_drop_and_locked_dropout():
    spec = one(cell="lstm", layers=2, dropout=0.1, dropout_locked=True, weight_drop=0.5)
    assert around_step_options(spec) == ["weight_drop", "dropout locked=true"]
    assert around_step_options(one(cell="lstm", recurrent_dropout=0.1)) == []


def test_specs_without_them_pass_no_new_keyword():
    new = {"recurrent_dropout", "weight_drop", "zoneout", "zoneout_cell"}
    new |= {"locked_dropout", "word_dropout"}
    for cell in ("rnn", "lstm", "gru"):
        for extra in ({}, {"packing": True}, {"impl": "custom"}, {"layers": 2}):
            spec = one(cell=cell, input=TOKENS, head={"kind": "logits"}, **extra)
            plan = model_call(spec)
            assert set(plan.callees()) & {"DropoutEmbedding", "DropoutLinear"} == set()
            assert not {name for name, _ in rnn_call(spec).kwargs} & new


def _model_kwargs(spec: ModelSpec) -> dict:
    return dict(model_call(spec).kwargs)


def test_plan_of_the_model_level_dropouts():
    spec = one(
        cell="lstm",
        input={**TOKENS, "dropout": 0.4, "locked": True, "word_dropout": 0.1},
        head={"kind": "linear", "size": 2, "dropout": 0.3, "locked": True},
    )
    kwargs = _model_kwargs(spec)
    embedding, head = kwargs["embedding"], kwargs["head"]
    assert embedding.callee == "DropoutEmbedding"
    assert dict(embedding.kwargs) == {
        "num_embeddings": 9,
        "embedding_dim": 4,
        "padding_idx": None,
        "word_dropout": 0.1,
        "locked_dropout": 0.4,
    }
    assert head.callee == "DropoutLinear"
    assert dict(head.kwargs) == {
        "in_features": 4,
        "out_features": 2,
        "locked_dropout": 0.3,
    }
    # the locked dropouts live in the embedding and the head: none on the model
    assert (kwargs["input_dropout"], kwargs["head_dropout"]) == (0.0, 0.0)


def test_plan_of_word_dropout_with_plain_input_dropout():
    spec = one(cell="gru", input={**TOKENS, "dropout": 0.2, "word_dropout": 0.3})
    kwargs = _model_kwargs(spec)
    assert kwargs["embedding"].callee == "DropoutEmbedding"
    assert "locked_dropout" not in dict(kwargs["embedding"].kwargs)
    assert kwargs["input_dropout"] == 0.2  # unlocked: the model's own, as before


def test_plan_of_unlocked_dropouts_is_unchanged():
    spec = one(
        cell="gru",
        input={**TOKENS, "dropout": 0.2},
        head={"kind": "classes", "size": 2, "dropout": 0.3},
    )
    kwargs = _model_kwargs(spec)
    assert (kwargs["embedding"].callee, kwargs["head"].callee) == (
        "nn.Embedding",
        "nn.Linear",
    )
    assert (kwargs["input_dropout"], kwargs["head_dropout"]) == (0.2, 0.3)


# -- the JSON Schema -------------------------------------------------------------------


def test_schema_describes_and_bounds_the_options():
    schema = json_schema()
    properties = schema["properties"]
    for name in (*REGULARIZERS, "dropout_locked", "zoneout_cell"):
        assert properties[name]["description"]
    assert "word_dropout" in properties["input"]["description"]
    assert "locked" in properties["head"]["description"]
    validator = jsonschema.Draft202012Validator(schema)
    for fields in COMBINATIONS:
        validator.validate(one(**fields).model_dump(mode="json"))
    base = one(cell="lstm", input=TOKENS).model_dump(mode="json")
    for bad in (
        {"recurrent_dropout": 1.0},
        {"weight_drop": -0.1},
        {"zoneout": "0.1"},
        {"zoneout_cell": 1},
        {"dropout_locked": "yes"},
        {"input": {**base["input"], "word_dropout": 1.0}},
        {"input": {**base["input"], "locked": 1}},
        {"head": {"kind": "logits", "locked": "true"}},
    ):
        assert list(validator.iter_errors({**base, **bad})), bad
