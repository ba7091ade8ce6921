"""Attention of every step over the earlier steps of a recurrent output (seed 000).

Over the recurrent outputs ``o`` of shape ``(B, T, D)``, step ``i`` gets

    context_i = sum_j softmax_j(s_ij) o_j

with the score ``s_ij`` of the subclass:

    DotAttention       s_ij = o_i . o_j
    GeneralAttention   s_ij = (W o_i + b) . o_j
    AdditiveAttention  s_ij = v . tanh(W_q o_i + b_q + W_k o_j)

each divided by sqrt(D) when ``scale=True``. ``mask="causal"`` lets step i see the
steps j <= i; ``mask="strict"`` only j < i, and step 0, which has nothing before it,
gets ``context_0 = o_0`` (seed 000's model).

All steps are computed at once, in blocks of query rows (``StepAttention.block_size``):
block [start, end) only needs the keys j < end (the lower triangle), and its scores
take B x (end - start) x end elements (x D for additive's tanh(q_i + k_j)), so no
intermediate is B x T x T (or B x T x T x D). For training, only each row's
log-sum-exp of its scores (B x T) is kept besides the inputs and the context, and
backward recomputes each block's weights from it (as FlashAttention does): what
training saves is O(B x T x D), not the B x T x T / 2 weights; additive's tanh tensor
is recomputed too. Key 0 is allowed on every row (for strict, this is what makes
context_0 = o_0), so no softmax row is ever empty and nothing is NaN.

With ``lengths``, a valid step i < length only sees keys j <= i < length, so keys past
a sequence's end never reach its valid rows; padded rows are set to zero.

Output step i depends on o_0 .. o_i only (o_i is its query), even when some o_t is NaN
or inf: a block's masked later keys are weighed by zero, and 0 * NaN is NaN, so
``StepAttention.guarded_context`` zeroes every step from a sequence's first non-finite
one on before attention and sets the rows i >= t that see it to NaN after; earlier
rows and their gradients stay exactly as without it.
"""

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .kernel import kernel_recompute_grads


def _score_ceiling(start: int, end: int, strict: bool, o: Tensor) -> Tensor:
    """+inf where query i in [start, end) may see key j in [start, end), else -inf.

    (c, c). causal: j <= i. strict: j < i, plus key 0 for row 0, whose softmax over
    that one key is 1, so that context_0 = o_0. Key 0 is allowed on every row anyway,
    and so is every key j < start, so only this diagonal square of a block is masked.
    Scores are masked by min(s, ceiling), not by adding a 0/-inf bias: a masked score
    that overflowed to +inf becomes -inf, not inf - inf = NaN in an earlier row.
    """
    i = torch.arange(start, end, device=o.device)[:, None]  # (c, 1)
    j = torch.arange(start, end, device=o.device)  # (c,)
    allowed = (j <= i - int(strict)) | (j == 0)  # (c, c)
    ceiling = torch.full(allowed.shape, math.inf, dtype=o.dtype, device=o.device)
    return ceiling.masked_fill_(~allowed, -math.inf)


def _mask_scores_(s: Tensor, start: int, strict: bool) -> Tensor:
    """Masks the scores s (B, c, end) of query rows [start, end) in place; returns s."""
    end = s.shape[-1]
    s[:, :, start:end].clamp_max_(_score_ceiling(start, end, strict, s))
    return s


# P = exp(x) as exp2(x log2(e)): torch's CPU exp measured ~12x slower than exp2, and
# ~70x where x is so negative that P is denormal (unscaled dot scores).
_LOG2E = 1.4426950408889634


def _softmax_lse(s: Tensor, lse: Optional[Tensor]) -> Tensor:
    """softmax_j(s_ij) of s (B, c, e); writes L_i = log sum_j exp(s_ij) into lse.

    lse: (B, c, 1). The largest weight of a row is exp(m - L) = 1 / sum_j exp(s_ij -
    m) >= 1 / e, with m the row's largest score: it never underflows, so L = m -
    log(max_j p_ij) costs two max passes instead of a second pass of exp.
    """
    p = torch.softmax(s, -1)
    if lse is not None:
        lse.copy_(s.amax(-1, keepdim=True) - p.amax(-1, keepdim=True).log())
    return p


