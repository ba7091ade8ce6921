"""Attention over earlier steps (rnnspec.nn.attention) against per-step loops."""

import ast
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from benchmarks.seeds import seed000_loop
from rnnspec.nn import attention as attention_module
from rnnspec.nn.attention import (
    AdditiveAttention,
    DotAttention,
    GeneralAttention,
)

KINDS = {
    "dot": DotAttention,
    "general": GeneralAttention,
    "additive": AdditiveAttention,
}
MASKS = ["causal", "strict"]


def reference_loop(att, o, lengths=None):
    """The contract's formulas, one sequence and one step at a time."""
    batch, steps, size = o.shape
    factor = 1 / math.sqrt(size) if att.scale else 1.0
    rows = []
    for b in range(batch):
        n = steps if lengths is None else int(lengths[b])
        row = []
        for i in range(steps):
            if i >= n:
                row.append(torch.zeros_like(o[b, 0]))
                continue
            if att.mask == "strict" and i == 0:
                row.append(o[b, 0])
                continue
            keys = o[b, : i + (att.mask == "causal")]  # (j, D)
            if isinstance(att, DotAttention):
                s = keys @ o[b, i]
            elif isinstance(att, GeneralAttention):
                s = keys @ (att.query.weight @ o[b, i] + att.query.bias)
            else:
                qi = att.query.weight @ o[b, i] + att.query.bias
                s = torch.tanh(qi + keys @ att.key.weight.T) @ att.v
            weights = torch.softmax(s * factor, 0)
            row.append(weights @ keys)
        rows.append(torch.stack(row))
    context = torch.stack(rows)
    if att.combine == "concat":
        context = torch.cat([o, context], -1)
        if lengths is not None:
            context[torch.arange(steps)[None] >= lengths[:, None]] = 0
    return context


def make(kind, size, dtype=torch.float64, **options):
    torch.manual_seed(0)
    att = KINDS[kind](size, **options).to(dtype)
    with torch.no_grad():  # biases away from zero, so that a dropped bias shows
        for p in att.parameters():
            p.uniform_(-0.5, 0.5)
    return att


def lstm_outputs(batch, steps, size, dtype=torch.float64, seed=1):
    torch.manual_seed(seed)
    lstm = nn.LSTM(size, size, batch_first=True).to(dtype)
    return lstm(torch.randn(batch, steps, size, dtype=dtype))[0].detach()


def test_strict_general_equals_seed000_loop():
    torch.manual_seed(0)
    embedding, hidden, vocab, batch, steps = 24, 32, 50, 5, 37
    embed = nn.Embedding(vocab, embedding)
    lstm = nn.LSTM(embedding, hidden, batch_first=True)
    seed_attn = nn.Linear(hidden, hidden)
    o = lstm(embed(torch.randint(vocab, (batch, steps))))[0]  # (B, T, H) float32

    att = GeneralAttention(hidden, mask="strict")
    att.query.load_state_dict(seed_attn.state_dict())  # weights shared
    assert att.max_block >= batch * steps * steps  # the one-block path
    expected = seed000_loop(seed_attn, o)
    got = att(o)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(got[:, 0], o[:, 0])

    # and the gradients of the whole LM agree
    grad_out = torch.randn_like(o)
    g_seed = torch.autograd.grad(expected, [o, seed_attn.weight], grad_out)
    g_ours = torch.autograd.grad(att(o), [o, att.query.weight], grad_out)
    for a, b in zip(g_ours, g_seed):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("scale", [False, True])
