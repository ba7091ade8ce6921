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
    kernel_order,
    kernel_prev_rows,
    kernel_recompute_grads,
    kernel_runs_plain,
    kernel_state_rows,
    kernel_state_rows_grad,
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
    statistics (mean, 1/std). Backward (`lngru_backward`): as GRUKernelFunction's,
    with LayerNorm's backward between the gradient of LN(W_hh h_{t-1}) and the
    matmul that carries it to h_{t-1}; after the loop, the weight gradients are one
    matmul over all steps and the gains' and biases' gradients sums over all rows.

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
        H, N = h0.shape[1], x.shape[0]
        threads = (
            kernel_threads(6.0 * batch_sizes[0] * H * H),  # a step's product
            kernel_threads(6.0 * N * H * max(H, x.shape[1])),  # a weight's gradient
        )
        grads = lngru_backward(
            saved, d_hs, d_hn, ctx.plan, ctx.needs_input_grad, threads
        )
        return (*grads, None, None, None, None)


def lngru_backward(
    saved: Tuple[Tensor, ...],
    d_hs: Tensor,
    d_hn: Tensor,
    plan: Tuple[List[int], bool],
    need: Tuple[bool, ...],
    threads: Tuple[int, int],
) -> List[Optional[Tensor]]:
    """LayerNormGRUKernelFunction's hand-written backward: the gradients of its 8
    tensor inputs, the steps on threads[0] of torch's threads, the rest on
    threads[1]. Every gradient of b = LN(·) + b_hh at a step is dh̃_t times a
    factor known from the forward (db), formed for all rows first. With zoneout,
    d ⊙ dh_t goes straight to h_{t-1} and dh̃_t = (1 - d) dh_t; with recurrent
    dropout the matmul's gradient to h_{t-1} and its input rows are masked."""
    x, w_ih, b_ih, w_hh, b_hh, g_ih, g_hh, h0, gates, hs = saved[:10]
    xw, mean_x, rstd_x, hws, mean_h, rstd_h, rec_mask, zone_h = saved[10:]
    batch_sizes, reverse = plan
    H = h0.shape[1]
    with KernelThreads(threads[0]):  # the steps, and the factors of all rows
        b_n = (hws[:, 2 * H :] - mean_h).mul_(rstd_h).mul_(g_hh[2 * H :])  # (N, H)
        if b_hh is not None:
            b_n += b_hh[2 * H :]
        r, z, n = gates.chunk(3, 1)
        h_prev = kernel_prev_rows(hs, h0, batch_sizes, reverse)  # (N, H) h_{t-1}
        q_n = (1 - z) * (1 - n * n)  # d pre-tanh n / dh̃_t
        db = torch.cat(  # d b / dh̃_t; each step multiplies its rows by dh̃ in place
            [q_n * b_n * r * (1 - r), (h_prev - n) * z * (1 - z), q_n * r], 1
        )  # (N, 3H)
        dhs = torch.empty_like(hs)  # (N, H) gradient of each h̃_t
        dhws = torch.empty_like(db)  # (N, 3H) gradient of W_hh (m ⊙ h_{t-1})
        d_outs, dbs, dhs_, dhws_, zs, hws_, means, rstds = (
            t.split(batch_sizes) for t in (d_hs, db, dhs, dhws, z, hws, mean_h, rstd_h)
        )
        zones = None if zone_h is None else zone_h.split(batch_sizes)
        only_v = [True, False, False]
        init_grads: List[Tensor] = []
        dh = d_hn[:0]  # gradient of the state the next-run step started from
        w_back = KernelStepWeight(w_hh.t(), batch_sizes[0], len(dbs))
        for t in kernel_order(len(dbs), not reverse):
            size = batch_sizes[t]
            dh = kernel_state_rows_grad(dh, d_hn, size, init_grads)
            carry: Optional[Tensor] = None
            if zones is None:
                dh = torch.add(dh, d_outs[t], out=dhs_[t])
            else:  # dh_t, then d ⊙ dh_t to h_{t-1} and dh̃_t = dh_t - d ⊙ dh_t
                dh = dh + d_outs[t]
                carry = zones[t] * dh
                dh = torch.sub(dh, carry, out=dhs_[t])
            dbs[t].view(size, 3, H).mul_(dh.unsqueeze(1))
            dhw, _, _ = lngru_norm_backward(
                dbs[t], hws_[t], means[t], rstds[t], g_hh, None, only_v
            )
            dhws_[t].copy_(dhw)
            if rec_mask is None:
                dh = w_back.addmm_(dh * zs[t], dhw)  # (size, H)
            else:
                dh = torch.addcmul(dh * zs[t], w_back.mm(dhw), rec_mask[:size])
            if carry is not None:
                dh.add_(carry)
        kernel_state_rows_grad(dh, d_hn, 0, init_grads)
    with KernelThreads(threads[1]):  # products and reductions over all rows
        d_whh: Optional[Tensor] = None
        if need[3]:
            if rec_mask is not None:  # what the matmul read
                h_prev.mul_(torch.cat([rec_mask[:size] for size in batch_sizes]))
            d_whh = kernel_weight_grad(dhws, h_prev)  # (3H, H)
        _, d_ghh, d_bhh = lngru_norm_backward(
            db, hws, mean_h, rstd_h, g_hh, b_hh, [False, need[6], need[4]]
        )
        torch.mul(dhs, q_n, out=db[:, 2 * H :])  # db is now the gradient of a
        dxw, d_gih, d_bih = lngru_norm_backward(
            db, xw, mean_x, rstd_x, g_ih, b_ih, [need[0] or need[1], need[5], need[2]]
        )
        dx = kernel_linear(dxw, w_ih.t()) if need[0] else None  # (N, input)
        d_wih = kernel_weight_grad(dxw, x) if need[1] else None  # (3H, input)
    dh0 = kernel_init_grad(init_grads)
    return [dx, d_wih, d_bih, d_whh, d_bhh, d_gih, d_ghh, dh0]


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
