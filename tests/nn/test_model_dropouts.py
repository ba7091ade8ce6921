"""The dropouts around the recurrent stack (issue 14, design section 9): word dropout
(AWD's `embedded_dropout`), locked dropout on the embeddings and before the head.

Each is checked exactly against the masks the module drew (recorded by wrapping its
`mask` method, which draws them all): eval is the identity; a dropped word is zero
at every occurrence and the others are scaled by 1/(1-P); a locked mask is the same
at every step and differs between sequences; a whole model equals a reference
written from the equations with those masks, in value and gradient (gradcheck in
float64). The drop rates are checked statistically too, and runtime and generated
models draw the same masks under the same seed.
"""

from __future__ import annotations

import contextlib
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import rnnspec
from rnnspec.nn.model import DropoutEmbedding, DropoutLinear, LockedDropout
from tests.conftest import ROOT

AWD = ROOT / "examples" / "awd_lstm.rnn"
MASKED = ("LockedDropout", "DropoutEmbedding")


@pytest.fixture(autouse=True)
def _one_thread_quiet():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
    torch.set_num_threads(threads)


@contextlib.contextmanager
def recorded_masks(model: nn.Module):
    """Yields a list receiving (module name, mask) for every mask drawn, in order.

    Wraps `mask` on the instances (runtime or generated classes alike): what is
    drawn does not change."""
    found: list[tuple[str, torch.Tensor]] = []
    wrapped = []
    for name, module in model.named_modules():
        if type(module).__name__ not in MASKED:
            continue
        draw = module.mask

        def record(shape, like, draw=draw, name=name):
            mask = draw(shape, like)
            found.append((name, mask.clone()))
            return mask

        module.mask = record
        wrapped.append(module)
    try:
        yield found
    finally:
        for module in wrapped:
            del module.mask


def model_of(body: str, name: str = "M") -> tuple:
    (spec,) = rnnspec.parse(f"model {name} {{\n{body}\n}}\n")
    return spec, rnnspec.instantiate(spec)


AWD_LIKE = """
    input tokens 20 embed=6 dropout=0.4 locked=true word_dropout=0.3
    cell lstm
    hidden 6
    head logits tie=true dropout=0.5 locked=true"""


# -- word dropout ------------------------------------------------------------------


def test_word_dropout_drops_every_occurrence_and_scales_the_rest():
    torch.manual_seed(0)
    embedding = DropoutEmbedding(12, 5, word_dropout=0.4).train()
    x = torch.randint(0, 12, (6, 9))
    with recorded_masks(embedding) as found:
        out = embedding(x)  # (6, 9, 5)
    ((_, mask),) = found
    assert mask.shape == (12, 1)
    assert set(mask.flatten().tolist()) == {0.0, torch.tensor(1 / 0.6).item()}
    expected = embedding.weight[x] * mask[x]  # row x[b, t] times its word's mask
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    dropped = [word for word in range(12) if mask[word] == 0]
    kept = [word for word in range(12) if mask[word] != 0]
    assert dropped and kept  # seed 0 drops some words and keeps others
    for word in dropped:
        assert (out[x == word] == 0).all()  # at every occurrence in the batch
    for word in kept:
        torch.testing.assert_close(
            out[x == word], embedding.weight[word].expand_as(out[x == word]) / 0.6
        )
    out.sum().backward()
    grad = embedding.weight.grad
    for word in dropped:
        assert (grad[word] == 0).all()  # a dropped word learns nothing this step
    for word in kept:
        count = (x == word).sum()
        torch.testing.assert_close(grad[word], torch.full((5,), count / 0.6))


def test_word_dropout_draws_a_new_mask_per_call_and_keeps_padding():
    torch.manual_seed(1)
    embedding = DropoutEmbedding(30, 4, padding_idx=0, word_dropout=0.5).train()
    x = torch.tensor([[0, 1, 2, 0], [3, 0, 1, 2]])
    with recorded_masks(embedding) as found:
        out = embedding(x)
        embedding(x)
    assert not torch.equal(found[0][1], found[1][1])
    assert (out[x == 0] == 0).all()  # the padding row is zero, dropped or not
    out.sum().backward()
    assert (embedding.weight.grad[0] == 0).all()  # and gets no gradient


def test_word_dropout_rate():
    torch.manual_seed(2)
    vocab, p = 100_000, 0.3
    embedding = DropoutEmbedding(vocab, 1, word_dropout=p).train()
    with torch.no_grad():
        embedding.weight.fill_(1.0)
        out = embedding(torch.arange(vocab).unsqueeze(0))
    dropped = (out == 0).float().mean().item()
    assert abs(dropped - p) < 5 * math.sqrt(p * (1 - p) / vocab)
    assert abs(out.mean().item() - 1.0) < 0.01  # 1/(1-P) keeps the expectation


