"""instantiate and generated classes against torch's modules, with shared weights."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

import rnnspec

CELLS = [("rnn", "tanh"), ("rnn", "relu"), ("lstm", "tanh"), ("gru", "tanh")]
TORCH = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


def spec_text(cell, nonlinearity="tanh", *, layers=1, directions=1, bias=True, **kw):
    lines = [
        "model M {",
        f"    input      {kw.pop('input', 'features 5')}",
        f"    cell       {cell}"
        + (" nonlinearity=relu" if nonlinearity == "relu" else ""),
        f"    hidden     {kw.pop('hidden', 6)}",
        f"    layers     {layers}",
        f"    directions {directions}",
        f"    bias       {'true' if bias else 'false'}",
    ]
    lines += [f"    {key} {value}" for key, value in kw.items()]
    return "\n".join(lines) + "\n}\n"


def both(text, load_generated):
    """The runtime model and the generated class, built from the same seed."""
    (spec,) = rnnspec.parse(text)
    torch.manual_seed(0)
    runtime = rnnspec.instantiate(spec)
    module = load_generated(rnnspec.generate(spec))
    torch.manual_seed(0)
    generated = module.M()
    return spec, runtime, generated


@pytest.mark.parametrize(
    ("cell", "layers", "directions", "bias"),
    [
        (c, n, d, b)
        for c, n, d, b in itertools.product(CELLS, (1, 3), (1, 2), (True, False))
    ],
    ids=lambda v: str(v[0] if isinstance(v, tuple) else v),
)
def test_equals_torch_module(cell, layers, directions, bias, load_generated):
    name, nonlinearity = cell
    text = spec_text(
        name, nonlinearity, layers=layers, directions=directions, bias=bias
    )
    spec, runtime, generated = both(text, load_generated)
    kwargs = dict(num_layers=layers, bidirectional=directions == 2, bias=bias)
    if name == "rnn":
        kwargs["nonlinearity"] = nonlinearity
    reference = TORCH[name](5, 6, batch_first=True, **kwargs)
    x = torch.randn(3, 7, 5)
    expected_out, expected_state = reference(x)
    for model in (runtime, generated):
        model.rnn.load_state_dict(reference.state_dict())
        assert list(model.rnn.state_dict()) == list(reference.state_dict())
        out, state = model(x)
        torch.testing.assert_close(out, expected_out, atol=1e-5, rtol=0)
        if name == "lstm":
            torch.testing.assert_close(state[0], expected_state[0], atol=1e-5, rtol=0)
            torch.testing.assert_close(state[1], expected_state[1], atol=1e-5, rtol=0)
        else:
            torch.testing.assert_close(state, expected_state, atol=1e-5, rtol=0)


def test_initial_state_and_time_major_layout(load_generated):
    text = spec_text("lstm", layers=2, directions=2, batch_first="false")
    _, runtime, generated = both(text, load_generated)
    reference = nn.LSTM(5, 6, num_layers=2, bidirectional=True)
    reference.load_state_dict(runtime.rnn.state_dict())
    x = torch.randn(7, 3, 5)  # (T, B, N)
    h0, c0 = torch.randn(4, 3, 6), torch.randn(4, 3, 6)
    expected, (h, c) = reference(x, (h0, c0))
    for model in (runtime, generated):
        out, (hn, cn) = model(x, state=(h0, c0))
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(hn, h, atol=1e-5, rtol=0)
        torch.testing.assert_close(cn, c, atol=1e-5, rtol=0)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("directions", [1, 2])
def test_packing_equals_pack_padded_sequence(cell, directions, load_generated):
    text = spec_text(
        cell, layers=2, directions=directions, packing="true", impl="torch"
    )
    _, runtime, generated = both(text, load_generated)
    reference = TORCH[cell](
        5, 6, num_layers=2, bidirectional=directions == 2, batch_first=True
    )
    reference.load_state_dict(runtime.rnn.state_dict())
    lengths = torch.tensor([3, 7, 1, 5])
    x = torch.randn(4, 7, 5)
    packed = nn.utils.rnn.pack_padded_sequence(
        x, lengths, batch_first=True, enforce_sorted=False
    )
    out, state = reference(packed)
    expected, _ = nn.utils.rnn.pad_packed_sequence(
        out, batch_first=True, total_length=7
    )
    for model in (runtime, generated):
        got, got_state = model(x, lengths=lengths.tolist())
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
        states = got_state if cell == "lstm" else (got_state,)
        refs = state if cell == "lstm" else (state,)
        for a, b in zip(states, refs):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
        assert got[2, 1:].abs().max() == 0  # padded rows are zero
        # A sequence alone gives the same result as inside the padded batch.
        alone, _ = model(x[1:2, :7], lengths=[7])
        torch.testing.assert_close(alone[0], got[1], atol=1e-5, rtol=0)


def test_linear_head_zeroes_padded_rows():
    text = spec_text("gru", packing="true", head="linear 3")
    (spec,) = rnnspec.parse(text)
    model = rnnspec.instantiate(spec)
    out, _ = model(torch.randn(2, 4, 5), lengths=torch.tensor([2, 4]))
    assert out.shape == (2, 4, 3)
    assert out[0, 2:].abs().max() == 0 and out[1].abs().min() > 0
    rnn_out, _ = model.rnn(torch.randn(2, 4, 5))
    assert rnn_out.shape == (2, 4, 6)


@pytest.mark.parametrize("pool", ["last", "mean", "max"])
def test_classes_head_pools_valid_steps(pool):
    text = spec_text(
        "lstm", directions=2, packing="true", head=f"classes 3 pool={pool}"
    )
    model = rnnspec.instantiate(rnnspec.parse(text)[0]).eval()
    x, lengths = torch.randn(3, 6, 5), torch.tensor([6, 2, 4])
    logits, (h_n, _) = model(x, lengths=lengths)
    assert logits.shape == (3, 3)
    rnn_out, _ = nn.utils.rnn.pad_packed_sequence(
        model.rnn(
            nn.utils.rnn.pack_padded_sequence(
                x, lengths, batch_first=True, enforce_sorted=False
            )
        )[0],
        batch_first=True,
        total_length=6,
    )
    rows = []
    for b, n in enumerate(lengths.tolist()):
        valid = rnn_out[b, :n]
        if pool == "last":  # forward state at its last step, backward at step 0
            rows.append(torch.cat([valid[n - 1, :6], valid[0, 6:]]))
        elif pool == "mean":
            rows.append(valid.mean(0))
        else:
            rows.append(valid.max(0).values)
    expected = model.head(torch.stack(rows))
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)
    if pool == "last":
        torch.testing.assert_close(torch.cat([h_n[-2], h_n[-1]], 1), torch.stack(rows))


def test_tokens_tied_logits_and_dropout():
    text = """\
