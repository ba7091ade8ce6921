"""The cell options of issue 13 in the language: `forget_bias`, `norm`, `proj`,
`residual`, `initial_state` — rules with positioned diagnostics, the dict form,
round trips, canonical text, parameter counts, summaries, the plan and the schema.

Torch-free: the counts against torch's own modules are in tests/compile/.
"""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
from pydantic import ValidationError

import rnnspec
from rnnspec import ModelSpec, SpecError
from rnnspec.compile.plan import model_call, rnn_call, stack_class
from rnnspec.lang.config import json_schema
from rnnspec.lang.formatter import format_source
from rnnspec.lang.ir import CELL_OPTIONS, RECURRENT_ONLY, parameter_counts
from tests.specs import error_text, one, spec_with

FIXTURE = Path(__file__).parents[1] / "fixtures" / "identity" / "cell_options.rnn"


# -- the statements parse into the fields --------------------------------------------


def test_all_five_parse_into_their_fields():
    (spec,) = rnnspec.parse(
        spec_with(
            "input features 3",
            "cell lstm",
            "forget_bias 1",
            "norm layer",
            "proj 2",
            "residual true",
            "initial_state learned",
            "hidden 4",
            "layers 2",
        )
    )
    assert (spec.forget_bias, spec.norm, spec.proj) == (1.0, "layer", 2)
    assert (spec.residual, spec.initial_state) == (True, "learned")
    assert isinstance(spec.forget_bias, float)


def test_they_default_to_off():
    spec = one(cell="lstm")
    assert spec.forget_bias is None and spec.proj is None
    assert (spec.norm, spec.residual, spec.initial_state) == ("none", False, "zeros")
    assert "proj" not in spec.to_source() and "norm" not in spec.to_source()


# -- every rule, at the statement that asks for too much -----------------------------