def test_word_dropout_in_eval_is_the_embedding():
    torch.manual_seed(3)
    embedding = DropoutEmbedding(12, 5, padding_idx=2, word_dropout=0.4)
    plain = nn.Embedding(12, 5, padding_idx=2)
    plain.load_state_dict(embedding.state_dict())
    x = torch.randint(0, 12, (3, 4))
    embedding.eval()
    state = torch.get_rng_state()
    assert torch.equal(embedding(x), plain(x))
    assert torch.equal(torch.get_rng_state(), state)  # eval draws nothing


# -- locked dropout --------------------------------------------------------------------


def test_locked_mask_is_constant_over_time_and_differs_between_sequences():
    torch.manual_seed(4)
    dropout = LockedDropout(0.5).train()
    x = torch.randn(8, 7, 16)  # (B, T, F)
    with recorded_masks(dropout) as found:
        out = dropout(x)
    ((_, mask),) = found
    assert mask.shape == (8, 1, 16)
    assert set(mask.flatten().tolist()) == {0.0, 2.0}
    torch.testing.assert_close(out, x * mask, rtol=0, atol=0)
    zeros = out == 0  # (B, T, F): which units are dropped, per step
    assert (zeros == zeros[:, :1]).all()  # the same units at every step
    assert all(not torch.equal(zeros[0, 0], zeros[b, 0]) for b in range(1, 8))


def test_locked_dropout_of_one_step_is_torchs_dropout():
    dropout = LockedDropout(0.3).train()
    x = torch.randn(5, 11)  # (B, F): a pooled head's input
    torch.manual_seed(5)
    out = dropout(x)
    torch.manual_seed(5)
    assert torch.equal(out, F.dropout(x, 0.3, True))


def test_locked_dropout_rate_and_eval():
    torch.manual_seed(6)
    p, batch, features = 0.25, 400, 500
    dropout = LockedDropout(p).train()
    out = dropout(torch.ones(batch, 3, features))
    dropped = (out[:, 0] == 0).float().mean().item()
    n = batch * features
    assert abs(dropped - p) < 5 * math.sqrt(p * (1 - p) / n)
    assert abs(out.mean().item() - 1.0) < 0.01
    x = torch.randn(2, 3, 4)
    assert torch.equal(dropout.eval()(x), x)
    with pytest.raises(ValueError, match=r"Expected p in \[0, 1\), got 1.0"):
        LockedDropout(1.0)


def test_dropout_linear_is_linear_on_the_locked_dropped_input():
    torch.manual_seed(7)
    head = DropoutLinear(6, 3, locked_dropout=0.5).train()
    x = torch.randn(4, 5, 6)
    with recorded_masks(head) as found:
        out = head(x)
    ((name, mask),) = found
    assert name == "dropout" and mask.shape == (4, 1, 6)
    torch.testing.assert_close(out, F.linear(x * mask, head.weight, head.bias))
    plain = nn.Linear(6, 3)
    assert list(plain.state_dict()) == list(head.state_dict())
    plain.load_state_dict(head.state_dict())
    assert torch.equal(head.eval()(x), plain(x))


# -- the whole model -------------------------------------------------------------------


def test_eval_is_the_same_model_without_the_dropouts():
    spec, _ = model_of(AWD_LIKE)
    plain_spec = spec.model_copy(
        update=dict(
            input=spec.input.model_copy(update=dict(locked=False, word_dropout=0.0)),
            head=spec.head.model_copy(update=dict(locked=False)),
        )
    )
    torch.manual_seed(8)
    model = rnnspec.instantiate(spec).eval()
    torch.manual_seed(8)
    plain = rnnspec.instantiate(plain_spec).eval()
    x = torch.randint(0, 20, (3, 7))
    assert torch.equal(model(x)[0], plain(x)[0])


def reference(model, x, masks):
    """The model from the equations, with the recorded masks: word mask (V, 1),
    locked input mask (B, 1, E), LSTM, locked head mask (B, 1, H), tied head."""
    (_, word), (_, locked_in), (_, locked_out) = masks
    weight = model.embedding.weight
    e = F.embedding(x, weight * word) * locked_in  # (B, T, E)
    lstm = nn.LSTM(6, 6, batch_first=True).to(weight.dtype)
    params = {n: p for n, p in model.rnn.named_parameters()}
    h, _ = torch.func.functional_call(lstm, params, (e,))
    return F.linear(h * locked_out, weight, model.head.bias)


