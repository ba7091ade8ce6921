"""GRU cell: `CustomGRU`, a drop-in `nn.GRU` (gates r, z, n as torch).

r = σ(W_ir x + b_ir + W_hr h + b_hr)    z = σ(W_iz x + b_iz + W_hz h + b_hz)
n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
h' = (1 - z) ⊙ n + z ⊙ h

With recurrent dropout W_hh reads m ⊙ h (z ⊙ h reads h itself); with zoneout that h'
is h̃ and the state is d ⊙ h + (1 - d) ⊙ h̃: z becomes z' = d + (1 - d) ⊙ z.
"""

from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from .kernel import (
    kernel_final_rows,
    kernel_init_grad,
    kernel_input_grads,
    kernel_order,
    kernel_prev_rows,
    kernel_project,
    kernel_recompute_grads,
    kernel_runs_plain,
    kernel_state_rows,
    kernel_state_rows_grad,
    kernel_tanh,
)
from .stack import (
    KernelStackBase,
    kernel_check_impl,
)


class GRUKernelFunction(torch.autograd.Function):
    """One direction of one GRU layer; gates r, z, n as torch.

    Forward projects every step's input into the gate buffer, which each step then
    completes in place. Backward: with a = W_hh h_{t-1} + b_hh, every gradient of a
    step is dh_t times a factor known from the forward (da = dh_t q_a), so a step
    costs two elementwise ops and one matmul; the input side follows for all steps.

    The regularizers (design section 9), None when off: `rec_mask` (B, H), sorted
    by length, scales the matmul's input only: a = W_hh (m ⊙ h_{t-1}) + b_hh (the
    masked rows kept for dW_hh), while z ⊙ h_{t-1} reads the state itself;
    `zone_h` (N, H), one row per packed row: h_t = d ⊙ h_{t-1} + (1 - d) ⊙ h̃_t,
    which is h̃_t's formula with z replaced by z' = d + (1 - d) ⊙ z, kept for the
    backward (dh_{t-1} = z' ⊙ dh_t + ..., and every q_a gains a factor 1 - d).
    """

    @staticmethod
    def forward(
        ctx,
        x,
        w_ih,
        b_ih,
        w_hh,
        b_hh,
        h0,
        batch_sizes,
        reverse,
        rec_mask=None,
        zone_h=None,
    ):
        H = h0.shape[1]
        gates = kernel_project(x, w_ih, b_ih)  # (N, 3H): input part, then r, z, n
        hws = torch.empty_like(gates)  # (N, 3H) W_hh h_{t-1} + b_hh
        hs = x.new_empty(gates.shape[0], H)  # (N, H) outputs
        gs, hws_, outs = (t.split(batch_sizes) for t in (gates, hws, hs))
        hms = None if rec_mask is None else torch.empty_like(hs)  # m ⊙ h_{t-1}
        masked = outs if hms is None else hms.split(batch_sizes)
        zs = None  # (N, H) z' = d + (1 - d) z, for the backward
        zones = keeps = zs_ = outs  # unused without zoneout
        if zone_h is not None:
            zs = torch.empty_like(hs)
            zones, keeps = zone_h.split(batch_sizes), (1 - zone_h).split(batch_sizes)
            zs_ = zs.split(batch_sizes)
        w_t = w_hh.t()
        done: List[Tensor] = []
        h = h0[:0]
        for t in kernel_order(len(gs), reverse):
            size = batch_sizes[t]
            h_prev = kernel_state_rows(h, h0, size, done)
            h_in = h_prev
            if rec_mask is not None:
                h_in = torch.mul(h_prev, rec_mask[:size], out=masked[t])
            if b_hh is None:
                hw = torch.mm(h_in, w_t, out=hws_[t])  # (size, 3H)
            else:
                hw = torch.addmm(b_hh, h_in, w_t, out=hws_[t])
            a = gs[t]
            r, z = a[:, : 2 * H].add_(hw[:, : 2 * H]).sigmoid_().chunk(2, 1)
            n = a[:, 2 * H :].addcmul_(r, hw[:, 2 * H :])
            kernel_tanh(n, out=n)
            if zone_h is None:
                h = torch.addcmul(n, z, h_prev - n, out=outs[t])  # (1 - z) n + z h
            else:  # z' = d + (1 - d) z; lerp: h_{t-1} exactly where d = 1
                z = torch.addcmul(zones[t], keeps[t], z, out=zs_[t])
                h = torch.lerp(n, h_prev, z, out=outs[t])
        ctx.save_for_backward(
            x, w_ih, b_ih, w_hh, b_hh, h0, gates, hws, hs, hms, zs, rec_mask, zone_h
        )
        ctx.plan = (batch_sizes, reverse)
        return hs, kernel_final_rows(h, done)

    @staticmethod
    def backward(ctx, d_hs, d_hn):
        x, w_ih, b_ih, w_hh, b_hh, h0, gates, hws, hs = ctx.saved_tensors[:9]
        hms, zs, rec_mask, zone_h = ctx.saved_tensors[9:]
        batch_sizes, reverse = ctx.plan
        if torch.is_grad_enabled():  # create_graph=True: differentiate the plain steps

            def plain(x, w_ih, b_ih, w_hh, b_hh, h0):
                xw = kernel_project(x, w_ih, b_ih)
                return gru_kernel_plain(
                    xw, w_hh, b_hh, h0, batch_sizes, reverse, rec_mask, zone_h
                )

            inputs = [x, w_ih, b_ih, w_hh, b_hh, h0]
            grads = kernel_recompute_grads(
                plain, inputs, ctx.needs_input_grad, [d_hs, d_hn]
            )
            return (*grads, None, None, None, None)
        H = h0.shape[1]
        r, z, n = gates.chunk(3, 1)
        h_prev = kernel_prev_rows(hs, h0, batch_sizes, reverse)  # (N, H)
        q_n = (1 - z) * (1 - n * n)  # d pre-tanh n / dh̃_t
        q_z = (h_prev - n) * z * (1 - z)  # d pre-σ z / dh̃_t
        if zone_h is not None:  # dh̃_t = (1 - d) dh_t; z' in place of z
            keep = 1 - zone_h
            q_n.mul_(keep)
            q_z.mul_(keep)
            z = zs
        da = torch.cat([q_n * hws[:, 2 * H :] * r * (1 - r), q_z, q_n * r], 1)
        # da: (N, 3H) da / dh_t; each step multiplies its rows by dh in place
        dhs = torch.empty_like(hs)  # (N, H) total gradient of each h_t
        d_outs, das, dhs_, zs_ = (t.split(batch_sizes) for t in (d_hs, da, dhs, z))
        init_grads: List[Tensor] = []
        dh = d_hn[:0]  # gradient of the state the next-run step started from
        for t in kernel_order(len(das), not reverse):
            size = batch_sizes[t]
            dh = torch.add(
                kernel_state_rows_grad(dh, d_hn, size, init_grads),
                d_outs[t],
                out=dhs_[t],
            )
            das[t].view(size, 3, H).mul_(dh.unsqueeze(1))
            if rec_mask is None:
                dh = torch.addmm(dh * zs_[t], das[t], w_hh)  # (size, H)
            else:
                dh = torch.mm(das[t], w_hh).mul_(rec_mask[:size]).addcmul_(dh, zs_[t])
        kernel_state_rows_grad(dh, d_hn, 0, init_grads)
        d_whh = da.t() @ (h_prev if hms is None else hms)  # (3H, H)
        d_bhh = da.sum(0) if ctx.needs_input_grad[4] else None
        torch.mul(dhs, q_n, out=da[:, 2 * H :])  # da is now the input side's gradient
        dx, d_wih, d_bih = kernel_input_grads(ctx, da, x, w_ih)
        dh0 = kernel_init_grad(init_grads)
        return dx, d_wih, d_bih, d_whh, d_bhh, dh0, None, None, None, None