RULES = [
    (
        ("input features 3", "cell gru", "proj 2", "hidden 4"),
        "m.rnn:4:10: error: 'proj' needs cell lstm, got cell gru\n"
        "    proj 2\n"
        "         ^",
    ),
    (
        ("input features 3", "cell rnn", "proj 2", "hidden 4"),
        "m.rnn:4:10: error: 'proj' needs cell lstm, got cell rnn\n"
        "    proj 2\n"
        "         ^",
    ),
    (
        ("input features 3", "cell lstm", "proj 4", "hidden 4"),
        "m.rnn:4:10: error: proj must be < hidden (4), got 4\n    proj 4\n         ^",
    ),
    (
        ("input features 3", "cell lstm", "proj 0", "hidden 4"),
        "m.rnn:4:10: error: proj must be ≥ 1, got 0\n    proj 0\n         ^",
    ),
    (
        ("input features 3", "cell lstm", "proj 2.0", "hidden 4"),
        "m.rnn:4:10: error: proj must be an integer, got 2.0\n"
        "    proj 2.0\n"
        "         ^~~",
    ),
    (
        ("input features 3", "cell lstm", "residual true", "hidden 4"),
        "m.rnn:4:14: error: 'residual true' needs layers ≥ 2, got layers 1\n"
        "    residual true\n"
        "             ^~~~",
    ),
    (
        ("input features 3", "cell gru", "residual 1", "hidden 4", "layers 2"),
        "m.rnn:4:14: error: residual must be true or false, got 1\n"
        "    residual 1\n"
        "             ^",
    ),
    (
        ("input features 3", "cell gru", "forget_bias 1.0", "hidden 4"),
        "m.rnn:4:17: error: 'forget_bias' needs cell lstm, got cell gru\n"
        "    forget_bias 1.0\n"
        "                ^~~",
    ),
    (
        ("input features 3", "cell lstm", "forget_bias 1.0", "bias false", "hidden 4"),
        "m.rnn:4:17: error: 'forget_bias' needs bias true, got bias false\n"
        "    forget_bias 1.0\n"
        "                ^~~",
    ),
    (
        ("input features 3", "cell lstm", "forget_bias 1e999", "hidden 4"),
        "m.rnn:4:17: error: forget_bias must be a finite number, got inf\n"
        "    forget_bias 1e999\n"
        "                ^~~~~",
    ),
    (
        ("input features 3", "cell lstm", "forget_bias true", "hidden 4"),
        "m.rnn:4:17: error: forget_bias must be a number, got true\n"
        "    forget_bias true\n"
        "                ^~~~",
    ),
    (
        ("input features 3", "cell rnn", "norm layer", "hidden 4"),
        "m.rnn:4:10: error: 'norm layer' needs cell lstm or gru, got cell rnn\n"
        "    norm layer\n"
        "         ^~~~~",
    ),
    (
        ("input features 3", "cell lstm", "norm batch", "hidden 4"),
        "m.rnn:4:10: error: unknown norm 'batch'; expected 'none' or 'layer'\n"
        "    norm batch\n"
        "         ^~~~~",
    ),
    (
        ("input features 3", "cell lstm", "initial_state learnt", "hidden 4"),
        "m.rnn:4:19: error: unknown initial_state 'learnt'; "
        "did you mean 'learned'?\n"
        "    initial_state learnt\n"
        "                  ^~~~~~",
    ),
    (
        ("input features 3", "cell lstm", "norm layer", "hidden 4", "impl torch"),
        "m.rnn:6:10: error: impl torch has no layer-norm LSTM; "
        "use impl auto or custom\n"
        "    impl torch\n"
        "         ^~~~~",
    ),
    (
        ("input features 3", "cell gru", "norm layer", "hidden 4", "impl torch"),
        "m.rnn:6:10: error: impl torch has no layer-norm GRU; "
        "use impl auto or custom\n"
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
            "impl torch",
        ),
        "m.rnn:7:10: error: impl torch has no layer-norm peephole LSTM; "
        "use impl auto or custom\n"
        "    impl torch\n"
        "         ^~~~~",
    ),
    (
        ("input features 3", "cell lstm", "hidden 4", "nrom layer"),
        "m.rnn:5:5: error: unknown statement 'nrom'; did you mean 'norm'?\n"
        "    nrom layer\n"
        "    ^~~~",
    ),
    (
        # tie compares the embedding with the stack's output width: P with proj
        (
            "input tokens 9 embed=8",
            "cell lstm",
            "proj 4",
            "hidden 8",
            "head logits tie=true",
        ),
        "m.rnn:6:21: error: tie=true needs embed == the head's input size; "
        "embed is 8, the head's input size is 4\n"
        "    head logits tie=true\n"
        "                    ^~~~",
    ),
]


@pytest.mark.parametrize(
    ("lines", "expected"), RULES, ids=[e.split("error: ")[1][:40] for _, e in RULES]
)
def test_rule_caret_text_exact(lines, expected):
    assert error_text(spec_with(*lines)) == expected


@pytest.mark.parametrize("option", CELL_OPTIONS)
def test_spinn_takes_none_of_them(option):
    value = {
        "forget_bias": "1.0",
        "norm": "layer",
        "proj": "2",
        "residual": "false",  # written at all, even at its default
        "initial_state": "learned",
    }[option]
    source = spec_with("input tokens 5 embed=4", "encoder spinn", f"{option} {value}")
    source = source.replace("}", "    hidden 4\n}")
    column = 5
    underline = "^" + "~" * (len(option) - 1)
    assert error_text(source) == (
        f"m.rnn:4:{column}: error: '{option}' does not apply to encoder spinn\n"
        f"    {option} {value}\n"
        f"    {underline}"
    )
    assert option in RECURRENT_ONLY