def test_model_equals_the_equations_with_its_masks():
    _, model = model_of(AWD_LIKE)
    model.train()
    x = torch.randint(0, 20, (4, 9))
    with recorded_masks(model) as masks:
        out, _ = model(x)
    assert [name for name, _ in masks] == [
        "embedding",
        "embedding.dropout",
        "head.dropout",
    ]  # drawn in this order, once each
    assert [m.shape for _, m in masks] == [(20, 1), (4, 1, 6), (4, 1, 6)]
    expected = reference(model, x, masks)
    torch.testing.assert_close(out, expected)
    grads = torch.autograd.grad(out.square().sum(), list(model.parameters()))
    expected_grads = torch.autograd.grad(
        expected.square().sum(), list(model.parameters())
    )
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want)


def test_gradcheck_with_fixed_masks():
    _, model = model_of(AWD_LIKE)
    model = model.double().train()
    x = torch.randint(0, 20, (2, 4))
    names = ["embedding.weight", "rnn.weight_hh_l0", "head.bias"]
    start = [model.get_parameter(n).detach().clone().requires_grad_() for n in names]

    def forward(*values):
        torch.manual_seed(9)  # the same masks on every evaluation
        params = dict(zip(names, values))
        if "embedding.weight" in params:  # tied: the head reads the same tensor
            params["head.weight"] = params["embedding.weight"]
        return torch.func.functional_call(model, params, (x,))[0]

    assert torch.autograd.gradcheck(forward, start, eps=1e-6, atol=1e-5)


def test_masks_follow_the_seed_and_differ_between_calls():
    _, model = model_of(AWD_LIKE)
    model.train()
    x = torch.randint(0, 20, (3, 5))
    torch.manual_seed(10)
    first, _ = model(x)
    second, _ = model(x)
    torch.manual_seed(10)
    again, _ = model(x)
    assert torch.equal(first, again) and not torch.equal(first, second)


def test_locked_on_a_pooled_head_is_the_plain_dropout():
    body = """
    input features 3
    cell gru
    hidden 5
    head classes 2 pool=mean dropout=0.4{}"""
    _, locked = model_of(body.format(" locked=true"))
    _, plain = model_of(body.format(""))
    plain.load_state_dict(locked.state_dict())
    locked.train(), plain.train()
    x = torch.randn(6, 4, 3)
    torch.manual_seed(11)
    out = locked(x)[0]
    torch.manual_seed(11)
    assert torch.equal(out, plain(x)[0])


def test_locked_input_dropout_with_packing_masks_only_what_the_model_reads():
    _, model = model_of(
        """
    input tokens 20 embed=6 dropout=0.5 locked=true
    cell gru
    hidden 6
    packing true
    head linear 3 dropout=0.5 locked=true"""
    )
    model.train()
    x = torch.randint(0, 20, (3, 5))
    lengths = torch.tensor([5, 2, 4])
    with recorded_masks(model) as masks:
        out, _ = model(x, lengths)
    assert [m.shape for _, m in masks] == [(3, 1, 6), (3, 1, 6)]
    assert (out[1, 2:] == 0).all() and (out[2, 4:] == 0).all()


def test_scripted_model_draws_the_same_masks_in_training():
    _, model = model_of(AWD_LIKE)
    model.train()
    scripted = torch.jit.script(model)
    x = torch.randint(0, 20, (3, 6))
    torch.manual_seed(12)
    eager, _ = model(x)
    torch.manual_seed(12)
    torch.testing.assert_close(scripted(x)[0], eager)


def test_runtime_equals_generated_for_awd_lstm_in_training(load_generated):
    """Same seed → same weights and, in training mode, the same masks everywhere
    (word, locked, weight drop, between layers): equal outputs and gradients."""
    text = AWD.read_text(encoding="utf-8")
    (spec,) = rnnspec.parse(text)
    module = load_generated(rnnspec.generate(spec, spec_file=AWD.name, source=text))
    torch.manual_seed(13)
    runtime = rnnspec.instantiate(spec).train()
    torch.manual_seed(13)
    generated = module.AWDLSTM().train()
    x = torch.randint(0, 128, (3, 12))
    results = []
    for model in (runtime, generated):
        torch.manual_seed(14)
        with recorded_masks(model) as masks:
            out, _ = model(x)
        out.square().mean().backward()
        grads = {n: p.grad for n, p in model.named_parameters()}
        results.append((out, masks, grads))
    (out_a, masks_a, grads_a), (out_b, masks_b, grads_b) = results
    assert (
        [n for n, _ in masks_a]
        == [n for n, _ in masks_b]
        == [
            "embedding",
            "embedding.dropout",
            "head.dropout",
        ]
    )
    for (_, a), (_, b) in zip(masks_a, masks_b):
        assert torch.equal(a, b)
    assert torch.equal(out_a, out_b)
    assert list(grads_a) == list(grads_b)
    for name in grads_a:
        assert torch.equal(grads_a[name], grads_b[name]), name
