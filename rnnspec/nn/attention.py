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

Everything is computed for all steps at once, in blocks of query rows: block
[start, end) only needs the keys j < end (the lower triangle), and its scores take
B x (end - start) x end elements (x D for additive), so long sequences never hold a
B x T x T (or B x T x T x D) tensor. Key 0 is allowed for every row (for strict, this
is what makes context_0 = o_0), so no softmax row is ever empty and nothing is NaN.

With ``lengths``, a valid step i < length only ever sees keys j <= i < length, so keys
past a sequence's end never reach its valid rows; padded rows are set to zero.
"""

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _attention_mask(start: int, end: int, strict: bool, device: torch.device) -> Tensor:
    """Keys j < end that each query i in [start, end) may see: bool (end - start, end).

    causal: j <= i. strict: j < i, plus key 0 for row 0, whose softmax over that one
    key is 1, so that context_0 = o_0. Key 0 is allowed on every row anyway.
    """
    i = torch.arange(start, end, device=device)[:, None]  # (c, 1)
    j = torch.arange(end, device=device)  # (end,)
    return (j <= i - int(strict)) | (j == 0)  # (c, end)


class StepAttention(nn.Module):
    """Attention over earlier steps; subclasses define the projections and scores.

    ``forward(o, lengths)`` returns ``context`` (``combine="replace"``, (B, T, D)) or
    ``[o; context]`` (``combine="concat"``, (B, T, 2D)), padded rows zero.
    """

    # Largest score block, in elements: B x block x T (x D for additive). Larger
    # inputs are processed in blocks of query rows of at most this size.
    max_block: int = 1 << 22
    # Elements per score: 1 for products, D for additive's tanh(q_i + k_j) vectors.
    _score_width: int = 1

    def __init__(
        self, size: int, mask: str = "causal", combine: str = "replace", scale: bool = False
    ):
        super().__init__()
        if mask not in ("causal", "strict"):
            raise ValueError(f"attention mask must be causal or strict, not {mask!r}")
        if combine not in ("replace", "concat"):
            raise ValueError(f"attention combine must be replace or concat, not {combine!r}")
        self.size = size
        self.mask = mask
        self.combine = combine
        self.scale = scale
        self.factor = 1.0 / math.sqrt(size) if scale else 1.0

    def extra_repr(self) -> str:
        return (
            f"{self.size}, mask={self.mask!r}, combine={self.combine!r}, "
            f"scale={self.scale}"
        )

    def forward(self, o: Tensor, lengths: Optional[Tensor] = None) -> Tensor:
        context = self.context(o)  # (B, T, D)
        out = context if self.combine == "replace" else torch.cat([o, context], -1)
        if lengths is not None:
            steps = torch.arange(o.shape[1], device=o.device)  # (T,)
            valid = steps < lengths.to(o.device)[:, None]  # (B, T)
            out = out.masked_fill(~valid[..., None], 0.0)
        return out

    def project(self, o: Tensor) -> Tuple[Tensor, Tensor]:
        """Queries and keys for the scores, each (B, T, .)."""
        raise NotImplementedError

    def scores(self, q: Tensor, k: Tensor) -> Tensor:
        """Scores (B, c, e) of queries q (B, c, .) over keys k (B, e, .), scaled."""
        raise NotImplementedError

    def block_size(self, o: Tensor) -> int:
        """Query rows per block, so that a score block stays within ``max_block``."""
        batch, steps, _ = o.shape
        per_row = batch * steps * self._score_width
        return max(1, min(steps, self.max_block // max(per_row, 1)))

    def context(self, o: Tensor) -> Tensor:
        """context_i = sum_{j allowed} softmax_j(s_ij) o_j, for all i: (B, T, D)."""
        steps = o.shape[1]
        q, k = self.project(o)
        block = self.block_size(o)
        strict = self.mask == "strict"
        contexts = []
        for start in range(0, steps, block):  # blocks of query rows, not steps
            end = min(start + block, steps)
            s = self.scores(q[:, start:end], k[:, :end])  # (B, c, end)
            allowed = _attention_mask(start, end, strict, o.device)  # (c, end)
            s = s.masked_fill(~allowed, -math.inf)
            contexts.append(torch.softmax(s, -1) @ o[:, :end])  # (B, c, D)
        return torch.cat(contexts, 1)  # (B, T, D)


class ProductAttention(StepAttention):
    """Scores that are dot products s_ij = q_i . o_j (dot and general attention).

    These can also run on ``F.scaled_dot_product_attention``: ``use_sdpa`` None picks
    it on CUDA, and the blocked matmuls on CPU, where they measured faster.
    """

    use_sdpa: Optional[bool] = None

    def queries(self, o: Tensor) -> Tensor:
        """q_i, unscaled: (B, T, D)."""
        raise NotImplementedError

    def project(self, o: Tensor) -> Tuple[Tensor, Tensor]:
        q = self.queries(o)
        return (q * self.factor if self.scale else q), o  # (B, T, D), (B, T, D)

    def scores(self, q: Tensor, k: Tensor) -> Tensor:
        return q @ k.transpose(1, 2)  # (B, c, e)

    def context(self, o: Tensor) -> Tensor:
        use_sdpa = o.is_cuda if self.use_sdpa is None else self.use_sdpa
        if not use_sdpa:
            return super().context(o)
        q = self.queries(o)
        if self.mask == "causal":
            return F.scaled_dot_product_attention(
                q, o, o, is_causal=True, scale=self.factor
            )
        if o.shape[1] == 1:
            return o
        # strict: query i >= 1 sees keys 0..i-1, a causal mask over queries 1..T-1
        # and keys 0..T-2; step 0 keeps o_0.
        keys = o[:, :-1]  # (B, T-1, D)
        context = F.scaled_dot_product_attention(
            q[:, 1:], keys, keys, is_causal=True, scale=self.factor
        )
        return torch.cat([o[:, :1], context], 1)  # (B, T, D)


class DotAttention(ProductAttention):
    """s_ij = o_i . o_j (/ sqrt(D) with scale)."""

    def queries(self, o: Tensor) -> Tensor:
        return o


class GeneralAttention(ProductAttention):
    """s_ij = (W o_i + b) . o_j (/ sqrt(D) with scale); W, b: ``self.query``."""

    def __init__(
        self, size: int, mask: str = "causal", combine: str = "replace", scale: bool = False
    ):
        super().__init__(size, mask, combine, scale)
        self.query = nn.Linear(size, size)

    def queries(self, o: Tensor) -> Tensor:
        return self.query(o)


class _AdditiveScores(torch.autograd.Function):
    """s_ij = v . tanh(q_i + k_j), keeping no (B, c, e, D) tensor for backward.

    With t_ij = tanh(q_i + k_j) and g_ij = dL/ds_ij, backward recomputes t and uses
    dL/dv = sum_ij g_ij t_ij and dL/dq_i = sum_j u_ij, dL/dk_j = sum_i u_ij with
    u_ij = g_ij (1 - t_ij^2) * v.
    """

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        ctx.save_for_backward(q, k, v)
        t = (q[:, :, None] + k[:, None]).tanh_()  # (B, c, e, D)
        return t @ v  # (B, c, e)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        q, k, v = ctx.saved_tensors
        t = (q[:, :, None] + k[:, None]).tanh_()  # (B, c, e, D)
        grad_v = (grad.flatten()[None] @ t.flatten(0, 2))[0]  # (D,)
        u = t.square_().neg_().add_(1).mul_(grad[..., None]).mul_(v)  # (B, c, e, D)
        return u.sum(2), u.sum(1), grad_v


class AdditiveAttention(StepAttention):
    """s_ij = v . tanh(W_q o_i + b_q + W_k o_j) (/ sqrt(D) with scale).

    W_q, b_q: ``self.query``; W_k: ``self.key`` (no bias); v: ``self.v`` (D,). The
    (B, block, T, D) tanh tensor is bounded by ``max_block`` and recomputed in
    backward rather than stored.
    """

    max_block: int = 1 << 24

    def __init__(
        self, size: int, mask: str = "causal", combine: str = "replace", scale: bool = False
    ):
        super().__init__(size, mask, combine, scale)
        self.query = nn.Linear(size, size)
        self.key = nn.Linear(size, size, bias=False)
        self.v = nn.Parameter(torch.empty(size))
        nn.init.uniform_(self.v, -1.0 / math.sqrt(size), 1.0 / math.sqrt(size))
        self._score_width = size

    def project(self, o: Tensor) -> Tuple[Tensor, Tensor]:
        return self.query(o), self.key(o)  # (B, T, D), (B, T, D)

    def scores(self, q: Tensor, k: Tensor) -> Tensor:
        v = self.v * self.factor if self.scale else self.v
        return _AdditiveScores.apply(q, k, v)  # (B, c, e)