def test_every_problem_is_reported_at_once():
    source = spec_with(
        "input features 3",
        "cell gru",
        "forget_bias 1.0",
        "proj 9",
        "residual true",
        "hidden 8",
    )
    with pytest.raises(SpecError) as info:
        rnnspec.parse(source)
    assert [(d.line, d.message) for d in info.value.errors] == [
        (4, "'forget_bias' needs cell lstm, got cell gru"),
        (5, "'proj' needs cell lstm, got cell gru"),
        (6, "'residual true' needs layers ≥ 2, got layers 1"),
    ]


def test_invalid_layers_do_not_add_a_residual_complaint():
    source = spec_with(
        "input features 3", "cell lstm", "residual true", "hidden 4", "layers 0"
    )
    with pytest.raises(SpecError) as info:
        rnnspec.parse(source)
    assert [d.message for d in info.value.errors] == ["layers must be ≥ 1, got 0"]


def test_defaults_are_accepted_anywhere_in_text():
    (spec,) = rnnspec.parse(
        spec_with(
            "input features 3",
            "cell rnn",
            "norm none",
            "residual false",
            "initial_state zeros",
            "hidden 4",
            "impl torch",
        )
    )
    assert spec == one(cell="rnn", impl="torch")


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_defaults_are_accepted_anywhere_in_the_dict_form(cell):
    spec = one(
        cell=cell,
        forget_bias=None,
        norm="none",
        proj=None,
        residual=False,
        initial_state="zeros",
        bias=False,
        impl="torch",
    )
    assert spec == one(cell=cell, bias=False, impl="torch")


# -- the dict form: the same rules, at the same fields -------------------------------

DICT_RULES = [
    (dict(cell="gru", proj=2), [("proj",)]),
    (dict(cell="lstm", proj=4), [("proj",)]),
    (dict(cell="lstm", residual=True), [("residual",)]),
    (dict(cell="gru", forget_bias=1.0), [("forget_bias",)]),
    (dict(cell="lstm", forget_bias=1.0, bias=False), [("forget_bias",)]),
    (dict(cell="rnn", norm="layer"), [("norm",)]),
    (dict(cell="lstm", norm="layer", impl="torch"), [("impl",)]),
    (dict(cell="lstm", forget_bias=float("nan")), [("forget_bias",)]),
    (dict(cell="lstm", forget_bias=float("-inf")), [("forget_bias",)]),
    (dict(cell="lstm", proj=True), [("proj",)]),
    (dict(cell="lstm", forget_bias="1.0"), [("forget_bias",)]),
    (dict(cell="lstm", norm="Layer"), [("norm",)]),
    (dict(cell="lstm", initial_state="random"), [("initial_state",)]),
    (dict(cell="lstm", residual=1, layers=2), [("residual",)]),
    (
        dict(encoder="spinn", input={"kind": "tokens", "vocab": 5, "embed": 4}, proj=2),
        [("proj",)],
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
        (dict(cell="gru", proj=2), "model.proj: 'proj' needs cell lstm, got cell gru"),
        (dict(cell="lstm", proj=4), "model.proj: proj must be < hidden (4), got 4"),
        (
            dict(cell="lstm", residual=True),
            "model.residual: 'residual true' needs layers ≥ 2, got layers 1",
        ),
        (
            dict(cell="lstm", forget_bias=float("inf")),
            "model.forget_bias: forget_bias must be a finite number, got inf",
        ),
        (
            dict(cell="lstm", initial_state="learnt"),
            "model.initial_state: unknown initial_state 'learnt'; "
            "did you mean 'learned'?",
        ),
        (
            dict(cell="lstm", norm="layer", impl="torch"),
            "model.impl: impl torch has no layer-norm LSTM; use impl auto or custom",
        ),
    ],
)
def test_config_messages_name_the_key(fields, message):
    data = {"name": "M", "input": {"kind": "features", "size": 3}, "hidden": 4}
    with pytest.raises(SpecError) as info:
        rnnspec.spec_from_config({**data, **fields}, path="model")
    assert [d.message for d in info.value.errors] == [message]


# -- round trips and canonical text ----------------------------------------------------