def gru_kernel_plain(
    xw: Tensor,
    w_hh: Tensor,
    b_hh: Optional[Tensor],
    h0: Tensor,
    batch_sizes: List[int],
    reverse: bool,
    rec_mask: Optional[Tensor] = None,
    zone_h: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """GRUKernelFunction's forward step for step, left to autograd."""
    H = h0.shape[1]
    w_t = w_hh.t()
    xs = xw.split(batch_sizes)
    zones, keeps = xs, xs
    if zone_h is not None:
        zones, keeps = zone_h.split(batch_sizes), (1 - zone_h).split(batch_sizes)
    hs: List[Tensor] = []
    done: List[Tensor] = []
    h = h0[:0]
    for j in range(len(xs)):
        t = len(xs) - 1 - j if reverse else j
        size = batch_sizes[t]
        h_prev = kernel_state_rows(h, h0, size, done)
        h_in = h_prev if rec_mask is None else h_prev * rec_mask[:size]
        if b_hh is None:
            hw = torch.mm(h_in, w_t)  # (size, 3H)
        else:
            hw = torch.addmm(b_hh, h_in, w_t)
        x = xs[t]
        r, z = torch.add(x[:, : 2 * H], hw[:, : 2 * H]).sigmoid().chunk(2, 1)
        n = kernel_tanh(torch.addcmul(x[:, 2 * H :], r, hw[:, 2 * H :]))
        if zone_h is None:
            h = torch.addcmul(n, z, h_prev - n)
        else:  # zoneout: z' = d + (1 - d) z
            h = torch.lerp(n, h_prev, torch.addcmul(zones[t], keeps[t], z))
        hs.append(h)
    if reverse:
        hs.reverse()
    return torch.cat(hs), kernel_final_rows(h, done)


def gru_kernel_layer(
    x: Tensor,
    w_ih: Tensor,
    b_ih: Optional[Tensor],
    w_hh: Tensor,
    b_hh: Optional[Tensor],
    h0: Tensor,
    batch_sizes: List[int],
    reverse: bool,
    rec_mask: Optional[Tensor] = None,
    zone_h: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """(N, H) outputs and (B, H) final state of one GRU layer-direction; the
    regularizer masks as `GRUKernelFunction` takes them (None: off)."""
    if torch.jit.is_scripting() or kernel_runs_plain(x):
        xw = kernel_project(x, w_ih, b_ih)
        return gru_kernel_plain(
            xw, w_hh, b_hh, h0, batch_sizes, reverse, rec_mask, zone_h
        )
    out, h_n = GRUKernelFunction.apply(
        x, w_ih, b_ih, w_hh, b_hh, h0, batch_sizes, reverse, rec_mask, zone_h
    )
    return out, h_n


class CustomGRU(KernelStackBase, nn.GRU):
    """`nn.GRU` with our kernel; gates as torch (x = input, h = previous state):

    r = σ(W_ir x + b_ir + W_hr h + b_hr)    z = σ(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
    h' = (1 - z) ⊙ n + z ⊙ h
    """

    impl: str

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
        residual: bool = False,
        initial_state: str = "zeros",
        recurrent_dropout: float = 0.0,
        weight_drop: float = 0.0,
        zoneout: float = 0.0,
        zoneout_cell: Optional[float] = None,
        locked_dropout: bool = False,
    ):
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias=bias,
            batch_first=batch_first,
            dropout=dropout,
            bidirectional=bidirectional,
            device=device,
            dtype=dtype,
        )
        self.impl = kernel_check_impl(impl, ("custom", "auto", "torch"))
        self._kernel_options(
            residual,
            initial_state,
            recurrent_dropout,
            weight_drop,
            zoneout,
            zoneout_cell,
            locked_dropout,
        )

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
        # b_hh stays inside r ⊙ (W_hn h + b_hn)
        out, h_n = gru_kernel_layer(
            x,
            w_ih,
            b_ih,
            w_hh,
            b_hh,
            state[0],
            batch_sizes,
            reverse,
            rec_mask=masks[0],
            zone_h=masks[1],
        )
        return out, [h_n]

    def forward(
        self,
        input: Tensor,
        hx: Optional[Tensor] = None,
        lengths: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Tensor]:
        return self._kernel_one_state_forward(input, hx, lengths)
