"""Layer-normalised GRU cell: `LayerNormGRU`, a `CustomGRU` whose two gate
projections are layer-normalised (gains only: the biases follow the norm).

a = LN(W_ih x; γ_ih) + b_ih     b = LN(W_hh h; γ_hh) + b_hh     (3H, gates r, z, n)
r = σ(a_r + b_r)    z = σ(a_z + b_z)    n = tanh(a_n + r ⊙ b_n)
h' = (1 - z) ⊙ n + z ⊙ h

LN(v; γ) = γ ⊙ (v - mean(v)) / sqrt(var(v) + 1e-5) over the whole 3H vector of a
row (biased variance; 1e-5 is written out where used, as TorchScript reads no
global floats).

Recurrent dropout and zoneout (design section 9) run inside the step:
b = LN(W_hh (m ⊙ h); γ_hh) + b_hh with the sequence's mask m (z ⊙ h reads h
itself), and h' = d ⊙ h + (1 - d) ⊙ h̃', h̃' the update above.
"""

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .gru import CustomGRU
from .kernel import (
    KernelStepWeight,
    KernelThreads,
    kernel_final_rows,
    kernel_init_grad,
    kernel_linear,
    kernel_offsets,
    kernel_order,
    kernel_prev_range,
    kernel_recompute_grads,
    kernel_runs_plain,
    kernel_spans,
    kernel_state_rows,
    kernel_state_rows_grad,
    kernel_sum,
    kernel_tanh,
    kernel_threads,
    kernel_weight_grad,
)
from .stack import (
    kernel_check_impl,
)


def lngru_norm_backward(
    grad: Tensor,
    v: Tensor,
    mean: Tensor,
    rstd: Tensor,
    gain: Tensor,
    bias: Optional[Tensor],
    mask: List[bool],
):
    """LayerNorm's backward over the rows of v (N, 3H), from the gradient of
    LN(v; γ) + β and the row statistics the forward kept: the gradients of v, γ and
    β that `mask` asks for (None for the others), torch's fused kernel. Those of γ
    and β are the sums over rows of grad ⊙ v̂ and of grad, v̂ = (v - mean) · rstd."""
    mask = [mask[0], mask[1], mask[2] and bias is not None]
    return torch.ops.aten.native_layer_norm_backward(
        grad, v, [v.shape[1]], mean, rstd, gain, bias, mask
    )