COMBINATIONS = [
    dict(cell="lstm", proj=2),
    dict(cell="lstm", forget_bias=1.0),
    dict(cell="lstm", forget_bias=-0.5, proj=1, peephole=True),
    dict(cell="lstm", norm="layer", peephole=True, proj=3, impl="custom"),
    dict(cell="gru", norm="layer", residual=True, layers=2),
    dict(cell="rnn", residual=True, layers=3, initial_state="learned"),
    dict(
        cell="lstm",
        peephole=True,
        forget_bias=1.0,
        norm="layer",
        proj=2,
        residual=True,
        initial_state="learned",
        layers=3,
        directions=2,
        packing=True,
    ),
]


@pytest.mark.parametrize("fields", COMBINATIONS)
def test_round_trips(fields):
    spec = one(**fields)
    assert ModelSpec.model_validate(spec.model_dump()) == spec
    assert ModelSpec.model_validate_json(spec.model_dump_json()) == spec
    assert rnnspec.parse(spec.to_source()) == [spec]
    assert format_source(spec.to_source()) == spec.to_source()


def test_canonical_order_puts_them_after_peephole():
    messy = spec_with(
        "initial_state learned",
        "hidden 4",
        "residual true",
        "proj 2",
        "layers 2",
        "norm layer",
        "forget_bias 3",
        "peephole true",
        "cell lstm",
        "input features 3",
    )
    assert format_source(messy) == (
        "model M {\n"
        "    input      features 3\n"
        "    cell       lstm\n"
        "    peephole   true\n"
        "    forget_bias 3.0\n"
        "    norm       layer\n"
        "    proj       2\n"
        "    residual   true\n"
        "    initial_state learned\n"
        "    hidden     4\n"
        "    layers     2\n"
        "}\n"
    )


def test_identity_fixture_uses_all_five():
    text = FIXTURE.read_text(encoding="utf-8")
    assert format_source(text) == text
    specs = rnnspec.parse(text)
    everything = specs[0]
    assert everything.forget_bias == 1.0 and everything.norm == "layer"
    assert everything.proj == 64 and everything.residual
    assert everything.initial_state == "learned"


# -- sizes: output width and parameter counts, by hand ---------------------------------


def test_output_width_is_directions_times_proj():
    spec = one(
        cell="lstm", hidden=8, proj=3, directions=2, head={"kind": "linear", "size": 5}
    )
    assert spec.output_hidden == 3 and spec.directions_hidden == 6
    assert spec.head_input_size == 6
    head = dict(model_call(spec).kwargs)["head"]
    assert dict(head.kwargs)["in_features"] == 6
    attended = one(cell="lstm", hidden=8, proj=3, attention={"kind": "general"})
    attention = dict(model_call(attended).kwargs)["attention"]
    assert dict(attention.kwargs)["size"] == 3


def test_tie_with_proj_needs_embed_equal_to_proj():
    data = {
        "name": "M",
        "input": {"kind": "tokens", "vocab": 10, "embed": 2},
        "cell": "lstm",
        "hidden": 4,
        "proj": 2,
        "head": {"kind": "logits", "tie": True},
    }
    spec = ModelSpec.model_validate(data)
    assert parameter_counts(spec)["head"] == 10  # only the bias: W is the embedding's


