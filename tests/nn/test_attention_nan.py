"""Issue 11 item 7: a NaN at step t never reaches a step its mask keeps away from t.

Which output steps may depend on o_t (language.md section 5, "Attention over earlier
steps"): step i's context is sum_j softmax_j(s_ij) o_j over the keys j its mask allows
(causal: j <= i; strict: j < i), and its scores s_ij take o_i itself as the query;
strict step 0's context is o_0, and ``concat`` outputs [o_i; context_i]. So under
either mask output step i depends on exactly o_0 .. o_i: a non-finite o_t may reach
the steps i >= t and must not reach the steps i < t, nor any other sequence.
"""

import math

import pytest
import torch

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
SIZE = 4


def make(kind, mask, scale=False, combine="replace", steps=8):
    torch.manual_seed(0)
    att = KINDS[kind](SIZE, mask=mask, scale=scale, combine=combine).double()
    with torch.no_grad():  # biases away from zero, so that a dropped term shows
        for p in att.parameters():
            p.uniform_(-0.5, 0.5)
    if steps <= 8:
        att.max_rows = 3  # several blocks, so that blocks' edges are tested too
    return att


def outputs(batch, steps, seed=1):
    torch.manual_seed(seed)
    return torch.randn(batch, steps, SIZE, dtype=torch.float64).tanh()


def run(att, o, lengths, kept, weights):
    """att's output and the gradients of a loss over the ``kept`` output rows only."""
    o = o.clone().requires_grad_()
    out = att(o, lengths)
    loss = (out * weights).masked_fill(~kept[..., None], 0.0).sum()
    params = list(att.parameters())
    grads = torch.autograd.grad(loss, [o, *params], allow_unused=True)
    return out, grads[0], grads[1:]