@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("kind", KINDS)
def test_equals_loop_of_formula(kind, mask, scale):
    o = 2 * lstm_outputs(3, 11, 6)
    att = make(kind, 6, mask=mask, scale=scale)
    torch.testing.assert_close(att(o), reference_loop(att, o), atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("kind", KINDS)
def test_scale_divides_scores_by_sqrt_size(kind):
    o = 3 * lstm_outputs(2, 7, 4)
    plain, scaled = make(kind, 4), make(kind, 4, scale=True)
    if kind == "additive":  # v / sqrt(D) scales the additive score
        with torch.no_grad():
            plain.v /= 2.0
    else:  # o_i . o_j / 2 == (o_i / 2) . o_j: scale the queries by hand
        plain.queries = lambda x, q=scaled.queries: q(x) / 2.0
    torch.testing.assert_close(scaled(o), plain(o), atol=1e-12, rtol=1e-10)
    assert not torch.allclose(scaled(o), make(kind, 4)(o))


@pytest.mark.parametrize("kind", KINDS)
def test_concat_is_input_then_context(kind):
    o = lstm_outputs(2, 9, 5)
    out = make(kind, 5, combine="concat", mask="strict")(o)
    assert out.shape == (2, 9, 10)
    assert torch.equal(out[..., :5], o)
    torch.testing.assert_close(out[..., 5:], make(kind, 5, mask="strict")(o))


@pytest.mark.parametrize("combine", ["replace", "concat"])
@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("kind", KINDS)
def test_lengths_each_sequence_as_if_alone(kind, mask, combine):
    lengths = torch.tensor([9, 1, 4, 9, 2])
    o = lstm_outputs(5, 9, 6)
    o[torch.arange(9)[None] >= lengths[:, None]] = 7.0  # padding is not always zero
    att = make(kind, 6, mask=mask, combine=combine)
    out = att(o, lengths)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, reference_loop(att, o, lengths))
    for b, n in enumerate(lengths.tolist()):
        alone = att(o[b : b + 1, :n])[0]
        torch.testing.assert_close(out[b, :n], alone, atol=1e-12, rtol=1e-10)
        assert (out[b, n:] == 0).all()


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("kind", KINDS)
def test_length_one_and_single_step_are_finite(kind, mask):
    att = make(kind, 4, mask=mask)
    for o, lengths in [
        (lstm_outputs(1, 1, 4), None),
        (lstm_outputs(1, 1, 4), torch.tensor([1])),
        (lstm_outputs(3, 6, 4), torch.tensor([1, 1, 1])),
    ]:
        o = o.requires_grad_()
        out = att(o, lengths)
        assert torch.isfinite(out).all()
        if mask == "strict":  # step 0's context is o_0 itself
            assert torch.equal(out[:, 0], o[:, 0])
        grads = torch.autograd.grad(
            out.square().sum(),
            [o, *att.parameters()],
            allow_unused=True,
            materialize_grads=True,
        )
        assert all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("kind", KINDS)
def test_huge_scores_stay_finite(kind, mask):
    att = make(kind, 8, mask=mask, dtype=torch.float32)
    o = (1e3 * torch.randn(2, 10, 8)).requires_grad_()
    out = att(o, torch.tensor([10, 3]))
    grads = torch.autograd.grad(out.sum(), [o, *att.parameters()])
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("kind", KINDS)
def test_later_inputs_never_change_earlier_outputs(kind, mask):
    att = make(kind, 5, mask=mask)
    att.max_block = 2 * 12 * 5 * att.score_width  # blocks of 5 rows
    o = lstm_outputs(2, 12, 5)
    lengths = torch.tensor([12, 8])
    before = att(o, lengths)
    for k in [0, 3, 4, 5, 10]:
        changed = o.clone()
        changed[:, k + 1 :] = torch.randn_like(changed[:, k + 1 :]) * 5
        after = att(changed, lengths)
        torch.testing.assert_close(
            after[:, : k + 1], before[:, : k + 1], atol=0, rtol=0
        )
        if k < 7:
            assert not torch.allclose(after[:, k + 1 : 8], before[:, k + 1 : 8])


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("kind", KINDS)
def test_blocked_equals_unblocked(kind, mask):
    o = lstm_outputs(3, 13, 4).requires_grad_()
    lengths = torch.tensor([13, 6, 1])
    att = make(kind, 4, mask=mask)
    params = [o, *att.parameters()]
    assert att.block_size(o) == 13  # default: a single block at this size

    def run(max_block):
        att.max_block = max_block
        out = att(o, lengths)
        grad_out = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
        return out, torch.autograd.grad(out, params, grad_out)

    whole, grads = run(1 << 30)
    for max_block in [1, 3 * 13 * 4 * att.score_width, 3 * 13 * 5 * att.score_width]:
        blocked, blocked_grads = run(max_block)
        assert att.block_size(o) < 13
        torch.testing.assert_close(blocked, whole, atol=1e-12, rtol=1e-10)
        for a, b in zip(blocked_grads, grads):
            torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)


def test_block_size_bounds_the_score_block():
    o = torch.zeros(16, 1024, 256)
    dot = DotAttention(256)
    assert dot.block_size(o) * 16 * 1024 <= dot.max_block
    additive = AdditiveAttention(256)
    rows = additive.block_size(o[:, :256])
    assert 1 <= rows < 256
    assert rows * 16 * 256 * 256 <= additive.max_block
    assert additive.block_size(o) == 1  # one query row when even that is too big
    assert DotAttention(4).block_size(torch.zeros(2, 5, 4)) == 5