HAND_COUNTS = [
    # proj: W_hh is 4H × P, W_hr is P × H, the next layer reads D·P.
    # layer 0: 16·3 + 16·2 + 32 + 2·4 = 120; layer 1: 16·4 + 16·2 + 32 + 8 = 136; × 2
    (dict(cell="lstm", proj=2, layers=2, directions=2), 2 * 120 + 2 * 136),
    # peephole + proj: + 3H
    (dict(cell="lstm", proj=2, peephole=True), 120 + 12),
    # norm layer, lstm: W 48 + 64, biases 32, LN gains 16 + 16, LN(c) γ and β 4 + 4
    (dict(cell="lstm", norm="layer"), 48 + 64 + 32 + 16 + 16 + 4 + 4),
    # norm layer, gru without biases: W 36 + 48, LN gains 12 + 12
    (dict(cell="gru", norm="layer", bias=False), 36 + 48 + 12 + 12),
    # learned state: h0 (L·D, P) and c0 (L·D, H) once per stack
    (
        dict(cell="lstm", proj=2, layers=2, directions=2, initial_state="learned"),
        2 * 120 + 2 * 136 + 4 * 2 + 4 * 4,
    ),
    (dict(cell="gru", initial_state="learned"), 36 + 48 + 24 + 4),
    (
        dict(cell="rnn", initial_state="learned", layers=2),
        (12 + 16 + 8) + (16 + 16 + 8) + 8,
    ),
    # forget_bias and residual add no parameters
    (dict(cell="lstm", forget_bias=1.0), 48 + 64 + 32),
    (dict(cell="lstm", residual=True, layers=2), (48 + 64 + 32) + (64 + 64 + 32)),
    # all at once: layer 0 per direction 48 + 32 + 32 + 12 + 8 + (16 + 16 + 8) = 172,
    # layer 1 reads 2·2: 64 + 32 + 32 + 12 + 8 + 40 = 188; state 4·2 + 4·4
    (
        dict(
            cell="lstm",
            peephole=True,
            forget_bias=1.0,
            norm="layer",
            proj=2,
            residual=True,
            initial_state="learned",
            layers=2,
            directions=2,
        ),
        2 * 172 + 2 * 188 + 8 + 16,
    ),
]


@pytest.mark.parametrize(("fields", "expected"), HAND_COUNTS)
def test_parameter_counts_by_hand(fields, expected):
    assert parameter_counts(one(**fields))["rnn"] == expected


def test_size_limit_counts_the_narrower_recurrent_weights():
    wide = {
        "cell": "lstm",
        "hidden": 2**14,
        "input": {"kind": "features", "size": 2**14},
    }
    with pytest.raises(ValidationError, match="more than the limit"):
        one(**wide)  # 4H·(N + H) = 2³¹, plus biases
    assert parameter_counts(one(**wide, proj=1))["rnn"] < 2**31


# -- what the spec says it is ----------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "summary"),
    [
        (dict(cell="lstm", proj=2), "LSTM with 2-unit projections over 3 features."),
        (
            dict(cell="gru", norm="layer", residual=True, layers=2),
            "2-layer residual layer-norm GRU over 3 features.",
        ),
        (
            dict(
                cell="lstm",
                peephole=True,
                forget_bias=1.0,
                norm="layer",
                proj=2,
                initial_state="learned",
                directions=2,
                attention={"kind": "dot"},
            ),
            "Bidirectional layer-norm peephole LSTM with 2-unit projections, "
            "forget-gate bias 1.0, a learned initial state and dot attention "
            "over 3 features.",
        ),
        (
            dict(cell="lstm", attention={"kind": "dot"}),
            "LSTM with dot attention over 3 features.",
        ),
    ],
)
def test_summary(fields, summary):
    assert one(**fields).summary() == summary


@pytest.mark.parametrize(
    ("fields", "kernel"),
    [
        (dict(cell="lstm", norm="layer"), "custom"),
        (dict(cell="gru", norm="layer", packing=True), "custom"),
        (dict(cell="lstm", proj=2), "torch"),
        (dict(cell="lstm", proj=2, packing=True), "auto"),
        (dict(cell="lstm", residual=True, layers=2, impl="torch"), "torch"),
        (dict(cell="lstm", forget_bias=1.0, impl="custom"), "custom"),
    ],
)
def test_kernel(fields, kernel):
    assert one(**fields).kernel == kernel


# -- the plan: which class, which keywords ---------------------------------------------