def _product_attention_blocks(
    q: Tensor, o: Tensor, block: int, strict: bool, lse: Optional[Tensor]
) -> Tensor:
    """context_i = sum_{j allowed} softmax_j(q_i . o_j) o_j, block by block: (B, T, D).

    Writes each row's log-sum-exp of its scores into ``lse`` (B, T, 1) if given.
    """
    steps = o.shape[1]
    contexts = []
    for start in range(0, steps, block):  # blocks of query rows, not steps
        end = min(start + block, steps)
        keys = o[:, :end]  # (B, end, D)
        s = _mask_scores_(
            torch.bmm(q[:, start:end], keys.transpose(1, 2)), start, strict
        )
        p = _softmax_lse(s, None if lse is None else lse[:, start:end])  # (B, c, end)
        contexts.append(torch.bmm(p, keys))  # (B, c, D)
    return torch.cat(contexts, 1)  # (B, T, D)


class _ProductAttentionFn(torch.autograd.Function):
    """Blocked causal/strict attention c = softmax(q o^T + mask) o, with its backward.

    Saves q, o, c and each row's log-sum-exp L_i (B, T, 1), not the weights (B x T x
    T / 2 in all): backward recomputes a block's P_ij = exp(q_i . o_j - L_i), one
    block at a time, as FlashAttention does. With g = dL/dc and delta_i = g_i . c_i:
        dL/do_j += sum_i P_ij g_i                          (o as values)
        dS_ij    = P_ij (g_i . o_j - delta_i)              (softmax backward)
        dL/dq_i  = sum_j dS_ij o_j
        dL/do_j += sum_i dS_ij q_i                         (o as keys)
    accumulated in place, so no block allocates a full-size gradient. Under
    ``create_graph=True`` backward differentiates the plain blocks instead, so second
    derivatives are exact.
    """

    @staticmethod
    def forward(ctx, q: Tensor, o: Tensor, block: int, strict: bool) -> Tensor:
        lse = o.new_empty(o.shape[0], o.shape[1], 1)  # (B, T, 1)
        context = _product_attention_blocks(q, o, block, strict, lse)
        ctx.block, ctx.strict = block, strict
        ctx.save_for_backward(q, o, context, lse)
        return context

    @staticmethod
    def backward(ctx, grad: Tensor):
        q, o, context, lse = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: differentiate the plain blocks

            def plain(q, o):
                return (_product_attention_blocks(q, o, ctx.block, ctx.strict, None),)

            grads = kernel_recompute_grads(plain, [q, o], ctx.needs_input_grad, [grad])
            return (*grads, None, None)
        delta = (grad * context).sum(-1, keepdim=True)  # (B, T, 1)
        grad_q = torch.empty_like(q)
        grad_o = torch.zeros_like(o)
        steps = o.shape[1]
        for start in range(0, steps, ctx.block):
            end = min(start + ctx.block, steps)
            g, keys, qs = grad[:, start:end], o[:, :end], q[:, start:end]
            # the forward's weights P_ij = 2^((s_ij - L_i) log2(e)): (B, c, end)
            p = torch.bmm(qs, keys.transpose(1, 2)).sub_(lse[:, start:end])
            p = _mask_scores_(p.mul_(_LOG2E), start, ctx.strict).exp2_()
            grad_o[:, :end].baddbmm_(p.transpose(1, 2), g)
            ds = torch.bmm(g, keys.transpose(1, 2)).sub_(delta[:, start:end]).mul_(p)
            grad_q[:, start:end] = torch.bmm(ds, keys)  # (B, c, D)
            grad_o[:, :end].baddbmm_(ds.transpose(1, 2), qs)
        return grad_q, grad_o, None, None


