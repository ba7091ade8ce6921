"""The cell options of issue 13 against torch: parameter counts and shapes as the
contract names them (design section 9), and what `rnnspec inspect` says runs.

Checks that need a class another part of issue 13 adds (`LayerNormLSTM`, the
`residual=` keyword, ...) skip, saying what is missing, until it is there.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import rnnspec
from rnnspec import ModelSpec
from rnnspec.compile.describe import describe, kernel_note
from rnnspec.compile.plan import rnn_call
from rnnspec.lang.ir import TokensInput, parameter_counts
from tests.conftest import ROOT, missing_classes
from tests.specs import one


def contract_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """`model.rnn`'s parameters by name and shape, as design section 9 names them."""
    gates = {"rnn": 1, "lstm": 4, "gru": 3}[spec.cell] * spec.hidden
    hidden, out = spec.hidden, spec.proj or spec.hidden
    first = spec.input.embed if isinstance(spec.input, TokensInput) else spec.input.size
    shapes: dict[str, tuple[int, ...]] = {}
    for k in range(spec.layers):
        for suffix in ["", "_reverse"][: spec.directions]:
            inputs = first if k == 0 else spec.directions * out
            at = f"_l{k}{suffix}"
            shapes[f"weight_ih{at}"] = (gates, inputs)
            shapes[f"weight_hh{at}"] = (gates, out)
            if spec.bias:
                shapes[f"bias_ih{at}"] = shapes[f"bias_hh{at}"] = (gates,)
            if spec.proj:
                shapes[f"weight_hr{at}"] = (spec.proj, hidden)
            if spec.peephole:
                shapes[f"weight_ch{at}"] = (3 * hidden,)
            if spec.norm == "layer":
                shapes[f"weight_ln_ih{at}"] = shapes[f"weight_ln_hh{at}"] = (gates,)
                if spec.cell == "lstm":
                    shapes[f"weight_ln_c{at}"] = shapes[f"bias_ln_c{at}"] = (hidden,)
    if spec.initial_state == "learned":
        rows = spec.layers * spec.directions
        shapes["h0"] = (rows, out)
        if spec.cell == "lstm":
            shapes["c0"] = (rows, hidden)
    return shapes


# -- proj against torch's own nn.LSTM(proj_size) ---------------------------------------

PROJ_GRID = [
    dict(layers=layers, directions=directions, bias=bias, proj=proj)
    for layers in (1, 3)
    for directions in (1, 2)
    for bias in (True, False)
    for proj in (1, 3)
]


@pytest.mark.parametrize("fields", PROJ_GRID)
def test_proj_counts_and_shapes_are_torchs(fields):
    spec = one(cell="lstm", hidden=5, **fields)
    torch_lstm = nn.LSTM(
        3,
        5,
        spec.layers,
        bias=spec.bias,
        bidirectional=spec.directions == 2,
        proj_size=spec.proj,
    )
    shapes = {name: tuple(p.shape) for name, p in torch_lstm.named_parameters()}
    assert shapes == contract_shapes(spec)
    assert parameter_counts(spec)["rnn"] == sum(
        p.numel() for p in torch_lstm.parameters()
    )


def test_proj_head_reads_directions_times_proj():
    spec = one(
        cell="lstm",
        hidden=5,
        proj=2,
        directions=2,
        input={"kind": "tokens", "vocab": 7, "embed": 4},
        head={"kind": "linear", "size": 6},
    )
    torch_lstm = nn.LSTM(4, 5, bidirectional=True, batch_first=True, proj_size=2)
    output, _ = torch_lstm(torch.randn(2, 3, 4))
    assert output.shape[-1] == spec.head_input_size == 4


@pytest.mark.parametrize(
    "fields",
    [dict(forget_bias=1.0), dict(residual=True, layers=2), dict(forget_bias=-3.0)],
)
def test_forget_bias_and_residual_add_no_parameters(fields):
    spec = one(cell="lstm", **fields)
    torch_lstm = nn.LSTM(3, 4, spec.layers)
    assert parameter_counts(spec)["rnn"] == sum(
        p.numel() for p in torch_lstm.parameters()
    )