class LayerNormGRUKernelFunction(torch.autograd.Function):
    """One direction of one layer-normalised GRU layer (equations in LayerNormGRU).

    Forward: the input projection of every step is one matmul and one LayerNorm
    over all rows; each step normalises its W_hh h_{t-1}, keeping the row
    statistics (mean, 1/std). Backward (`LayerNormGRUBackward`): as
    GRUKernelFunction's, with LayerNorm's backward between the gradient of
    LN(W_hh h_{t-1}) and the matmul that carries it to h_{t-1}; a span of steps at a
    time, whose rows then go into the weights' gradients (one matmul each per span)
    and the gains' and biases' (sums over rows), and into dx.

    Regularizers (design section 9), applied inside the step, no gradient, None
    where off: `rec_mask` (B, H), recurrent dropout, scales the matmul's input
    only (b = LN(W_hh (m ⊙ h_{t-1})); z ⊙ h_{t-1} reads the state itself);
    `zone_h` (N, H), zoneout, one row per packed row: h_t = d h_{t-1} + (1 - d) h̃_t.
    """

    @staticmethod
    def forward(
        ctx,
        x,
        w_ih,
        b_ih,
        w_hh,
        b_hh,
        g_ih,
        g_hh,
        h0,
        batch_sizes,
        reverse,
        rec_mask=None,
        zone_h=None,
    ):
        H = h0.shape[1]
        with KernelThreads(kernel_threads(6.0 * H * x.shape[0] * x.shape[1])):
            xw = kernel_linear(x, w_ih)  # (N, 3H)
            gates, mean_x, rstd_x = torch.native_layer_norm(  # gates: a, then r, z, n
                xw, [3 * H], g_ih, b_ih, 1e-5
            )
        hs = x.new_empty(xw.shape[0], H)  # (N, H) outputs h_t
        gs, outs = gates.split(batch_sizes), hs.split(batch_sizes)
        zones = None if zone_h is None else zone_h.split(batch_sizes)
        hws_: List[Tensor] = [xw] * len(gs)  # W_hh (m ⊙ h_{t-1}), before the norm
        means: List[Tensor] = [mean_x] * len(gs)  # (size, 1) each, by step
        rstds: List[Tensor] = [rstd_x] * len(gs)
        done: List[Tensor] = []
        h = h0[:0]
        with KernelThreads(kernel_threads(6.0 * batch_sizes[0] * H * H)):
            w_step = KernelStepWeight(w_hh, batch_sizes[0], len(gs))
            for t in kernel_order(len(gs), reverse):
                size = batch_sizes[t]
                h_prev = kernel_state_rows(h, h0, size, done)
                h_in = h_prev if rec_mask is None else h_prev * rec_mask[:size]
                hws_[t] = hw = w_step.mm(h_in)  # (size, 3H)
                b, means[t], rstds[t] = torch.native_layer_norm(
                    hw, [3 * H], g_hh, b_hh, 1e-5
                )
                a = gs[t]
                r, z = a[:, : 2 * H].add_(b[:, : 2 * H]).sigmoid_().chunk(2, 1)
                n = a[:, 2 * H :].addcmul_(r, b[:, 2 * H :])
                kernel_tanh(n, out=n)
                if zones is None:
                    h = torch.addcmul(n, z, h_prev - n, out=outs[t])  # (1 - z) n + z h
                else:  # h̃_t, then h_t = h̃_t + d (h_{t-1} - h̃_t)
                    h = torch.addcmul(n, z, h_prev - n)
                    h = torch.addcmul(h, zones[t], h_prev - h, out=outs[t])
        hws = torch.cat(hws_)  # (N, 3H)
        ctx.save_for_backward(
            x, w_ih, b_ih, w_hh, b_hh, g_ih, g_hh, h0, gates, hs,
            xw, mean_x, rstd_x, hws, torch.cat(means), torch.cat(rstds),
            rec_mask, zone_h,
        )  # fmt: skip
        ctx.plan = (batch_sizes, reverse)
        return hs, kernel_final_rows(h, done)

    @staticmethod
    def backward(ctx, d_hs, d_hn):
        saved = ctx.saved_tensors
        batch_sizes, reverse = ctx.plan
        if torch.is_grad_enabled():  # create_graph=True: differentiate the plain steps
            rec_mask, zone_h = saved[16], saved[17]

            def plain(x, w_ih, b_ih, w_hh, b_hh, g_ih, g_hh, h0):
                xa = lngru_project(x, w_ih, b_ih, g_ih)
                return lngru_kernel_plain(
                    xa, w_hh, b_hh, g_hh, h0, batch_sizes, reverse, rec_mask, zone_h
                )

            grads = kernel_recompute_grads(
                plain, list(saved[:8]), ctx.needs_input_grad, [d_hs, d_hn]
            )
            return (*grads, None, None, None, None)
        x, h0 = saved[0], saved[7]
        H, rows = h0.shape[1], x.shape[0] / LNGRU_BACKWARD_PARTS
        threads = (
            kernel_threads(6.0 * batch_sizes[0] * H * H),  # a step's product
            kernel_threads(6.0 * rows * H * max(H, x.shape[1])),  # a span's weight grad
        )
        back = LayerNormGRUBackward(
            saved, d_hs, d_hn, ctx.plan, ctx.needs_input_grad, threads
        )
        return (*back.run(), None, None, None, None)


#: Step spans of the backward (`kernel_spans`): its temporaries stay within about
#: 1/parts of the rows forward saved, with one product over rows per span.
LNGRU_BACKWARD_PARTS = 8