model LM {
    input tokens 50 embed=8 padding=0 dropout=0.5
    cell lstm
    hidden 8
    head logits tie=true dropout=0.5
}
"""
    model = rnnspec.instantiate(rnnspec.parse(text)[0])
    assert model.head.weight is model.embedding.weight
    assert model.embedding.padding_idx == 0
    assert "head.weight" in model.state_dict()
    x = torch.randint(0, 50, (2, 5))
    model.train()
    torch.manual_seed(1)
    a, _ = model(x)
    torch.manual_seed(2)
    b, _ = model(x)
    assert a.shape == (2, 5, 50) and not torch.equal(a, b)  # dropout is on
    model.eval()
    torch.testing.assert_close(model(x)[0], model(x)[0])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: m(torch.randn(2, 3)), "Expected float features of shape (B, T, 5)"),
        (
            lambda m: m(torch.randn(2, 3, 4)),
            "got torch.float32 tensor of shape (2, 3, 4)",
        ),
        (lambda m: m(torch.randn(2, 3, 5), lengths=[1, 4]), "Expected lengths in 1..3"),
        (
            lambda m: m(torch.randn(2, 3, 5), lengths=[1]),
            "Expected lengths of shape (2,)",
        ),
        (lambda m: m(torch.randn(2, 3, 5), lengths=[1.0, 2.0]), "Expected integer"),
        (
            lambda m: m(torch.randn(2, 3, 5), state=torch.zeros(1, 2, 6)),
            "Expected state (h0, c0)",
        ),
        (
            lambda m: m(torch.randn(2, 3, 5), state=(torch.zeros(2, 2, 6),) * 2),
            "Expected h0 of shape (1, 2, 6), got (2, 2, 6)",
        ),
    ],
)
def test_bad_tensors_name_expected_and_actual(call, message):
    model = rnnspec.instantiate(rnnspec.parse(spec_text("lstm", packing="true"))[0])
    with pytest.raises(ValueError) as info:
        call(model)
    assert message in str(info.value)


def test_lengths_need_packing_and_tokens_need_int64():
    model = rnnspec.instantiate(rnnspec.parse(spec_text("gru"))[0])
    with pytest.raises(ValueError, match="without `packing true`"):
        model(torch.randn(2, 3, 5), lengths=[3, 3])
    lm = rnnspec.instantiate(
        rnnspec.parse(spec_text("gru", input="tokens 9 embed=5"))[0]
    )
    with pytest.raises(ValueError, match=r"Expected int64 token ids of shape \(B, T\)"):
        lm(torch.randn(2, 3))
