"""Issue 15: attention's backward recomputes its weights from a per-row log-sum-exp.

The blocked attention Functions save q, o (and k, v for additive), the context and
each row's log-sum-exp L_i, not the B x T x T / 2 softmax weights; backward rebuilds
a block's weights as P_ij = exp(s_ij - L_i). These tests check that this backward is
the exact gradient (gradcheck, float64, every kind, mask, packing and combine; scores
so large that most weights underflow) and that what training saves is O(B x T x D),
counted exactly with saved_tensors_hooks.
"""

import pytest
import torch

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
F64 = torch.float64


def make(kind, size, **options):
    torch.manual_seed(0)
    att = KINDS[kind](size, **options).to(F64)
    with torch.no_grad():  # biases away from zero, so that a dropped term shows
        for p in att.parameters():
            p.uniform_(-0.5, 0.5)
    return att


def outputs(batch, steps, size, seed=1):
    torch.manual_seed(seed)
    return torch.randn(batch, steps, size, dtype=F64).tanh()


@pytest.fixture
def no_recompute(monkeypatch):
    """First-order backward must be the hand-written one, not the plain blocks'."""

    def forbidden(*args):
        raise AssertionError("backward recomputed the plain blocks")

    monkeypatch.setattr(attention_module, "kernel_recompute_grads", forbidden)


@pytest.mark.parametrize("combine", ["replace", "concat"])
@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck_recomputed_weights(kind, mask, packed, combine, no_recompute):
    att = make(kind, 3, mask=mask, combine=combine)
    att.max_rows = 3  # blocks of 3, 3 and 1 query rows
    o = outputs(2, 7, 3).requires_grad_()
    lengths = torch.tensor([7, 5]) if packed else None
    names = [name for name, _ in att.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in att.parameters()]
    assert att.block_size(o) == 3

    def f(o, *params):
        state = dict(zip(names, params))
        return torch.func.functional_call(att, state, (o, lengths))

    assert torch.autograd.gradcheck(f, (o, *params))


def plain_context(kind, att, o):
    """att.context(o) through the plain blocks (TorchScript's path), for autograd."""
    block, strict = att.block_size(o), att.mask == "strict"
    if kind == "additive":
        v = att.v * att.factor
        return attention_module._additive_attention_blocks(
            att.query(o), att.key(o), v, o, block, strict, None
        )
    q = att.queries(o) * att.factor
    return attention_module._product_attention_blocks(q, o, block, strict, None)


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("kind", KINDS)
def test_underflowing_weights_match_autograd_of_the_plain_blocks(
    kind, mask, no_recompute
):
    """Scores spanning ~1000: most exp(s_ij - L_i) underflow, even in float64."""
    att = make(kind, 16, mask=mask)
    att.max_rows = 6  # blocks of 6, 6, 6 and 2 query rows
    o = (8 * outputs(3, 20, 16)).requires_grad_()
    if kind == "additive":
        with torch.no_grad():
            att.v.mul_(400.0)
    grad_out = torch.randn(3, 20, 16, dtype=F64)
    params = [o, *att.parameters()]
    with torch.no_grad():
        s = o @ o.mT if kind == "dot" else None
    assert s is None or float(s.max() - s.min()) > 800  # exp(-745) is 0 in float64
    expected = torch.autograd.grad(plain_context(kind, att, o), params, grad_out)
    got = torch.autograd.grad(att.context(o), params, grad_out)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, atol=1e-10, rtol=1e-10)


def test_log_sum_exp_of_masked_rows():
    torch.manual_seed(0)
    s = 300 * torch.randn(4, 5, 9, dtype=F64)
    s[:, :, 6:] = -torch.inf  # masked keys
    lse = torch.empty(4, 5, 1, dtype=F64)
    p = attention_module._softmax_lse(s, lse)
    torch.testing.assert_close(
        lse, torch.logsumexp(s, -1, keepdim=True), rtol=0, atol=1e-12
    )
    torch.testing.assert_close(p, torch.softmax(s, -1), rtol=0, atol=0)


def saved_bytes(att, o, lengths):
    """Bytes that one training forward saves for backward: each storage once,
    the parameters' own storage not counted (it exists anyway)."""
    params = {p.untyped_storage().data_ptr() for p in att.parameters()}
    storages = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = att(o, lengths)
    out.sum().backward()  # what was saved is enough for backward
    return sum(storages.values())


@pytest.mark.parametrize("combine", ["replace", "concat"])
@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("scale", [False, True])
@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("kind", KINDS)
def test_saved_memory_is_linear_in_steps(kind, mask, scale, packed, combine):
    """At most q, k, o, context ((B, T, D) each) and the (B, T) log-sum-exp.

    Dot and general save at most three (B, T, D) tensors (q, o, context), additive
    four (q, k, o, context) and its scaled v (D,); all add L (B, T) and, with
    lengths, the (B, T) bool mask of the padded rows. Keeping the weights instead
    would take B x T x T / 2 floats: ~8x the bound at T = 256, D = 16.
    """
    batch, size = 2, 16
    att = make(kind, size, mask=mask, scale=scale, combine=combine).float()
    att.max_rows = 48  # blocks that do not divide T
    saved = {}
    for steps in (64, 128, 256):
        o = outputs(batch, steps, size).float().requires_grad_()
        lengths = torch.tensor([steps, steps // 3]) if packed else None
        saved[steps] = saved_bytes(att, o, lengths)
        tensors = 4 if kind == "additive" else 3
        floats = batch * steps * (tensors * size + 1) + size  # + L, + v
        bound = floats * o.element_size() + (batch * steps if packed else 0)
        assert saved[steps] <= bound, f"Expected <= {bound} bytes, got {saved[steps]}"
    # O(B T D): affine in T, no T^2 term (the weights would add 4 x the T = 64 one)
    assert saved[256] - saved[128] == 2 * (saved[128] - saved[64])
