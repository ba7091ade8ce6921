"""Overrides (`--set`, `parse_file(overrides=...)`, `from_config`): values checked
like written ones, diagnostics naming the argument."""

from __future__ import annotations

import pytest

import rnnspec
from rnnspec import ModelSpec, SpecError
from rnnspec.cli import main
from rnnspec.lang.overrides import scalar

TWO = """\
model Wide {
    input      tokens 100 embed=16
    cell       gru
    hidden     32
    dropout    0.2 locked=true
    layers     2
    attention  general
}

model Small {
    input      features 3
    cell       rnn
    hidden     4
}
"""


@pytest.fixture
def two(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "two.rnn").write_text(TWO)
    (tmp_path / "one.rnn").write_text(TWO.split("\n\n")[1])
    return "two.rnn"


def specs_of(path: str, overrides) -> dict[str, ModelSpec]:
    return {s.name: s for s in rnnspec.parse_file(path, overrides=overrides)}


def test_values_replace_what_the_file_says(two):
    wide = specs_of(
        two,
        [
            "Wide.hidden=1024",
            "Wide.attention.mask=strict",
            "Wide.dropout.locked=false",
            "Wide.input.vocab=50",
            "Small.cell.nonlinearity=relu",
            "Small.head=linear",
            "Small.head.size=7",
        ],
    )
    assert wide["Wide"].model_dump() == {
        **rnnspec.parse(TWO)[0].model_dump(),
        "hidden": 1024,
        "dropout_locked": False,
        "attention": {
            "kind": "general",
            "mask": "strict",
            "combine": "replace",
            "scale": False,
        },
        "input": {**rnnspec.parse(TWO)[0].input.model_dump(), "vocab": 50},
    }
    small = wide["Small"]
    assert small.nonlinearity == "relu" and small.head.size == 7


def test_a_mapping_and_a_file_with_one_model(two):
    (small,) = rnnspec.parse_file("one.rnn", overrides={"hidden": 9, "layers": "3"})
    assert (small.hidden, small.layers) == (9, 3)
    (small,) = rnnspec.parse_file("one.rnn", overrides={"attention": "dot"})
    assert small.attention.kind == "dot"
    (wide,) = [
        s
        for s in rnnspec.parse_file(two, overrides=["Wide.attention=none"])
        if s.name == "Wide"
    ]
    assert wide.attention is None


@pytest.mark.parametrize(
    ("text", "value"),
    [("3", 3), ("-2", -2), ("0.5", 0.5), ("1e3", 1000.0), ("true", True)]
    + [("false", False), ("lstm", "lstm"), ("1.2.3", "1.2.3")],
)
def test_values_read_as_the_language_reads_them(text, value):
    assert scalar(text) == value and type(scalar(text)) is type(value)


def check_error(capsys, *args) -> str:
    assert main(["check", *args]) == 1
    return capsys.readouterr().err


def test_an_invalid_value_is_reported_at_its_set_argument(two, capsys):
    assert check_error(capsys, two, "--set", "Wide.hidden=0") == (
        "--set Wide.hidden=0: error: hidden must be ≥ 1, got 0\n"
        "--set Wide.hidden=0\n"
        "                  ^\n"
    )


def test_a_rule_broken_by_an_override_names_both_places(two, capsys):
    assert check_error(capsys, two, "--set", "Wide.peephole=true") == (
        "--set Wide.peephole=true: error: 'peephole true' needs cell lstm, got cell "
        "gru\n"
        "--set Wide.peephole=true\n"
        "                    ^~~~\n"
        "two.rnn:3:5: note: model Wide sets 'cell' here\n"
        "    cell       gru\n"
        "    ^~~~\n"
    )
    assert check_error(capsys, two, "--set", "Wide.cell=lstm", "--set", "layers=1")


def test_a_written_statement_broken_by_an_override_names_both_places(two, capsys):
    err = check_error(capsys, two, "--set", "Wide.dropout=0")
    assert err == (
        "two.rnn:5:27: error: locked=true needs dropout > 0, got dropout 0.0\n"
        "    dropout    0.2 locked=true\n"
        "                          ^~~~\n"
        "--set Wide.dropout=0: note: overridden here\n"
        "--set Wide.dropout=0\n"
        "                   ^\n"
    )


@pytest.mark.parametrize(
    ("argument", "message", "caret"),
    [
        (
            "Wide.hiden=3",
            "unknown statement 'hiden'; did you mean 'hidden'?",
            "           ^~~~~",
        ),
        (
            "Wde.hidden=3",
            "no model 'Wde' in two.rnn; did you mean 'Wide'?",
            "      ^~~",
        ),
        (
            "hidden=3",
            "two.rnn defines 2 models (Wide, Small); name one: Wide.hidden",
            "      ^~~~~~",
        ),
        (
            "Wide.hidden",
            "expected [MODEL.]STATEMENT[.OPTION]=VALUE",
            "      ^~~~~~~~~~~",
        ),
        (
            "Wide.hidden=",
            "'Wide.hidden' needs a value after '='",
            "                  ^",
        ),
        ("Wide.hidden.x=1", "'hidden' takes no options", "           ^~~~~~~~"),
        (
            "Small.attention.mask=strict",
            "model Small has no 'attention' to set 'mask' in; give it one first: "
            "--set Small.attention=KIND",
            "            ^~~~~~~~~~~~~~",
        ),
        (
            "Wide.attention.msk=strict",
            "unknown option 'msk' for 'attention general'; did you mean 'mask'?",
            "           ^~~~~~~~~~~~~",
        ),
        (
            "Wide.cell.nonlin=relu",
            "unknown option 'nonlin' for 'cell'; did you mean 'nonlinearity'?",
            "           ^~~~~~~~~~~",
        ),
        ("Wide.name=X", "the model's name cannot be overridden", "           ^~~~"),
    ],
)
def test_argument_errors_name_the_argument(two, capsys, argument, message, caret):
    assert check_error(capsys, two, "--set", argument) == (
        f"--set {argument}: error: {message}\n--set {argument}\n{caret}\n"
    )


def test_set_takes_one_spec(two, capsys):
    err = check_error(capsys, two, "one.rnn", "--set", "hidden=3")
    assert err == "rnnspec: error: --set applies to one SPEC; 2 given\n"


def test_overrides_in_from_config(two, tmp_path):
    path = str(tmp_path / two)
    spec = rnnspec.spec_from_config(
        {"spec": path, "model": "Wide", "overrides": {"hidden": 64}}
    )
    assert spec.hidden == 64  # the model named picks what a bare key overrides
    spec = rnnspec.spec_from_config(path, model="Small", overrides=["layers=2"])
    assert spec.layers == 2
    spec = rnnspec.spec_from_config(TWO, model="Small", overrides=["Small.hidden=5"])
    assert spec.hidden == 5
    with pytest.raises(SpecError) as info:
        rnnspec.spec_from_config(
            {"spec": path, "model": "Wide", "overrides": ["hidden=0"]}
        )
    assert str(info.value) == (
        "override hidden=0: error: hidden must be ≥ 1, got 0\n"
        "override hidden=0\n"
        "                ^"
    )
    with pytest.raises(SpecError, match="overrides apply to spec text or a .rnn"):
        rnnspec.spec_from_config(
            {"name": "M", "input": {"kind": "features", "size": 3}, "hidden": 4},
            overrides=["hidden=3"],
        )
    with pytest.raises(SpecError, match="overrides must be a list of KEY=VALUE"):
        rnnspec.spec_from_config({"spec": path, "overrides": 3})
