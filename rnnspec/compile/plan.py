"""IR → constructor calls. The one place that decides which classes a spec builds.

`instantiate` evaluates the `Call` tree with the classes of `rnnspec.nn`; codegen prints
the same tree into the generated `__init__`. Since both run the same constructors in
the same order, the same seed gives the same weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rnnspec.lang.ir import (
    ClassesHead,
    LogitsHead,
    ModelSpec,
    TokensInput,
)


@dataclass(frozen=True)
class Call:
    """A constructor call: `callee(**kwargs)`. Values are literals or nested Calls.

    `instantiate` evaluates it with the classes of `rnnspec.nn`; codegen prints it.
    Keyword order is evaluation order, so both draw the same random numbers.
    """

    callee: str
    kwargs: tuple[tuple[str, Any], ...]

    def callees(self) -> list[str]:
        found = [self.callee]
        for _, value in self.kwargs:
            if isinstance(value, Call):
                found.extend(value.callees())
        return found


_TORCH_CELLS = {"rnn": "nn.RNN", "lstm": "nn.LSTM", "gru": "nn.GRU"}
_CUSTOM_CELLS = {"rnn": "CustomRNN", "lstm": "CustomLSTM", "gru": "CustomGRU"}
_LAYER_NORM_CELLS = {"lstm": "LayerNormLSTM", "gru": "LayerNormGRU"}
_ATTENTION = {
    "dot": "DotAttention",
    "general": "GeneralAttention",
    "additive": "AdditiveAttention",
}


def call(callee: str, **kwargs: object) -> Call:
    return Call(callee, tuple(kwargs.items()))


def model_call(spec: ModelSpec) -> Call:
    if spec.encoder == "spinn":
        return _spinn_call(spec)
    return _recurrent_call(spec)


def rnn_call(spec: ModelSpec) -> Call:
    """The recurrent stack: torch's module, or one of ours with torch's layout.

    Keywords beyond torch's appear only when the spec asks for them, so a spec
    without the cell options builds (and generates) exactly what it did before them.
    """
    assert spec.cell is not None
    if isinstance(spec.input, TokensInput):
        input_size = spec.input.embed
    else:
        input_size = spec.input.size
    kwargs: dict[str, object] = {
        "input_size": input_size,
        "hidden_size": spec.hidden,
        "num_layers": spec.layers,
        "bias": spec.bias,
        "batch_first": True,  # RecurrentModel works batch-first inside
        "dropout": spec.dropout,
        "bidirectional": spec.directions == 2,
    }
    if spec.cell == "rnn":
        kwargs["nonlinearity"] = spec.nonlinearity
    if spec.proj is not None:
        kwargs["proj_size"] = spec.proj
    callee = stack_class(spec)
    if callee.startswith("nn."):
        return call(callee, **kwargs)
    kwargs["impl"] = spec.impl
    return call(callee, **kwargs, **_option_kwargs(spec))


def stack_class(spec: ModelSpec) -> str:
    """Which class builds the recurrent stack (design section 9's kernel rules).

    `norm layer` and `peephole` change the step: a class of ours that runs our
    kernel; so do `recurrent_dropout` and `zoneout`, which any of our kernel classes
    takes (`spec.kernel` is then "custom"). The options that act around the step
    (proj, forget_bias, residual, a learned initial state, weight_drop, locked
    dropout between layers) need our stack class, which still calls torch's fused
    kernel where `impl` allows. Otherwise torch's own module, unless the spec runs
    our kernel (impl custom, or packed input with impl auto).
    """
    assert spec.cell is not None
    if spec.norm == "layer":
        return _LAYER_NORM_CELLS[spec.cell]
    if spec.peephole:
        return "PeepholeLSTM"
    if spec.kernel == "torch" and not around_step_options(spec):
        return _TORCH_CELLS[spec.cell]
    return _CUSTOM_CELLS[spec.cell]


def around_step_options(spec: ModelSpec) -> list[str]:
    """The options set that act around the recurrent step, as statements."""
    found = []
    if spec.proj is not None:
        found.append("proj")
    if spec.forget_bias is not None:
        found.append("forget_bias")
    if spec.residual:
        found.append("residual")
    if spec.initial_state == "learned":
        found.append("initial_state learned")
    if spec.weight_drop > 0:
        found.append("weight_drop")
    if spec.dropout_locked:
        found.append("dropout locked=true")
    return found


def _option_kwargs(spec: ModelSpec) -> dict[str, object]:
    """The keyword-only options of our stack classes that differ from their default."""
    kwargs: dict[str, object] = {}
    if spec.norm == "layer" and spec.peephole:
        kwargs["peephole"] = True
    if spec.forget_bias is not None:
        kwargs["forget_bias"] = spec.forget_bias
    if spec.residual:
        kwargs["residual"] = True
    if spec.initial_state != "zeros":
        kwargs["initial_state"] = spec.initial_state
    for name in ("recurrent_dropout", "weight_drop", "zoneout"):
        if getattr(spec, name) > 0:
            kwargs[name] = getattr(spec, name)
    if spec.zoneout_cell is not None and spec.zoneout_cell != spec.zoneout:
        kwargs["zoneout_cell"] = spec.zoneout_cell
    if spec.dropout_locked:
        kwargs["locked_dropout"] = True
    return kwargs


def _recurrent_call(spec: ModelSpec) -> Call:
    embedding = None
    input_dropout = 0.0
    if isinstance(spec.input, TokensInput):
        embedding = _embedding_call(spec.input)
        input_dropout = 0.0 if spec.input.locked else spec.input.dropout
    attention = None
    if spec.attention is not None:
        attention = call(
            _ATTENTION[spec.attention.kind],
            size=spec.directions_hidden,
            mask=spec.attention.mask,
            combine=spec.attention.combine,
            scale=spec.attention.scale,
        )
    head = None
    head_dropout = 0.0
    if spec.head is not None:
        head_dropout = 0.0 if spec.head.locked else spec.head.dropout
        sizes = {"in_features": spec.head_input_size}
        sizes["out_features"] = spec.output_size
        if spec.head.locked:  # the head drops its own input, one mask per sequence
            head = call("DropoutLinear", **sizes, locked_dropout=spec.head.dropout)
        else:
            head = call("nn.Linear", **sizes)
    return call(
        "RecurrentModel",
        embedding=embedding,
        rnn=rnn_call(spec),
        attention=attention,
        head=head,
        input_dropout=input_dropout,
        head_dropout=head_dropout,
        pool=spec.head.pool if isinstance(spec.head, ClassesHead) else None,
        tie=isinstance(spec.head, LogitsHead) and spec.head.tie,
        packing=spec.packing,
        batch_first=spec.batch_first,
    )


def _embedding_call(inp: TokensInput) -> Call:
    """torch's embedding; with word dropout or a locked input dropout, ours, which
    drops its rows and then its output (so RecurrentModel's input dropout is 0)."""
    sizes = {"num_embeddings": inp.vocab, "embedding_dim": inp.embed}
    sizes["padding_idx"] = inp.padding
    if inp.word_dropout == 0 and not inp.locked:
        return call("nn.Embedding", **sizes)
    options: dict[str, object] = {}
    if inp.word_dropout > 0:
        options["word_dropout"] = inp.word_dropout
    if inp.locked:
        options["locked_dropout"] = inp.dropout
    return call("DropoutEmbedding", **sizes, **options)


def _spinn_call(spec: ModelSpec) -> Call:
    assert isinstance(spec.input, TokensInput)
    head = spec.head if isinstance(spec.head, ClassesHead) else None
    return call(
        "SpinnModel",
        vocab_size=spec.input.vocab,
        embed_size=spec.input.embed,
        hidden_size=spec.hidden,
        tracker_size=spec.tracker or 0,
        padding_idx=spec.input.padding,
        input_dropout=spec.input.dropout,
        head="classes" if head is not None else "none",
        head_size=head.size if head is not None else 0,
        head_dropout=head.dropout if head is not None else 0.0,
        pair=head.pair if head is not None else False,
        mlp_layers=head.mlp if head is not None else 1,
        mlp_hidden=(head.mlp_hidden or 0) if head is not None else 0,
    )
