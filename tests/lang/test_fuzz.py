"""Mutated example specs: every failure is a SpecError with valid positions."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rnnspec
from rnnspec import ModelSpec, SpecError
from tests.conftest import EXAMPLES

SOURCES = [path.read_text() for path in EXAMPLES]
WORDS = [
    "model",
    "cell",
    "lstm",
    "gru",
    "rnn",
    "hidden",
    "input",
    "tokens",
    "features",
    "head",
    "logits",
    "classes",
    "linear",
    "attention",
    "dot",
    "true",
    "false",
    "peephole",
    "layers",
    "directions",
    "encoder",
    "spinn",
    "tracker",
    "none",
    "embed=",
    "tie=true",
    "pool=max",
    "mask=strict",
    "=",
    "{",
    "}",
    "#",
    "\n",
    "0",
    "-1",
    "2",
    "0.5",
    "1e9",
    "99999999999999999999",
    "relu",
    "nonlinearity=relu",
    "range",
    "_x",
    "\t",
    "é",
    "\\",
    '"""',
    "packing",
    "impl",
    "torch",
    "custom",
]


@st.composite
def mutated(draw):
    text = draw(st.sampled_from(SOURCES))
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(text)))
        action = draw(st.sampled_from(["insert", "delete", "replace", "dupline"]))
        if action == "insert":
            piece = draw(st.sampled_from(WORDS) | st.text(max_size=3))
            text = (
                text[:position]
                + draw(st.sampled_from(["", " "]))
                + piece
                + text[position:]
            )
        elif action == "delete":
            text = text[:position] + text[position + draw(st.integers(1, 12)) :]
        elif action == "replace":
            end = position + draw(st.integers(1, 8))
            text = text[:position] + draw(st.sampled_from(WORDS)) + text[end:]
        else:
            lines = text.splitlines(keepends=True)
            if lines:
                i = draw(st.integers(0, len(lines) - 1))
                lines.insert(i, lines[i])
            text = "".join(lines)
    return text


@settings(
    max_examples=3000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(mutated())
def test_mutated_specs_fail_only_with_positioned_spec_errors(text):
    line_count = max(1, len(text.splitlines()) + 1)
    try:
        specs = rnnspec.parse(text, "m.rnn")
    except SpecError as err:
        assert err.errors, "a SpecError must carry at least one diagnostic"
        for diag in err.errors:
            assert diag.message
            if diag.line:
                assert 1 <= diag.line <= line_count, (diag, text)
                assert diag.column >= 1, (diag, text)
        assert str(err).startswith("m.rnn")
    else:
        for spec in specs:
            assert isinstance(spec, ModelSpec)
            assert ModelSpec.model_validate(spec.model_dump()) == spec