def poison_steps(steps):
    """(t, value) pairs to inject: first, second, middle and last step, NaN and inf."""
    ts = sorted({0, 1, steps // 2, steps - 1})
    return [(t, value) for t in ts for value in (math.nan, math.inf)]


@pytest.mark.parametrize("combine", ["replace", "concat"])
@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("steps", [8, 100])
@pytest.mark.parametrize("scale", [False, True])
@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("kind", KINDS)
def test_non_finite_step_reaches_only_later_steps(
    kind, mask, scale, steps, with_lengths, combine
):
    att = make(kind, mask, scale, combine, steps)
    o = outputs(3, steps)
    lengths = torch.tensor([steps, steps - 3, 2]) if with_lengths else None
    weights = torch.randn(3, steps, att(o).shape[-1], dtype=torch.float64)
    valid = torch.ones(3, steps, dtype=torch.bool)
    if lengths is not None:
        valid = torch.arange(steps)[None] < lengths[:, None]
    for t, value in poison_steps(steps):
        poisoned = o.clone()
        poisoned[:2, t, 1] = value  # sequences 0 and 1; sequence 2 stays clean
        kept = torch.ones(3, steps, dtype=torch.bool)
        kept[:2, t:] = False  # the rows that may see step t
        clean_out, clean_grad, clean_param_grads = run(att, o, lengths, kept, weights)
        out, grad, param_grads = run(att, poisoned, lengths, kept, weights)
        with torch.no_grad():  # inference takes the plain blocks: the same outputs
            inferred = att(poisoned, lengths)
        where = f"t={t} value={value}"
        for got in (out, inferred):
            assert torch.isfinite(got[kept]).all(), where
            assert torch.equal(got[kept], clean_out[kept]), where
            assert (got[~valid] == 0).all(), f"padded rows not zero, {where}"
            # ... and the poison is not hidden from the rows that see it
            seen = ~kept & valid
            assert (~torch.isfinite(got[seen])).any(-1).all(), where
        # equal up to the order in which autograd adds o's gradients up
        assert torch.isfinite(grad[kept]).all(), where
        torch.testing.assert_close(grad[kept], clean_grad[kept], msg=where)
        for g, clean in zip(param_grads, clean_param_grads):
            assert torch.isfinite(g).all(), where
            torch.testing.assert_close(g, clean, msg=where)


@pytest.mark.parametrize("steps", [8, 100])
@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("kind", ["dot", "general"])
def test_sdpa_path_keeps_non_finite_steps_away(kind, mask, steps):
    """The same on F.scaled_dot_product_attention, CUDA's default path."""
    att = make(kind, mask, steps=steps)
    att.use_sdpa = True
    o = outputs(2, steps)
    weights = torch.randn(2, steps, SIZE, dtype=torch.float64)
    for t, value in poison_steps(steps):
        poisoned = o.clone()
        poisoned[0, t, 1] = value
        kept = torch.ones(2, steps, dtype=torch.bool)
        kept[0, t:] = False
        clean_out, clean_grad, _ = run(att, o, None, kept, weights)
        out, grad, _ = run(att, poisoned, None, kept, weights)
        torch.testing.assert_close(out[kept], clean_out[kept], atol=0, rtol=0)
        torch.testing.assert_close(grad[kept], clean_grad[kept], atol=0, rtol=0)
        assert (~torch.isfinite(out[~kept])).any(-1).all()


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("kind", KINDS)
def test_scripted_module_keeps_non_finite_steps_away(kind, mask):
    """TorchScript runs the plain blocks under autograd: the same outputs, gradients."""
    att = make(kind, mask, combine="concat")
    scripted = torch.jit.script(att)
    o = outputs(2, 8)
    lengths = torch.tensor([8, 5])
    weights = torch.randn(2, 8, 2 * SIZE, dtype=torch.float64)
    for t in [0, 3, 7]:
        poisoned = o.clone()
        poisoned[:, t, 0] = math.nan
        kept = torch.ones(2, 8, dtype=torch.bool)
        kept[:, t:] = False
        clean_out, clean_grad, _ = run(att, o, lengths, kept, weights)
        out, grad, _ = run(scripted, poisoned, lengths, kept, weights)
        torch.testing.assert_close(out[kept], clean_out[kept])
        torch.testing.assert_close(grad[kept], clean_grad[kept])
        assert torch.isfinite(grad[kept]).all()


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("kind", ["dot", "general"])
def test_overflowing_future_score_stays_out_of_earlier_rows(kind, mask):
    """A finite but huge later step whose masked score overflows to +-inf."""
    att = make(kind, mask).float()
    o = outputs(2, 8).float()
    huge = o.clone()
    with torch.no_grad():
        q0 = att.queries(o)[:, 0]  # (B, D)
        huge[:, 5] = 3e38 * q0.sign()  # q_0 . o_5 is +inf, masked for rows 0..4
        assert ((q0 * huge[:, 5]).sum(-1) == math.inf).any()
        expected = att(o)[:, :5]
    for grad_mode in [False, True]:
        with torch.set_grad_enabled(grad_mode):
            out = att(huge.clone().requires_grad_(grad_mode))
        assert torch.equal(out[:, :5], expected)


@pytest.mark.parametrize("kind", KINDS)
def test_scripted_module_trains_like_eager(kind):
    """TorchScript's plain blocks under autograd (additive's in-place tanh broke it)."""
    att = make(kind, "causal")
    o = outputs(2, 8).requires_grad_()
    params = [o, *att.parameters()]
    eager = torch.autograd.grad(att(o).square().sum(), params)
    scripted = torch.jit.script(att)
    for got, expected in zip(
        torch.autograd.grad(scripted(o).square().sum(), params), eager
    ):
        torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("kind", KINDS)
def test_exported_module_keeps_non_finite_steps_away(kind):
    """torch.export traces the guard without its CPU check: the same outputs."""
    att = make(kind, "strict").eval()
    o = outputs(2, 8)
    program = torch.export.export(att, (o,)).module()
    poisoned = o.clone()
    poisoned[0, 5, 2] = math.nan
    out, clean = program(poisoned), att(o)
    assert torch.equal(out[0, :5], clean[0, :5])
    assert torch.equal(out[1], clean[1])
    assert torch.isnan(out[0, 5:]).all()