# -- the built stack, once the classes of issue 13 are there -------------------------


BUILT = [
    dict(cell="lstm", proj=2),
    dict(cell="lstm", proj=2, layers=2, directions=2, bias=False),
    dict(cell="lstm", forget_bias=1.0, residual=True, layers=2),
    dict(cell="gru", initial_state="learned", layers=2, directions=2),
    dict(cell="rnn", initial_state="learned", residual=True, layers=3, impl="torch"),
    dict(cell="lstm", peephole=True, proj=2, initial_state="learned"),
    dict(cell="lstm", norm="layer"),
    dict(cell="lstm", norm="layer", bias=False),
    dict(cell="gru", norm="layer", layers=2, directions=2),
    dict(
        cell="lstm",
        norm="layer",
        peephole=True,
        proj=3,
        forget_bias=1.0,
        residual=True,
        initial_state="learned",
        layers=3,
        directions=2,
        packing=True,
        hidden=5,
    ),
]


@pytest.mark.parametrize("fields", BUILT)
def test_built_stack_has_the_contract_parameters(fields):
    spec = one(**fields)
    model = rnnspec.instantiate(spec)
    shapes = {name: tuple(p.shape) for name, p in model.rnn.named_parameters()}
    assert shapes == contract_shapes(spec)
    assert parameter_counts(spec)["rnn"] == sum(
        p.numel() for p in model.rnn.parameters()
    )
    assert type(model.rnn).__name__ == rnn_call(spec).callee.removeprefix("nn.")


# -- `rnnspec inspect`: which kernel runs, and why -------------------------------------


@pytest.mark.parametrize(
    ("fields", "note"),
    [
        (
            dict(cell="lstm", norm="layer"),
            "rnnspec custom kernel (norm layer needs it)",
        ),
        (
            dict(cell="lstm", norm="layer", peephole=True),
            "rnnspec custom kernel (norm layer and peephole need it)",
        ),
        (dict(cell="lstm", peephole=True), "rnnspec custom kernel (peephole needs it)"),
        (dict(cell="gru", impl="custom"), "rnnspec custom kernel (impl custom)"),
        (
            dict(cell="lstm", proj=2),
            "torch's fused kernel (cuDNN on CUDA; on CPU its own: oneDNN has no proj)",
        ),
        (
            dict(cell="lstm", initial_state="learned", forget_bias=1.0),
            "torch's fused kernel (oneDNN on CPU, cuDNN on CUDA)",
        ),
        (
            dict(cell="lstm", residual=True, layers=2),
            "torch's fused kernel (oneDNN on CPU, cuDNN on CUDA), "
            "called a layer at a time (residual)",
        ),
        (
            dict(cell="gru", residual=True, layers=2, packing=True),
            "rnnspec kernel for packed input on CPU; torch's (cuDNN) otherwise, "
            "called a layer at a time (residual)",
        ),
        (
            dict(cell="lstm", residual=True, layers=2, impl="custom"),
            "rnnspec custom kernel (impl custom)",
        ),
    ],
)
def test_kernel_note_says_which_kernel_and_why(fields, note):
    assert kernel_note(one(**fields)) == note


def test_inspect_the_layer_norm_example():
    path = ROOT / "examples" / "ln_lstm.rnn"
    if missing_classes(path):
        pytest.skip(f"rnnspec.nn has no {', '.join(missing_classes(path))} yet")
    (spec,) = rnnspec.parse_file(path)
    text = describe(spec)
    assert "h (2, B, 256), c (2, B, 512)" in text
    assert "LayerNormLSTM: rnnspec custom kernel (norm layer needs it)" in text
    assert f"{sum(parameter_counts(spec).values()):,}" in text