class LayerNormGRUBackward:
    """LayerNormGRUKernelFunction's hand-written backward (first order).

    Every gradient of b = LN(W_hh (m ⊙ h_{t-1})) + b_hh at a step is dh̃_t times a
    factor db known from the forward. A span of steps at a time (`kernel_spans`,
    in the order the steps run backwards), `factors` forms the span's db; `steps`
    runs its steps on `step_threads`, each scaling its rows of db by dh̃_t; then
    `fold_hh` and `fold_ih`, on `threads` (what a span's products earn), add the
    span's rows to the gradients that are sums over rows (weights, gains, biases)
    and write its rows of dx. So apart from dx (N, input) and the returned
    gradients, only one span's rows are held at a time. With zoneout, d ⊙ dh_t
    goes straight to h_{t-1} and dh̃_t = (1 - d) dh_t; with recurrent dropout the
    matmul's gradient to h_{t-1} and its input rows are masked.
    """

    def __init__(self, saved, d_hs, d_hn, plan, need, threads: Tuple[int, int]):
        self.x, self.w_ih, self.b_ih, w_hh, self.b_hh, self.g_ih, self.g_hh = saved[:7]
        self.h0, self.gates, self.hs, self.xw, self.mean_x, self.rstd_x = saved[7:13]
        self.hws, self.mean_h, self.rstd_h, self.rec_mask, zone_h = saved[13:]
        self.batch_sizes, self.reverse = plan
        self.need = need  # ctx.needs_input_grad: x, w_ih, b_ih, w_hh, b_hh, g's, h0
        self.need_a = need[0] or need[1] or need[2] or need[5]  # the gradient of a
        self.step_threads, self.threads = threads
        sizes, H = self.batch_sizes, self.h0.shape[1]
        self.offsets = kernel_offsets(sizes)
        self.d_hn = d_hn
        self.d_outs, self.zs = d_hs.split(sizes), self.gates[:, H : 2 * H].split(sizes)
        self.hws_ = self.hws.split(sizes)
        self.means, self.rstds = self.mean_h.split(sizes), self.rstd_h.split(sizes)
        self.zones = None if zone_h is None else zone_h.split(sizes)
        self.w_back = KernelStepWeight(w_hh.t(), sizes[0], len(sizes))
        self.init_grads: List[Tensor] = []
        self.dh = d_hn[:0]  # gradient of the state the next-run step started from
        self.dx = self.x.new_empty(self.x.shape) if need[0] else None  # (N, input)
        self.d_wih_t: Optional[Tensor] = None  # the sums over rows, span by span
        self.d_bih: Optional[Tensor] = None
        self.d_gih: Optional[Tensor] = None
        self.d_whh_t: Optional[Tensor] = None
        self.d_bhh: Optional[Tensor] = None
        self.d_ghh: Optional[Tensor] = None

    def run(self) -> List[Optional[Tensor]]:
        """The gradients of the Function's 8 tensor inputs (None where unneeded)."""
        for span in kernel_spans(self.batch_sizes, self.reverse, LNGRU_BACKWARD_PARTS):
            self.span(span)
        kernel_state_rows_grad(self.dh, self.d_hn, 0, self.init_grads)
        dh0 = kernel_init_grad(self.init_grads)
        with KernelThreads(self.threads):
            d_wih, d_whh = (
                None if g is None else g.t().contiguous()
                for g in (self.d_wih_t, self.d_whh_t)
            )  # (3H, input), (3H, H)
        return [
            self.dx, d_wih, self.d_bih, d_whh,
            self.d_bhh, self.d_gih, self.d_ghh, dh0,
        ]  # fmt: skip

    def span(self, span: List[int]) -> None:
        """Steps [t0, t1): their factors and steps, then their rows folded in; each
        temporary is dropped once used, so that the next does not add to it."""
        H = self.h0.shape[1]
        r0, r1 = self.offsets[span[0]], self.offsets[span[1]]
        with KernelThreads(self.step_threads):
            db, q_n, h_prev = self.factors(span, r0, r1)
            self.steps(span, db, q_n)
        with KernelThreads(self.threads):
            self.fold_hh(span, r0, r1, db, h_prev)
            del h_prev
            if self.need_a:
                db[:, 2 * H :] = q_n  # db is now the gradient of a
                del q_n
                self.fold_ih(r0, r1, db)

    def factors(self, span: List[int], r0: int, r1: int) -> Tuple[Tensor, ...]:
        """The span's db = d b / dh̃ (rows, 3H: r, z, n), q_n = d(pre-tanh n) / dh̃
        = (1 - z)(1 - n²) (rows, H), and h_{t-1} (rows, H)."""
        H = self.h0.shape[1]
        r, z, n = self.gates[r0:r1].chunk(3, 1)  # (rows, H) each
        b_n = (self.hws[r0:r1, 2 * H :] - self.mean_h[r0:r1]).mul_(self.rstd_h[r0:r1])
        b_n.mul_(self.g_hh[2 * H :])  # (rows, H) b's n part
        if self.b_hh is not None:
            b_n += self.b_hh[2 * H :]
        h_prev = kernel_prev_range(
            self.hs, self.h0, self.batch_sizes, self.offsets, self.reverse, span
        )
        keep = 1 - z
        q_n = torch.mul(n, n).neg_().add_(1).mul_(keep)
        db = self.gates.new_empty(r1 - r0, 3 * H)
        db_r, db_z, db_n = db.chunk(3, 1)
        torch.mul(q_n, r, out=db_n)
        torch.mul(db_n, b_n, out=db_r).mul_(1 - r)
        torch.sub(h_prev, n, out=db_z).mul_(z).mul_(keep)
        return db, q_n, h_prev

    def steps(self, span: List[int], db: Tensor, q_n: Tensor) -> None:
        """The span's steps, in the order they run backwards, each scaling its rows
        of db and (where a's gradient is needed) q_n by dh̃_t in place."""
        t0, t1 = span
        H, sizes = self.h0.shape[1], self.batch_sizes[t0:t1]
        dbs, q_ns = db.split(sizes), q_n.split(sizes)
        g_hh, only_v = self.g_hh, [True, False, False]
        dh = self.dh
        for t in range(t0, t1) if self.reverse else range(t1 - 1, t0 - 1, -1):
            j, size = t - t0, self.batch_sizes[t]
            dh = kernel_state_rows_grad(dh, self.d_hn, size, self.init_grads)
            dh = dh + self.d_outs[t]
            carry: Optional[Tensor] = None
            if self.zones is not None:  # d ⊙ dh_t to h_{t-1}, dh̃_t = dh_t - d ⊙ dh_t
                carry = self.zones[t] * dh
                dh.sub_(carry)
            dbs[j].view(size, 3, H).mul_(dh.unsqueeze(1))
            if self.need_a:
                q_ns[j].mul_(dh)
            dhw, _, _ = lngru_norm_backward(
                dbs[j], self.hws_[t], self.means[t], self.rstds[t], g_hh, None, only_v
            )  # (size, 3H)
            if self.rec_mask is None:
                dh = self.w_back.addmm_(dh * self.zs[t], dhw)  # (size, H)
            else:
                mm = self.w_back.mm(dhw)
                dh = torch.addcmul(dh * self.zs[t], mm, self.rec_mask[:size])
            if carry is not None:
                dh.add_(carry)
        self.dh = dh

    def fold_hh(
        self, span: List[int], r0: int, r1: int, db: Tensor, h_prev: Tensor
    ) -> None:
        """The span's rows into the gradients of γ_hh, b_hh and W_hh = Σ dhwᵀ (m ⊙
        h_{t-1}), dhw (rows, 3H) the gradient of W_hh (m ⊙ h_{t-1}): LayerNorm's
        backward of db once more, over all the span's rows at once (each step took
        its rows' share for its matmul and dropped it)."""
        need = self.need
        hws, mean, rstd = self.hws[r0:r1], self.mean_h[r0:r1], self.rstd_h[r0:r1]
        dhw, d_g, d_b = lngru_norm_backward(
            db, hws, mean, rstd, self.g_hh, self.b_hh, [need[3], need[6], need[4]]
        )
        self.d_ghh = kernel_sum(self.d_ghh, d_g)
        self.d_bhh = kernel_sum(self.d_bhh, d_b)
        if dhw is not None:
            h_in = h_prev
            if self.rec_mask is not None:  # what the matmul read
                sizes = self.batch_sizes[span[0] : span[1]]
                h_in = torch.cat([self.rec_mask[:size] for size in sizes]).mul_(h_prev)
            part = kernel_weight_grad(dhw, h_in, transposed=True)  # (H, 3H)
            self.d_whh_t = kernel_sum(self.d_whh_t, part)

    def fold_ih(self, r0: int, r1: int, da: Tensor) -> None:
        """From the gradient da (rows, 3H) of a = LN(W_ih x; γ_ih) + b_ih of the
        span's rows: their rows of dx, and their share of the gradients of W_ih,
        γ_ih and b_ih (dx last: oneDNN copies x for the weight's product)."""
        need = self.need
        dxw, d_g, d_b = lngru_norm_backward(
            da,
            self.xw[r0:r1],
            self.mean_x[r0:r1],
            self.rstd_x[r0:r1],
            self.g_ih,
            self.b_ih,
            [need[0] or need[1], need[5], need[2]],
        )  # dxw (rows, 3H)
        self.d_gih = kernel_sum(self.d_gih, d_g)
        self.d_bih = kernel_sum(self.d_bih, d_b)
        if need[1]:
            part = kernel_weight_grad(dxw, self.x[r0:r1], transposed=True)
            self.d_wih_t = kernel_sum(self.d_wih_t, part)
        if self.dx is not None:
            self.dx[r0:r1] = kernel_linear(dxw, self.w_ih.t())  # (rows, input)