TORCH_ARGS = ("input_size", "hidden_size", "num_layers", "bias", "batch_first")
TORCH_ARGS += ("dropout", "bidirectional")

PLANS = [
    # (fields, callee, keywords after torch's own, in order)
    (dict(cell="lstm"), "nn.LSTM", {}),
    (dict(cell="lstm", impl="custom"), "CustomLSTM", {"impl": "custom"}),
    (dict(cell="lstm", packing=True), "CustomLSTM", {"impl": "auto"}),
    (dict(cell="lstm", proj=2), "CustomLSTM", {"proj_size": 2, "impl": "auto"}),
    (
        dict(cell="lstm", proj=2, impl="torch"),
        "CustomLSTM",
        {"proj_size": 2, "impl": "torch"},
    ),
    (
        dict(cell="lstm", forget_bias=1.0),
        "CustomLSTM",
        {"impl": "auto", "forget_bias": 1.0},
    ),
    (
        dict(cell="lstm", residual=True, layers=2, impl="torch"),
        "CustomLSTM",
        {"impl": "torch", "residual": True},
    ),
    (
        dict(cell="gru", initial_state="learned", impl="custom"),
        "CustomGRU",
        {"impl": "custom", "initial_state": "learned"},
    ),
    (
        dict(cell="rnn", nonlinearity="relu", residual=True, layers=3),
        "CustomRNN",
        {"nonlinearity": "relu", "impl": "auto", "residual": True},
    ),
    (dict(cell="rnn", nonlinearity="relu"), "nn.RNN", {"nonlinearity": "relu"}),
    (dict(cell="lstm", peephole=True), "PeepholeLSTM", {"impl": "auto"}),
    (
        dict(
            cell="lstm",
            peephole=True,
            proj=2,
            forget_bias=-1.0,
            initial_state="learned",
        ),
        "PeepholeLSTM",
        {
            "proj_size": 2,
            "impl": "auto",
            "forget_bias": -1.0,
            "initial_state": "learned",
        },
    ),
    (dict(cell="lstm", norm="layer"), "LayerNormLSTM", {"impl": "auto"}),
    (
        dict(
            cell="lstm",
            norm="layer",
            peephole=True,
            proj=3,
            forget_bias=1.0,
            residual=True,
            initial_state="learned",
            layers=2,
            impl="custom",
        ),
        "LayerNormLSTM",
        {
            "proj_size": 3,
            "impl": "custom",
            "peephole": True,
            "forget_bias": 1.0,
            "residual": True,
            "initial_state": "learned",
        },
    ),
    (dict(cell="gru", norm="layer"), "LayerNormGRU", {"impl": "auto"}),
    (
        dict(cell="gru", norm="layer", residual=True, layers=2, packing=True),
        "LayerNormGRU",
        {"impl": "auto", "residual": True},
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


def test_specs_without_the_options_pass_no_new_keyword():
    new = {"proj_size", "peephole", "forget_bias", "residual", "initial_state"}
    for cell in ("rnn", "lstm", "gru"):
        for extra in ({}, {"packing": True}, {"impl": "custom"}, {"layers": 2}):
            names = {name for name, _ in rnn_call(one(cell=cell, **extra)).kwargs}
            assert not names & new


# -- the JSON Schema -------------------------------------------------------------------


def test_schema_describes_and_bounds_the_options():
    schema = json_schema()
    properties = schema["properties"]
    for option in CELL_OPTIONS:
        assert properties[option]["description"]
    validator = jsonschema.Draft202012Validator(schema)
    for fields in COMBINATIONS:
        validator.validate(one(**fields).model_dump(mode="json"))
    base = one(cell="lstm").model_dump(mode="json")
    for bad in (
        {"proj": 0},
        {"proj": 2.5},
        {"norm": "batch"},
        {"initial_state": "learnt"},
        {"residual": "yes"},
        {"forget_bias": "1.0"},
    ):
        assert list(validator.iter_errors({**base, **bad})), bad