@pytest.mark.parametrize("combine", ["replace", "concat"])
@pytest.mark.parametrize("scale", [False, True])
@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("kind", ["dot", "general"])
def test_sdpa_path_equals_blocked_path(kind, mask, scale, combine):
    att = make(kind, 6, mask=mask, scale=scale, combine=combine)
    for o, lengths in [
        (lstm_outputs(3, 10, 6), torch.tensor([10, 1, 5])),
        (lstm_outputs(2, 1, 6), None),
    ]:
        o = o.requires_grad_()
        params = [o, *att.parameters()]
        results = []
        for use_sdpa in [False, True]:
            att.use_sdpa = use_sdpa
            out = att(o, lengths)
            grads = torch.autograd.grad(
                out.square().sum(), params, allow_unused=True, materialize_grads=True
            )
            results.append((out, grads))
        (a, grads_a), (b, grads_b) = results
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)
        for ga, gb in zip(grads_a, grads_b):
            torch.testing.assert_close(ga, gb, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("blocked", [False, True])
@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck(kind, mask, blocked):
    att = make(kind, 3, mask=mask, scale=True)
    if blocked:
        att.max_block = 2 * 6 * 2 * att.score_width  # blocks of 2 rows
    o = lstm_outputs(2, 6, 3).requires_grad_()
    lengths = torch.tensor([6, 4])
    names = [name for name, _ in att.named_parameters()]

    def f(o, *params):
        state = dict(zip(names, params))
        return torch.func.functional_call(att, state, (o, lengths))

    params = [p.detach().clone().requires_grad_() for p in att.parameters()]
    assert torch.autograd.gradcheck(f, (o, *params))


def test_inference_keeps_no_weights_and_additive_saves_no_tanh_tensor():
    """Saved for backward: no tensor over B x T x D elements (the weights, B x T x T
    in all, are recomputed); nothing in no_grad."""
    batch, steps, size = 2, 16, 8
    o = lstm_outputs(batch, steps, size).requires_grad_()
    for kind in KINDS:
        att = make(kind, size)
        att.max_block = batch * steps * 4 * att.score_width  # blocks of 4 rows
        sizes = []

        def pack(t, sizes=sizes):
            sizes.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            att(o).sum().backward()
            assert 0 < max(sizes) <= batch * steps * size, kind
            sizes.clear()
            with torch.no_grad():
                att(o)
            assert sizes == [], kind


def test_rejects_unknown_options():
    with pytest.raises(ValueError, match="mask"):
        DotAttention(4, mask="future")
    with pytest.raises(ValueError, match="combine"):
        GeneralAttention(4, combine="add")


def _dependencies(tree, name):
    """Top-level names that the definition `name` uses, transitively."""
    defs = {
        n.name: n for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef))
    }
    seen, todo = set(), [name]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for node in ast.walk(defs[current]):
            if isinstance(node, ast.Name) and node.id in defs:
                todo.append(node.id)
    return seen


def test_module_fits_the_code_generator():
    source = Path(attention_module.__file__).read_text()
    tree = ast.parse(source)
    allowed = {
        "import math",
        "import torch",
        "import torch.nn.functional as F",
        "from torch import Tensor, nn",
    }
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            text = ast.unparse(node)
            typing = text.startswith("from typing import ")
            stack = text.startswith("from .kernel import ")  # inlined by codegen
            assert text in allowed or typing or stack, text
    dot = _dependencies(tree, "DotAttention")
    assert "AdditiveAttention" not in dot and "_AdditiveAttentionFn" not in dot
    assert {"StepAttention", "ProductAttention", "_ProductAttentionFn"} <= dot
    additive = _dependencies(tree, "AdditiveAttention")
    assert "_ProductAttentionFn" not in additive and "_AdditiveAttentionFn" in additive


@pytest.mark.parametrize("kind", KINDS)
def test_float32_matches_float64_loop(kind):
    o = 2 * lstm_outputs(4, 40, 16)
    att = make(kind, 16, mask="strict", scale=True)
    expected = reference_loop(att, o)
    o32 = o.float().requires_grad_()
    got = att.float()(o32, torch.tensor([40, 3, 17, 1]))
    expected[1, 3:] = expected[2, 17:] = expected[3, 1:] = 0
    torch.testing.assert_close(got, expected.float(), atol=1e-5, rtol=1e-5)
    grads = torch.autograd.grad(got.sum(), [o32, *att.parameters()])
    assert all(torch.isfinite(g).all() for g in grads)
