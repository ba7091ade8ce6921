"""The regularizers of issue 14 as built: the classes and options the plan hands to
`rnnspec.nn`, what `rnnspec inspect` says runs, and the AWD-LSTM example.

The kernels' math under each option is tested in tests/nn; the model-level dropouts
(word dropout, locked input and head dropout) in tests/nn/test_model_dropouts.py.
"""

from __future__ import annotations

import pytest
import torch

import rnnspec
from rnnspec.compile.describe import describe, kernel_note
from rnnspec.compile.plan import rnn_call
from rnnspec.lang.ir import parameter_counts
from tests.conftest import BUILDABLE, ROOT
from tests.specs import one

TOKENS = {"kind": "tokens", "vocab": 9, "embed": 4}
AWD = ROOT / "examples" / "awd_lstm.rnn"


# -- `rnnspec inspect`: which kernel runs, and why -------------------------------------

TORCH_KERNEL = "torch's fused kernel (oneDNN on CPU, cuDNN on CUDA)"


@pytest.mark.parametrize(
    ("fields", "note"),
    [
        (
            dict(cell="lstm", recurrent_dropout=0.2),
            "rnnspec custom kernel (recurrent_dropout needs it)",
        ),
        (
            dict(cell="gru", zoneout=0.1, recurrent_dropout=0.2),
            "rnnspec custom kernel (recurrent_dropout and zoneout need it)",
        ),
        (
            dict(cell="lstm", zoneout_cell=0.1),
            "rnnspec custom kernel (zoneout needs it)",
        ),
        (
            dict(cell="lstm", peephole=True, zoneout=0.1, weight_drop=0.5),
            "rnnspec custom kernel (peephole and zoneout need it)",
        ),
        (
            dict(cell="lstm", weight_drop=0.5),
            f"{TORCH_KERNEL}, W_hh dropped and passed in (weight_drop)",
        ),
        (
            dict(cell="gru", layers=2, dropout=0.2, dropout_locked=True),
            f"{TORCH_KERNEL}, called a layer at a time (locked dropout)",
        ),
        (
            dict(
                cell="rnn",
                layers=2,
                residual=True,
                dropout=0.2,
                dropout_locked=True,
                weight_drop=0.1,
            ),
            f"{TORCH_KERNEL}, W_hh dropped and passed in (weight_drop), "
            "called a layer at a time (residual and locked dropout)",
        ),
        (
            dict(cell="lstm", weight_drop=0.5, packing=True),
            "rnnspec kernel for packed input on CPU; torch's (cuDNN) otherwise, "
            "W_hh dropped and passed in (weight_drop)",
        ),
        (
            dict(cell="lstm", weight_drop=0.5, impl="custom"),
            "rnnspec custom kernel (impl custom)",
        ),
        (dict(cell="lstm", dropout=0.1, dropout_locked=True), TORCH_KERNEL),
    ],
)
def test_kernel_note_says_which_kernel_and_why(fields, note):
    assert kernel_note(one(**fields)) == note


def test_inspect_the_awd_example():
    (spec,) = rnnspec.parse_file(AWD)
    text = describe(spec)
    assert "state   (h, c) each (3, B, 256)" in text
    lines = {line.split()[0]: line for line in text.splitlines()[6:]}
    assert lines["embedding"].endswith(
        "DropoutEmbedding: torch (word dropout 0.1 and locked dropout 0.4 on its "
        "output)"
    )
    assert lines["rnn"].endswith(
        f"CustomLSTM: {TORCH_KERNEL}, W_hh dropped and passed in (weight_drop), "
        "called a layer at a time (locked dropout)"
    )
    assert lines["head"].endswith(
        "DropoutLinear: torch (locked dropout 0.4 on its input)"
    )
    assert f"{sum(parameter_counts(spec).values()):,}" in lines["total"]


# -- the built model: the classes and options the plan names ---------------------------

BUILT = [
    dict(cell="lstm", weight_drop=0.5),
    dict(cell="gru", layers=2, dropout=0.3, dropout_locked=True, impl="torch"),
    dict(cell="rnn", recurrent_dropout=0.25, directions=2),
    dict(cell="lstm", zoneout=0.1, zoneout_cell=0.05, packing=True),
    dict(cell="lstm", zoneout_cell=0.2),
    dict(cell="gru", zoneout=0.15, weight_drop=0.2, impl="custom"),
    dict(cell="lstm", peephole=True, proj=2, recurrent_dropout=0.1, zoneout=0.1),
    dict(cell="lstm", norm="layer", weight_drop=0.3, zoneout=0.2),
]


@pytest.mark.parametrize("fields", BUILT)
def test_the_stack_gets_the_options(fields):
    spec = one(**fields)
    rnn = rnnspec.instantiate(spec).rnn
    assert type(rnn).__name__ == rnn_call(spec).callee
    assert rnn.recurrent_dropout == spec.recurrent_dropout
    assert rnn.weight_drop == spec.weight_drop
    assert rnn.zoneout == spec.zoneout
    cell_rate = spec.zoneout if spec.zoneout_cell is None else spec.zoneout_cell
    assert rnn.zoneout_cell == (cell_rate if spec.cell == "lstm" else 0.0)
    assert rnn.locked_dropout is spec.dropout_locked
    # the options add no parameter: the state dict is the one without them
    plain = rnnspec.instantiate(
        spec.model_copy(
            update=dict(
                recurrent_dropout=0.0,
                weight_drop=0.0,
                zoneout=0.0,
                zoneout_cell=None,
                dropout_locked=False,
            )
        )
    )
    assert list(plain.rnn.state_dict()) == list(rnn.state_dict())


def test_the_model_level_dropouts_are_built_into_embedding_and_head():
    spec = one(
        cell="lstm",
        input={**TOKENS, "dropout": 0.4, "locked": True, "word_dropout": 0.1},
        head={"kind": "logits", "tie": True, "dropout": 0.3, "locked": True},
    )
    model = rnnspec.instantiate(spec)
    assert type(model.embedding).__name__ == "DropoutEmbedding"
    assert model.embedding.word_dropout == 0.1 and model.embedding.dropout.p == 0.4
    assert type(model.head).__name__ == "DropoutLinear" and model.head.dropout.p == 0.3
    assert model.head.weight is model.embedding.weight  # still tied
    assert (model.input_dropout, model.head_dropout) == (0.0, 0.0)
    torch.manual_seed(0)
    plain = rnnspec.instantiate(
        spec.model_copy(
            update=dict(
                input=spec.input.model_copy(update=dict(locked=False, word_dropout=0)),
                head=spec.head.model_copy(update=dict(locked=False)),
            )
        )
    )
    assert list(plain.state_dict()) == list(model.state_dict())
    torch.manual_seed(0)
    same_seed = rnnspec.instantiate(spec)
    for key, value in plain.state_dict().items():
        assert torch.equal(value, same_seed.state_dict()[key]), key


# -- the AWD-LSTM example ------------------------------------------------------------


def test_the_awd_example_builds_and_is_an_example():
    assert AWD in BUILDABLE  # so codegen's runtime == generated tests run it
    (spec,) = rnnspec.parse_file(AWD)
    model = rnnspec.instantiate(spec)
    # tied: the top layer's outputs are as wide as the embedding
    assert model.head.weight is model.embedding.weight
    assert spec.head_input_size == spec.input.embed == 256
    assert (model.rnn.num_layers, model.rnn.weight_drop) == (3, 0.5)
    assert model.rnn.locked_dropout and model.rnn.dropout == 0.25