def lngru_project(
    x: Tensor, w_ih: Tensor, b_ih: Optional[Tensor], g_ih: Tensor
) -> Tensor:
    """(N, 3H) LN(W_ih x; γ_ih) + b_ih of every row at once: one matmul, one norm."""
    xw = torch.mm(x, w_ih.t())
    return F.layer_norm(xw, [xw.shape[1]], g_ih, b_ih, 1e-5)


def lngru_kernel_plain(
    xa: Tensor,
    w_hh: Tensor,
    b_hh: Optional[Tensor],
    g_hh: Tensor,
    h0: Tensor,
    batch_sizes: List[int],
    reverse: bool,
    rec_mask: Optional[Tensor] = None,
    zone_h: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """LayerNormGRUKernelFunction's forward step for step, left to autograd."""
    H = h0.shape[1]
    w_t = w_hh.t()
    xs = xa.split(batch_sizes)
    zones: List[Tensor] = [] if zone_h is None else zone_h.split(batch_sizes)
    hs: List[Tensor] = []
    done: List[Tensor] = []
    h = h0[:0]
    for j in range(len(xs)):
        t = len(xs) - 1 - j if reverse else j
        size = batch_sizes[t]
        h_prev = kernel_state_rows(h, h0, size, done)
        h_in = h_prev if rec_mask is None else h_prev * rec_mask[:size]
        b = F.layer_norm(torch.mm(h_in, w_t), [3 * H], g_hh, b_hh, 1e-5)
        a = xs[t]
        r, z = torch.add(a[:, : 2 * H], b[:, : 2 * H]).sigmoid().chunk(2, 1)
        n = kernel_tanh(torch.addcmul(a[:, 2 * H :], r, b[:, 2 * H :]))
        h = torch.addcmul(n, z, h_prev - n)
        if zone_h is not None:  # h_t = h̃_t + d (h_{t-1} - h̃_t)
            h = torch.addcmul(h, zones[t], h_prev - h)
        hs.append(h)
    if reverse:
        hs.reverse()
    return torch.cat(hs), kernel_final_rows(h, done)


def lngru_kernel_layer(
    x: Tensor,
    w_ih: Tensor,
    b_ih: Optional[Tensor],
    w_hh: Tensor,
    b_hh: Optional[Tensor],
    g_ih: Tensor,
    g_hh: Tensor,
    h0: Tensor,
    batch_sizes: List[int],
    reverse: bool,
    rec_mask: Optional[Tensor] = None,
    zone_h: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """(N, H) outputs and (B, H) final state of one layer-normalised GRU
    layer-direction; the masks as LayerNormGRUKernelFunction takes them."""
    if torch.jit.is_scripting() or kernel_runs_plain(x):
        xa = lngru_project(x, w_ih, b_ih, g_ih)
        return lngru_kernel_plain(
            xa, w_hh, b_hh, g_hh, h0, batch_sizes, reverse, rec_mask, zone_h
        )
    out, h_n = LayerNormGRUKernelFunction.apply(
        x,
        w_ih,
        b_ih,
        w_hh,
        b_hh,
        g_ih,
        g_hh,
        h0,
        batch_sizes,
        reverse,
        rec_mask,
        zone_h,
    )
    return out, h_n


class LayerNormGRU(CustomGRU):
    """GRU with layer-normalised gate projections (x = input, h = previous state):

        a = LN(W_ih x; γ_ih) + b_ih     b = LN(W_hh h; γ_hh) + b_hh   (3H: r, z, n)
        r = σ(a_r + b_r)    z = σ(a_z + b_z)    n = tanh(a_n + r ⊙ b_n)
        h' = (1 - z) ⊙ n + z ⊙ h

    LN normalises the whole 3H vector (biased variance, eps 1e-5) and scales it by a
    gain; the biases after it are torch's. torch's GRU parameters (drawn as nn.GRU
    draws them) plus `weight_ln_ih_l{k}[_reverse]` and `weight_ln_hh_l{k}[_reverse]`
    (3H,), ones at init. Always our kernel (impl "custom" or "auto"); the other
    keywords (`options`) are CustomGRU's: the stack's options (residual, initial
    state) apply as to any GRU.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device=None,
        dtype=None,
        *,
        impl: str = "custom",
        **options,
    ):
        kernel_check_impl(impl, ("custom", "auto"))  # torch has no layer-norm GRU
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            device,
            dtype,
            impl=impl,
            **options,
        )
        suffixes = ["", "_reverse"] if bidirectional else [""]
        names = [
            f"weight_ln_{side}_l{k}{s}"
            for k in range(num_layers)
            for s in suffixes
            for side in ("ih", "hh")
        ]
        self._layer_norm_names = names
        for name in names:  # no random draws: torch's weights stay nn.GRU's
            gain = torch.ones(3 * hidden_size, device=device, dtype=dtype)
            setattr(self, name, nn.Parameter(gain))
        self._init_flat_weights()

    def _init_flat_weights(self) -> None:
        # torch refreshes its weight list here (init, .to(), changed weights); keep
        # ours with it, as a plain list so that TorchScript sees List[Tensor]
        super()._init_flat_weights()
        names = getattr(self, "_layer_norm_names", [])
        self._flat_layer_norms = [getattr(self, n) for n in names if hasattr(self, n)]

    def _weights_have_changed(self) -> bool:
        gains = zip(self._flat_layer_norms, self._layer_norm_names, strict=True)
        replaced = any(g is not getattr(self, n) for g, n in gains)
        return replaced or super()._weights_have_changed()

    def _kernel_defers_to_torch(self, input, lengths: Optional[Tensor]) -> bool:
        return False

    def _kernel_layer(
        self,
        x: Tensor,
        k: int,
        state: List[Tensor],
        batch_sizes: List[int],
        reverse: bool,
        masks: List[Optional[Tensor]],
    ) -> Tuple[Tensor, List[Tensor]]:
        w_ih, w_hh, b_ih, b_hh = self._kernel_weights(k, masks)
        g_ih, g_hh = self._flat_layer_norms[2 * k], self._flat_layer_norms[2 * k + 1]
        out, h_n = lngru_kernel_layer(
            x,
            w_ih,
            b_ih,
            w_hh,
            b_hh,
            g_ih,
            g_hh,
            state[0],
            batch_sizes,
            reverse,
            rec_mask=masks[0],
            zone_h=masks[1],
        )
        return out, [h_n]