def product_attention(q: Tensor, o: Tensor, block: int, strict: bool) -> Tensor:
    """Blocked product attention; the hand-written backward when training.

    TorchScript and torch.compile cannot trace an autograd.Function: they take the
    plain blocks, whose autograd gives the same gradients.
    """
    training = torch.is_grad_enabled() and (q.requires_grad or o.requires_grad)
    if not training or torch.jit.is_scripting() or torch.compiler.is_compiling():
        return _product_attention_blocks(q, o, block, strict, None)
    return _ProductAttentionFn.apply(q, o, block, strict)


class StepAttention(nn.Module):
    """Attention over earlier steps; subclasses define the projections and scores.

    Each subclass defines ``context(o)``: context_i = sum_{j allowed} softmax_j(s_ij)
    o_j for all i, (B, T, D).

    ``forward(o, lengths)`` returns ``context`` (``combine="replace"``, (B, T, D)) or
    ``[o; context]`` (``combine="concat"``, (B, T, 2D)), padded rows zero.
    """

    use_sdpa: Optional[bool]

    def __init__(
        self,
        size: int,
        mask: str = "causal",
        combine: str = "replace",
        scale: bool = False,
    ):
        super().__init__()
        if mask not in ("causal", "strict"):
            raise ValueError(f"attention mask must be causal or strict: {mask!r}")
        if combine not in ("replace", "concat"):
            raise ValueError(
                f"attention combine must be replace or concat: {combine!r}"
            )
        self.size = size
        self.mask = mask
        self.combine = combine
        self.scale = scale
        self.factor = 1.0 / math.sqrt(size) if scale else 1.0
        # Queries are processed in blocks of at most max_rows rows (so that long
        # causal inputs skip most of the upper triangle) whose scores hold at most
        # max_block elements: B x rows x T (x D for additive).
        self.max_rows = 64
        self.max_block = 1 << 21
        # Elements per score: 1 for products, D for additive's tanh(q_i + k_j).
        self.score_width = 1
        # Dot products on F.scaled_dot_product_attention: None = on CUDA only.
        self.use_sdpa = None

    def extra_repr(self) -> str:
        options = f"mask={self.mask}, combine={self.combine}, scale={self.scale}"
        return f"{self.size}, {options}"

    def forward(self, o: Tensor, lengths: Optional[Tensor] = None) -> Tensor:
        context = self.guarded_context(o)  # (B, T, D)
        out = context if self.combine == "replace" else torch.cat([o, context], -1)
        if lengths is not None:
            steps = torch.arange(o.shape[1], device=o.device)  # (T,)
            valid = steps < lengths.to(o.device)[:, None]  # (B, T)
            out = out.masked_fill(~valid[..., None], 0.0)
        return out

    def step(self, o: Tensor, memory: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
        """One step of `forward`, for `RecurrentModel.step`: the output at step t
        from o_t (B, D) and the memory of the steps before it, and that memory
        with step t added; see `step_attention` for its form."""
        return step_attention(self, o, memory)

    def guarded_context(self, o: Tensor) -> Tensor:
        """``context(o)``, where a NaN or inf at step t reaches only the rows i >= t.

        Blocked scores and SDPA weigh a block's masked later keys by zero, and 0 * NaN
        is NaN: a non-finite o_t would reach the earlier rows of its block, forward
        and backward. So unless o is finite, each sequence's steps from its first
        non-finite one on are zeroed first (masked_fill: no gradient flows through
        them) and the rows that see them, i >= t under either mask (o_i is row i's
        query), are NaN after. On CPU, one sum tells whether o is finite; on other
        devices that would be a sync, so the guard always runs there.
        """
        cheap_check = o.device.type == "cpu" and not torch.compiler.is_compiling()
        if cheap_check and math.isfinite(float(o.detach().sum())):
            return self.context(o)
        finite = torch.isfinite(o).all(-1)  # (B, T)
        sees_non_finite = (~finite).cumsum(1)[..., None] > 0  # (B, T, 1)
        context = self.context(o.masked_fill(sees_non_finite, 0.0))
        return context.masked_fill(sees_non_finite, math.nan)

    def block_size(self, o: Tensor) -> int:
        """Query rows per block: at most ``max_rows``, and ``max_block`` scores."""
        batch, steps, _ = o.shape
        rows = self.max_block // max(1, batch * steps * self.score_width)
        return max(1, min(steps, self.max_rows, rows))


class ProductAttention(StepAttention):
    """Scores that are dot products s_ij = q_i . o_j (dot and general attention).

    Run as blocked matmuls with a hand-written backward (``_ProductAttentionFn``), or
    on ``F.scaled_dot_product_attention``: ``use_sdpa=None`` picks SDPA on CUDA and
    the blocked matmuls on CPU, where they measured faster.
    """

    def queries(self, o: Tensor) -> Tensor:
        """q_i, unscaled: (B, T, D). Dot attention's queries are the outputs."""
        return o

    def context(self, o: Tensor) -> Tensor:
        use_sdpa = self.use_sdpa
        if o.is_cuda if use_sdpa is None else use_sdpa:
            return self.sdpa_context(o)
        q = self.queries(o)
        q = q * self.factor if self.scale else q  # (B, T, D)
        block, strict = self.block_size(o), self.mask == "strict"
        return product_attention(q, o, block, strict)

    def sdpa_context(self, o: Tensor) -> Tensor:
        """The same context from ``F.scaled_dot_product_attention``: (B, T, D)."""
        q = self.queries(o)
        if self.mask == "causal":
            return F.scaled_dot_product_attention(
                q, o, o, is_causal=True, scale=self.factor
            )
        if o.shape[1] == 1:
            return o.clone()
        # strict: query i >= 1 sees keys 0..i-1, a causal mask over queries 1..T-1
        # and keys 0..T-2; step 0 keeps o_0.
        keys = o[:, :-1]  # (B, T-1, D)
        context = F.scaled_dot_product_attention(
            q[:, 1:], keys, keys, is_causal=True, scale=self.factor
        )
        return torch.cat([o[:, :1], context], 1)  # (B, T, D)


class DotAttention(ProductAttention):
    """s_ij = o_i . o_j (/ sqrt(D) with scale): the queries are the outputs."""


class GeneralAttention(ProductAttention):
    """s_ij = (W o_i + b) . o_j (/ sqrt(D) with scale); W, b: ``self.query``."""

    def __init__(
        self,
        size: int,
        mask: str = "causal",
        combine: str = "replace",
        scale: bool = False,
    ):
        super().__init__(size, mask, combine, scale)
        self.query = nn.Linear(size, size)

    def queries(self, o: Tensor) -> Tensor:
        return self.query(o)


def _additive_tanh(q: Tensor, k: Tensor) -> Tensor:
    """t_ij = tanh(q_i + k_j) for q (B, c, D), k (B, e, D): (B, c, e, D).

    On CPU as 2 sigmoid(2x) - 1, in place: torch's CPU tanh measured ~5x slower than
    its sigmoid, and this tensor is additive attention's main cost. Out of place when
    autograd records it (TorchScript training, double backward): sigmoid_'s result
    must stay intact for its own backward.
    """
    x = q[:, :, None] + k[:, None]  # (B, c, e, D)
    if x.device.type != "cpu":
        return x.tanh() if x.requires_grad else x.tanh_()
    if x.requires_grad:
        return torch.sigmoid(x * 2) * 2 - 1
    return x.mul_(2).sigmoid_().mul_(2).sub_(1)


def _additive_attention_blocks(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    o: Tensor,
    block: int,
    strict: bool,
    lse: Optional[Tensor],
) -> Tensor:
    """context_i = sum_{j allowed} softmax_j(v . tanh(q_i + k_j)) o_j: (B, T, D).

    Block by block; writes each row's log-sum-exp into ``lse`` (B, T, 1) if given.
    """
    steps = o.shape[1]
    contexts = []
    for start in range(0, steps, block):  # blocks of query rows, not steps
        end = min(start + block, steps)
        t = _additive_tanh(q[:, start:end], k[:, :end])  # (B, c, end, D)
        s = _mask_scores_(t @ v, start, strict)  # (B, c, end)
        p = _softmax_lse(s, None if lse is None else lse[:, start:end])  # (B, c, end)
        contexts.append(torch.bmm(p, o[:, :end]))  # (B, c, D)
    return torch.cat(contexts, 1)  # (B, T, D)


class _AdditiveAttentionFn(torch.autograd.Function):
    """Blocked causal/strict c = softmax(s + mask) o, s_ij = v . tanh(q_i + k_j).

    Saves q, k, v, o, c and the rows' log-sum-exp L_i (B, T, 1); backward recomputes
    t_ij = tanh(q_i + k_j) and P_ij = exp(v . t_ij - L_i) one block at a time (neither
    is stored). With g, delta and dS as in ``_ProductAttentionFn``:
        dL/do_j += sum_i P_ij g_i,         dL/dv = sum_ij dS_ij t_ij,
        u_ij = dS_ij (1 - t_ij^2) v,       dL/dq_i = sum_j u_ij,  dL/dk_j = sum_i u_ij.
    Under ``create_graph=True`` it differentiates the plain blocks instead.
    """

    @staticmethod
    def forward(ctx, q, k, v, o, block: int, strict: bool) -> Tensor:
        lse = o.new_empty(o.shape[0], o.shape[1], 1)  # (B, T, 1)
        context = _additive_attention_blocks(q, k, v, o, block, strict, lse)
        ctx.block, ctx.strict = block, strict
        ctx.save_for_backward(q, k, v, o, context, lse)
        return context

    @staticmethod
    def backward(ctx, grad: Tensor):
        q, k, v, o, context, lse = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: differentiate the plain blocks

            def plain(q, k, v, o):
                blocks = _additive_attention_blocks(
                    q, k, v, o, ctx.block, ctx.strict, None
                )
                return (blocks,)

            inputs = [q, k, v, o]
            grads = kernel_recompute_grads(plain, inputs, ctx.needs_input_grad, [grad])
            return (*grads, None, None)
        delta = (grad * context).sum(-1, keepdim=True)  # (B, T, 1)
        grad_q, grad_k = torch.empty_like(q), torch.zeros_like(k)
        grad_v, grad_o = torch.zeros_like(v), torch.zeros_like(o)
        steps = o.shape[1]
        for start in range(0, steps, ctx.block):
            end = min(start + ctx.block, steps)
            g, values = grad[:, start:end], o[:, :end]  # (B, c, D), (B, end, D)
            t = _additive_tanh(q[:, start:end], k[:, :end])  # (B, c, end, D)
            # the forward's weights P_ij = 2^((s_ij - L_i) log2(e)): (B, c, end)
            p = (t @ v).sub_(lse[:, start:end])
            p = _mask_scores_(p.mul_(_LOG2E), start, ctx.strict).exp2_()
            grad_o[:, :end].baddbmm_(p.transpose(1, 2), g)
            ds = torch.bmm(g, values.transpose(1, 2)).sub_(delta[:, start:end]).mul_(p)
            grad_v += ds.reshape(1, -1).mm(t.reshape(-1, t.shape[-1]))[0]
            u = t.square_().neg_().add_(1).mul_(ds[..., None]).mul_(v)  # (B,c,end,D)
            grad_q[:, start:end] = u.sum(2)
            grad_k[:, :end] += u.sum(1)
        return grad_q, grad_k, grad_v, grad_o, None, None


def additive_attention(
    q: Tensor, k: Tensor, v: Tensor, o: Tensor, block: int, strict: bool
) -> Tensor:
    """Blocked additive attention; the hand-written backward when training."""
    training = torch.is_grad_enabled() and (
        q.requires_grad or k.requires_grad or v.requires_grad or o.requires_grad
    )
    if not training or torch.jit.is_scripting() or torch.compiler.is_compiling():
        return _additive_attention_blocks(q, k, v, o, block, strict, None)
    return _AdditiveAttentionFn.apply(q, k, v, o, block, strict)


class AdditiveAttention(StepAttention):
    """s_ij = v . tanh(W_q o_i + b_q + W_k o_j) (/ sqrt(D) with scale).

    W_q, b_q: ``self.query``; W_k: ``self.key`` (no bias); v: ``self.v`` (D,). The
    (B, block, T, D) tanh tensor is bounded by ``max_block`` (8 MiB in float32: it
    stays in cache) and recomputed in backward rather than stored.
    """

    def __init__(
        self,
        size: int,
        mask: str = "causal",
        combine: str = "replace",
        scale: bool = False,
    ):
        super().__init__(size, mask, combine, scale)
        self.query = nn.Linear(size, size)
        self.key = nn.Linear(size, size, bias=False)
        self.v = nn.Parameter(torch.empty(size))
        nn.init.uniform_(self.v, -1.0 / math.sqrt(size), 1.0 / math.sqrt(size))
        self.score_width = size

    def context(self, o: Tensor) -> Tensor:
        q, k = self.query(o), self.key(o)  # (B, T, D), (B, T, D)
        v = self.v * self.factor if self.scale else self.v  # (D,)
        block, strict = self.block_size(o), self.mask == "strict"
        return additive_attention(q, k, v, o, block, strict)


def step_attention(
    attention: nn.Module, o: Tensor, memory: Optional[Tensor]
) -> tuple[Tensor, Tensor]:
    """Attention's output at step t from o_t (B, D) and the `memory` of the t steps
    before it: (B, t, D), the recurrent outputs, for dot and general attention;
    (B, t, 2D) for additive attention, each output followed by its key W_k o_j (so
    no key is computed twice); None or t = 0 at the start.

    Returns the output (B, D), or (B, 2D) with concat, as `attention.forward` gives
    at row t of the whole sequence, and the memory with step t appended. causal:
    keys j <= t; strict: j < t, and step 0's context is o_0 itself.
    """
    batch, size = o.shape[0], o.shape[1]
    key = getattr(attention, "key", None)  # additive attention's W_k
    width = size if key is None else 2 * size
    if memory is None:
        memory = o.new_zeros(batch, 0, width)
    if (
        not isinstance(memory, Tensor)
        or memory.dim() != 3
        or memory.shape[0] != batch
        or memory.shape[2] != width
    ):
        got = type(memory).__name__
        if isinstance(memory, Tensor):
            got = f"{memory.dtype} tensor of shape {tuple(memory.shape)}"
        raise ValueError(f"Expected memory of shape ({batch}, t, {width}), got {got}")
    new = o if key is None else torch.cat([o, key(o)], 1)  # (B, D or 2D)
    memory = torch.cat([memory, new.unsqueeze(1)], 1)  # (B, t + 1, ·)
    strict = attention.mask == "strict" and memory.shape[1] > 1
    seen = memory[:, :-1] if strict else memory  # (B, n, ·): the keys allowed
    values = seen[:, :, :size]  # (B, n, D)
    if key is None:
        q = attention.queries(o)  # (B, D)
        q = q * attention.factor if attention.scale else q
        s = torch.bmm(values, q.unsqueeze(2))  # (B, n, 1)
    else:
        v = attention.v * attention.factor if attention.scale else attention.v
        t = torch.tanh(attention.query(o).unsqueeze(1) + seen[:, :, size:])
        s = torch.matmul(t, v).unsqueeze(2)  # (B, n, 1)
    p = torch.softmax(s, 1)
    context = torch.bmm(p.transpose(1, 2), values).squeeze(1)  # (B, D)
    if attention.combine == "concat":
        return torch.cat([o, context], 1), memory
    return context, memory
