"""Layer-normalised LSTM cell: `LayerNormLSTM`, a `CustomLSTM` (Ba et al. 2016).

a = LN(W_ih x; γ_ih) + LN(W_hh h; γ_hh) + b_ih + b_hh     (4H: gates i, f, g, o)
i, f, g, o = σ(a_i), σ(a_f), tanh(a_g), σ(a_o)           (+ p ⊙ c with peepholes)
c' = f ⊙ c + i ⊙ g
h' = o ⊙ tanh(LN(c'; γ_c, β_c))                          (then W_hr h' with proj)

LN(v; γ, β) = γ ⊙ (v - mean v) / sqrt(var v + 1e-5) + β over the whole vector
(biased variance; eps written as a literal, which TorchScript needs). The gate
norms have gains only: b_ih + b_hh is their bias.

Recurrent dropout and zoneout (design section 9) run inside the step:
LN(W_hh (m ⊙ h)) with the sequence's mask m, and h' = d ⊙ h + (1 - d) ⊙ h̃',
c' = d^c ⊙ c + (1 - d^c) ⊙ c̃', h̃' computed from the un-zoned c̃'.
"""

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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
from .lstm import CustomLSTM, lstm_backward_factors
from .peephole import PeepholesLoadAsZero


def lnlstm_norm_grad(
    grad: Tensor, v: Tensor, mean: Tensor, rstd: Tensor, gain: Tensor
) -> Tensor:
    """Gradient of v (rows) through γ ⊙ (v - mean) rstd, from the saved statistics."""
    mask = [True, False, False]
    shape = [v.shape[1]]
    return torch.ops.aten.native_layer_norm_backward(
        grad, v, shape, mean, rstd, gain, None, mask
    )[0]


class LNLSTMKernelFunction(torch.autograd.Function):
    """One direction of one layer-normalised LSTM layer (equations in LayerNormLSTM).

    Forward: the input part γ_ih LN(W_ih x) + b of every step at once (one matmul,
    one normalisation over all rows), then per step the recurrent matmul, its
    normalisation, the gates and LN(c); it saves the pre-normalisation rows and
    their statistics. Backward runs LayerNorm's backward inside the recurrence (of
    LN(c) and of LN(W_hh h), per step, from the saved statistics); the weight and
    gain gradients are then one matmul or one reduction over all steps.

    Regularizers (design section 9), each applied inside the step: `rec_mask`
    (B, W), recurrent dropout, scales the matmul's input h_{t-1} (row j of a step
    by rec_mask[j]); `zone_h` (N, W) and `zone_c` (N, H), zoneout, one row per
    packed row, blend the new states with the previous ones, h_t = d h_{t-1} +
    (1 - d) h̃_t, after h̃_t and c̃_t are computed from the un-zoned c̃_t. They
    get no gradient; None where off.
    """

    @staticmethod
    def forward(
        ctx,
        x,
        w_ih,
        bias,
        w_hh,
        g_ih,
        g_hh,
        g_c,
        b_c,
        peep,
        w_hr,
        h0,
        c0,
        batch_sizes,
        reverse,
        rec_mask=None,
        zone_h=None,
        zone_c=None,
    ):
        H, W = c0.shape[1], h0.shape[1]
        G = 4 * H
        with KernelThreads(kernel_threads(2.0 * G * x.shape[0] * x.shape[1])):
            xw = kernel_linear(x, w_ih)  # (N, 4H) W_ih x of every row
            # gates: γ_ih LN(W_ih x) + b, each step completes its rows in place
            gates, mean_x, rstd_x = torch.native_layer_norm(xw, [G], g_ih, bias, 1e-5)
        cs = x.new_empty(gates.shape[0], H)  # (N, H) c̃_t (c_t unless zoned out)
        ms = torch.empty_like(cs)  # (N, H) o ⊙ tanh(LN(c̃_t)): h̃_t unless projected
        gs, css, mss = (t.split(batch_sizes) for t in (gates, cs, ms))
        # zoned out, the states h_t, c_t: (N, ·) rows that the steps write
        h_zoned = None if zone_h is None else x.new_empty(cs.shape[0], W)
        c_zoned = None if zone_c is None else torch.empty_like(cs)
        zones = (zone_h, zone_c, h_zoned, c_zoned)
        zhs, zcs, hzs, czs = (lnlstm_split(z, batch_sizes) for z in zones)
        steps = len(gs)
        rows: List[List[Tensor]] = [[] for _ in range(steps)]  # per step, in order
        h_done: List[Tensor] = []
        c_done: List[Tensor] = []
        h, c = h0[:0], c0[:0]
        with KernelThreads(kernel_threads(2.0 * G * batch_sizes[0] * W)):
            w_step = KernelStepWeight(w_hh, batch_sizes[0], steps)
            for t in kernel_order(steps, reverse):
                size = batch_sizes[t]
                h_prev = kernel_state_rows(h, h0, size, h_done)
                c_prev = kernel_state_rows(c, c0, size, c_done)
                h_in = h_prev if rec_mask is None else h_prev * rec_mask[:size]
                hw = w_step.mm(h_in)  # (size, 4H)
                norm_h, mean_h, rstd_h = torch.native_layer_norm(
                    hw, [G], g_hh, None, 1e-5
                )
                a = gs[t].add_(norm_h)  # (size, 4H) pre-activations
                i, f, g, o = a.chunk(4, 1)
                if peep is None:
                    a[:, : 2 * H].sigmoid_()  # i, f
                else:
                    a_if = a[:, : 2 * H].view(size, 2, H)  # i, f see c_{t-1}
                    p_if = peep[: 2 * H].view(2, H)
                    a_if.addcmul_(c_prev.unsqueeze(1), p_if).sigmoid_()
                kernel_tanh(g, out=g)
                c = torch.mul(f, c_prev, out=css[t]).addcmul_(i, g)
                if peep is not None:
                    o.addcmul_(c, peep[2 * H :])  # o sees c̃_t
                o.sigmoid_()
                norm_c, mean_c, rstd_c = torch.native_layer_norm(c, [H], g_c, b_c, 1e-5)
                h = kernel_tanh(norm_c, out=mss[t]).mul_(o)
                if w_hr is not None:
                    h = kernel_linear(h, w_hr)  # (size, P)
                if zcs is not None:  # c_t = c̃_t + d (c_{t-1} - c̃_t)
                    c = torch.addcmul(c, zcs[t], c_prev - c, out=czs[t])
                if zhs is not None:
                    h = torch.addcmul(h, zhs[t], h_prev - h, out=hzs[t])
                rows[t] = [hw, mean_h, rstd_h, norm_c, mean_c, rstd_c, h]
        hws, mean_h, rstd_h, norm_c, mean_c, rstd_c = (
            torch.cat([r[k] for r in rows]) for k in range(6)
        )
        hs = ms  # outputs h_t: h̃_t unless projected or zoned out
        if h_zoned is not None:
            hs = h_zoned
        elif w_hr is not None:
            hs = torch.cat([r[6] for r in rows])
        c_states = cs if c_zoned is None else c_zoned
        ctx.save_for_backward(
            *(x, w_ih, bias, w_hh, g_ih, g_hh, g_c, b_c, peep, w_hr, h0, c0),
            *(xw, mean_x, rstd_x, gates, hws, mean_h, rstd_h),
            *(cs, mean_c, rstd_c, norm_c, ms, hs),
            *(c_states, rec_mask, zone_h, zone_c),
        )
        ctx.plan = (batch_sizes, reverse)
        return hs, kernel_final_rows(h, h_done), kernel_final_rows(c, c_done)

    @staticmethod
    def backward(ctx, d_hs, d_hn, d_cn):
        saved = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: differentiate the plain steps
            batch_sizes, reverse = ctx.plan
            rec_mask, zone_h, zone_c = saved[26:29]

            def plain(*inputs):
                return lnlstm_kernel_plain(
                    *inputs, batch_sizes, reverse, rec_mask, zone_h, zone_c
                )

            grads = kernel_recompute_grads(
                plain, list(saved[:12]), ctx.needs_input_grad, [d_hs, d_hn, d_cn]
            )
            return (*grads, None, None, None, None, None)
        x, h0, c0 = saved[0], saved[10], saved[11]
        H, W, N = c0.shape[1], h0.shape[1], x.shape[0]
        threads = (
            kernel_threads(8.0 * ctx.plan[0][0] * W * H),  # a step's product
            kernel_threads(8.0 * N * H * max(W, x.shape[1])),  # a weight's gradient
        )
        grads = lnlstm_backward(
            saved, [d_hs, d_hn, d_cn], ctx.plan, ctx.needs_input_grad, threads
        )
        return (*grads, None, None, None, None, None)


def lnlstm_split(
    rows: Optional[Tensor], batch_sizes: List[int]
) -> Optional[List[Tensor]]:
    """(N, ·) packed rows (a zoneout mask) split by step; None stays None."""
    return None if rows is None else list(rows.split(batch_sizes))


def lnlstm_mask_rows(rec_mask: Tensor, batch_sizes: List[int]) -> Tensor:
    """(N, W) the recurrent-dropout mask of every packed row: row j of a step
    belongs to the j-th longest sequence, so a step's rows are rec_mask[:size]."""
    return torch.cat([rec_mask[:size] for size in batch_sizes])


def lnlstm_zone_grad(
    grad: Tensor,
    zone: Optional[List[Tensor]],
    t: int,
    out: Optional[Tensor] = None,
) -> Tuple[Tensor, Optional[Tensor]]:
    """Zoneout's adjoint at step t: from the gradient of a zoned state s_t =
    d s_{t-1} + (1 - d) s̃_t, that of s̃_t (into `out` if given) and the part
    d ⊙ grad that flows to s_{t-1} (None without zoneout: s_t is s̃_t)."""
    if zone is None:
        return grad, None
    carry = zone[t] * grad
    if out is None:
        return grad - carry, carry
    return torch.sub(grad, carry, out=out), carry


def lnlstm_backward(
    saved: Tuple[Tensor, ...],
    outputs_grads: List[Tensor],
    plan: Tuple[List[int], bool],
    needs: Tuple[bool, ...],
    threads: Tuple[int, int],
) -> List[Optional[Tensor]]:
    """LNLSTMKernelFunction's hand-written backward: the gradients of its 12 inputs,
    the steps on threads[0] of torch's threads, the rest on threads[1].

    The factors that do not depend on the recurrence come first, for all rows
    (`lstm_backward_factors`, with LN(c̃_t) in place of c_t: dz_{i,f,g} = dc̃_t P,
    dz_o = dm_t P_o, d LN(c̃_t) = dm_t K); the steps then run the two LayerNorm
    backwards and the recurrent matmul; the rest are reductions over all rows.
    With zoneout, d ⊙ dh_t goes straight to h_{t-1} and (1 - d) ⊙ dh_t to h̃_t
    (c likewise); with recurrent dropout the matmul's gradient is masked.
    """
    w_hh, g_hh, g_c, peep, w_hr = saved[3], saved[5], saved[6], saved[8], saved[9]
    c0, gates, (hws, mean_h, rstd_h) = saved[11], saved[15], saved[16:19]
    cs, mean_c, rstd_c, hs = saved[19], saved[20], saved[21], saved[24]
    c_states, rec_mask, zone_h, zone_c = saved[25:29]
    d_hs, d_hn, d_cn = outputs_grads
    batch_sizes, reverse = plan
    H = c0.shape[1]
    with KernelThreads(threads[0]):  # the steps, and the factors of all rows
        c_prev = kernel_prev_rows(c_states, c0, batch_sizes, reverse)  # (N, H) c_{t-1}
        dz, K = lstm_backward_factors(gates, c_prev, saved[22])  # dz holds P for now
        d_norm_c = torch.empty_like(cs)  # (N, H) gradient of LN(c̃_t)
        d_h = torch.empty_like(hs)  # (N, h width) gradient of h̃_t
        split = [t.split(batch_sizes) for t in (d_hs, dz, K, d_norm_c, d_h)]
        d_outs, dzs, Ks, d_norm_cs, d_hs_ = split
        d_hws_: List[Tensor] = list(dzs)  # per step: gradient of W_hh h_{t-1}
        saved_rows = [t.split(batch_sizes) for t in (cs, mean_c, rstd_c, hws)]
        css, mean_cs, rstd_cs, hws_ = saved_rows
        mean_hs, rstd_hs = mean_h.split(batch_sizes), rstd_h.split(batch_sizes)
        fs = gates[:, H : 2 * H].split(batch_sizes)
        zhs, zcs = lnlstm_split(zone_h, batch_sizes), lnlstm_split(zone_c, batch_sizes)
        h_grads: List[Tensor] = []
        c_grads: List[Tensor] = []
        dh, dc = d_hn[:0], d_cn[:0]  # gradients of the next-run step's start state
        w_back = KernelStepWeight(w_hh.t(), batch_sizes[0], len(dzs))
        for t in kernel_order(len(dzs), not reverse):
            size, dzt = batch_sizes[t], dzs[t]  # (size, 4H)
            dh = kernel_state_rows_grad(dh, d_hn, size, h_grads)
            if zhs is None:
                dh = torch.add(dh, d_outs[t], out=d_hs_[t])
                carry_h = None
            else:  # dh_t, then dh̃_t = (1 - d) dh_t
                dh, carry_h = lnlstm_zone_grad(dh + d_outs[t], zhs, t, d_hs_[t])
            dm = dh  # (size, H) gradient of o ⊙ tanh(LN(c̃_t))
            if w_hr is not None:
                dm = kernel_linear(dh, w_hr.t())
            dz_o = dzt[:, 3 * H :].mul_(dm)
            d_nc = torch.mul(dm, Ks[t], out=d_norm_cs[t])
            dc = kernel_state_rows_grad(dc, d_cn, size, c_grads)  # of c_t
            dc, carry_c = lnlstm_zone_grad(dc, zcs, t)  # of c̃_t, through c_t
            dc = dc + lnlstm_norm_grad(d_nc, css[t], mean_cs[t], rstd_cs[t], g_c)
            if peep is not None:
                dc.addcmul_(dz_o, peep[2 * H :])  # o saw c̃_t
            dzt[:, : 3 * H].view(size, 3, H).mul_(dc.unsqueeze(1))  # i, f, g
            d_hw = lnlstm_norm_grad(dzt, hws_[t], mean_hs[t], rstd_hs[t], g_hh)
            d_hws_[t] = d_hw
            dh = w_back.mm(d_hw)  # (size, h width)
            if rec_mask is not None:
                dh.mul_(rec_mask[:size])
            if carry_h is not None:
                dh.add_(carry_h)
            dc = dc * fs[t]
            if peep is not None:  # i and f saw c_{t-1}
                dc.addcmul_(dzt[:, :H], peep[:H]).addcmul_(
                    dzt[:, H : 2 * H], peep[H : 2 * H]
                )
            if carry_c is not None:
                dc.add_(carry_c)
        kernel_state_rows_grad(dh, d_hn, 0, h_grads)
        kernel_state_rows_grad(dc, d_cn, 0, c_grads)
    with KernelThreads(threads[1]):  # products and reductions over all rows
        d_hws = torch.cat(d_hws_)  # (N, 4H)
        rows = lnlstm_row_grads(saved, dz, d_hws, d_norm_c, d_h, c_prev, plan, needs)
    return rows + [kernel_init_grad(h_grads), kernel_init_grad(c_grads)]


def lnlstm_row_grads(
    saved: Tuple[Tensor, ...],
    dz: Tensor,
    d_hws: Tensor,
    d_norm_c: Tensor,
    d_h: Tensor,
    c_prev: Tensor,
    plan: Tuple[List[int], bool],
    needs: Tuple[bool, ...],
) -> List[Optional[Tensor]]:
    """Gradients of x and of every weight from the per-row gradients of the steps:
    one matmul or one LayerNorm backward over all rows each. A weight gradient
    dzᵀ v is (vᵀ dz)ᵀ: oneDNN then copies the narrower vᵀ, not dzᵀ. d_h is the
    gradient of h̃_t (of the projection's output)."""
    x, w_ih, bias, w_hh, g_ih, g_hh, g_c, b_c, peep, w_hr, h0, c0 = saved[:12]
    xw, mean_x, rstd_x, gates, hws, mean_h, rstd_h = saved[12:19]
    cs, mean_c, rstd_c, norm_c, ms, hs = saved[19:25]
    rec_mask = saved[26]
    batch_sizes, reverse = plan
    H, G = cs.shape[1], dz.shape[1]
    nlb = torch.ops.aten.native_layer_norm_backward
    mask = [needs[0] or needs[1], needs[4], needs[2]]  # LN's bias there is b
    d_xw, d_gih, d_bias = nlb(dz, xw, [G], mean_x, rstd_x, g_ih, bias, mask)
    dx = kernel_linear(d_xw, w_ih.t()) if needs[0] else None  # (N, input)
    d_wih = kernel_weight_grad(d_xw, x) if needs[1] else None  # (4H, input)
    d_whh: Optional[Tensor] = None
    if needs[3]:
        h_prev = kernel_prev_rows(hs, h0, batch_sizes, reverse)  # (N, h width)
        if rec_mask is not None:  # what the matmul read
            h_prev.mul_(lnlstm_mask_rows(rec_mask, batch_sizes))
        d_whh = kernel_weight_grad(d_hws, h_prev)  # (4H, h width)
    d_ghh = nlb(dz, hws, [G], mean_h, rstd_h, g_hh, None, [False, needs[5], False])[1]
    _, d_gc, d_bc = nlb(
        d_norm_c, cs, [H], mean_c, rstd_c, g_c, b_c, [False, needs[6], needs[7]]
    )
    d_peep: Optional[Tensor] = None
    if peep is not None and needs[8]:
        d_peep = torch.cat(
            [
                (dz[:, :H] * c_prev).sum(0),
                (dz[:, H : 2 * H] * c_prev).sum(0),
                (dz[:, 3 * H :] * cs).sum(0),
            ]
        )
    d_whr = None
    if w_hr is not None and needs[9]:
        d_whr = kernel_weight_grad(d_h, ms)  # (P, H)
    return [dx, d_wih, d_bias, d_whh, d_gih, d_ghh, d_gc, d_bc, d_peep, d_whr]


def lnlstm_kernel_plain(
    x: Tensor,
    w_ih: Tensor,
    bias: Optional[Tensor],
    w_hh: Tensor,
    g_ih: Tensor,
    g_hh: Tensor,
    g_c: Tensor,
    b_c: Tensor,
    peep: Optional[Tensor],
    w_hr: Optional[Tensor],
    h0: Tensor,
    c0: Tensor,
    batch_sizes: List[int],
    reverse: bool,
    rec_mask: Optional[Tensor] = None,
    zone_h: Optional[Tensor] = None,
    zone_c: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor, Tensor]:
    """LNLSTMKernelFunction's forward step for step, left to autograd."""
    H = c0.shape[1]
    G = 4 * H
    xn = F.layer_norm(torch.mm(x, w_ih.t()), [G], g_ih, bias, 1e-5)
    xs = xn.split(batch_sizes)
    zhs: List[Tensor] = [] if zone_h is None else zone_h.split(batch_sizes)
    zcs: List[Tensor] = [] if zone_c is None else zone_c.split(batch_sizes)
    w_t = w_hh.t()
    hs: List[Tensor] = []
    h_done: List[Tensor] = []
    c_done: List[Tensor] = []
    h, c = h0[:0], c0[:0]
    for j in range(len(xs)):
        t = len(xs) - 1 - j if reverse else j
        size = batch_sizes[t]
        h_prev = kernel_state_rows(h, h0, size, h_done)
        c_prev = kernel_state_rows(c, c0, size, c_done)
        h_in = h_prev if rec_mask is None else h_prev * rec_mask[:size]
        hw = F.layer_norm(torch.mm(h_in, w_t), [G], g_hh, None, 1e-5)
        a = xs[t] + hw  # (size, 4H)
        a_if = a[:, : 2 * H]
        if peep is not None:  # i, f see c_{t-1}
            p_if = peep[: 2 * H].view(2, H)
            a_if = a_if.view(size, 2, H).addcmul(c_prev.unsqueeze(1), p_if)
        i, f = a_if.sigmoid().view(size, 2 * H).chunk(2, 1)
        g = kernel_tanh(a[:, 2 * H : 3 * H])
        c = torch.addcmul(f * c_prev, i, g)  # c̃_t
        a_o = a[:, 3 * H :]
        if peep is not None:  # o sees c̃_t
            a_o = a_o.addcmul(c, peep[2 * H :])
        norm_c = F.layer_norm(c, [H], g_c, b_c, 1e-5)
        h = kernel_tanh(norm_c) * a_o.sigmoid()
        if w_hr is not None:
            h = torch.mm(h, w_hr.t())
        if zone_c is not None:  # c_t = c̃_t + d (c_{t-1} - c̃_t)
            c = torch.addcmul(c, zcs[t], c_prev - c)
        if zone_h is not None:
            h = torch.addcmul(h, zhs[t], h_prev - h)
        hs.append(h)
    if reverse:
        hs.reverse()
    return torch.cat(hs), kernel_final_rows(h, h_done), kernel_final_rows(c, c_done)


def lnlstm_kernel_layer(
    x: Tensor,
    w_ih: Tensor,
    bias: Optional[Tensor],
    w_hh: Tensor,
    norms: List[Tensor],
    peep: Optional[Tensor],
    w_hr: Optional[Tensor],
    h0: Tensor,
    c0: Tensor,
    batch_sizes: List[int],
    reverse: bool,
    rec_mask: Optional[Tensor] = None,
    zone_h: Optional[Tensor] = None,
    zone_c: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor, Tensor]:
    """(N, h width) outputs and (B, ·) final h, c of one layer-direction; `norms`
    are its γ_ih, γ_hh, γ_c, β_c; the masks as LNLSTMKernelFunction takes them."""
    g_ih, g_hh, g_c, b_c = norms[0], norms[1], norms[2], norms[3]
    if torch.jit.is_scripting() or kernel_runs_plain(x):
        return lnlstm_kernel_plain(
            x,
            w_ih,
            bias,
            w_hh,
            g_ih,
            g_hh,
            g_c,
            b_c,
            peep,
            w_hr,
            h0,
            c0,
            batch_sizes,
            reverse,
            rec_mask,
            zone_h,
            zone_c,
        )
    out, h_n, c_n = LNLSTMKernelFunction.apply(
        x,
        w_ih,
        bias,
        w_hh,
        g_ih,
        g_hh,
        g_c,
        b_c,
        peep,
        w_hr,
        h0,
        c0,
        batch_sizes,
        reverse,
        rec_mask,
        zone_h,
        zone_c,
    )
    return out, h_n, c_n


class LayerNormLSTM(PeepholesLoadAsZero, CustomLSTM):
    """LSTM with layer normalisation (Ba et al. 2016; x = input, h, c = state):

        a = LN(W_ih x; γ_ih) + LN(W_hh h; γ_hh) + b_ih + b_hh    (4H: i, f, g, o)
        i, f, g, o = σ(a_i), σ(a_f), tanh(a_g), σ(a_o)
        c' = f ⊙ c + i ⊙ g
        h' = o ⊙ tanh(LN(c'; γ_c, β_c))

    LN normalises the whole vector (4H or H; biased variance, eps 1e-5). With
    peephole=True, a_i += p_i ⊙ c, a_f += p_f ⊙ c and a_o += p_o ⊙ c' (PeepholeLSTM's
    terms); with proj_size=P, h' = W_hr (o ⊙ tanh(LN(c'))), P wide, as torch's.
    torch's LSTM parameters (drawn as nn.LSTM draws them), then per layer-direction
    `weight_ln_ih_l{k}`, `weight_ln_hh_l{k}` (4H, ones), `weight_ln_c_l{k}` (H,
    ones), `bias_ln_c_l{k}` (H, zeros) and with peepholes `weight_ch_l{k}` (3H,
    zeros), `_reverse` for the second direction: no random draws. A state dict
    without peepholes loads into a peephole model as p = 0. Always our kernel (impl
    "custom" or "auto").
    """

    peephole: bool
    _flat_layer_norms: List[Tensor]
    _flat_peepholes: List[Tensor]

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device=None,
        dtype=None,
        *,
        impl: str = "custom",
        peephole: bool = False,
        **options,
    ):
        if peephole is not True and peephole is not False:
            raise ValueError(f"Expected peephole True or False, got {peephole!r}")
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            proj_size,
            device,
            dtype,
            impl=impl,
            **options,
        )
        self.peephole = peephole
        H = hidden_size
        suffixes = ["", "_reverse"] if bidirectional else [""]
        layer_norms = [
            ("weight_ln_ih", 4 * H, 1.0),
            ("weight_ln_hh", 4 * H, 1.0),
            ("weight_ln_c", H, 1.0),
            ("bias_ln_c", H, 0.0),
        ]
        if peephole:
            layer_norms.append(("weight_ch", 3 * H, 0.0))
        norm_names: List[str] = []
        peephole_names: List[str] = []
        for k in range(num_layers):
            for s in suffixes:
                for stem, size, value in layer_norms:  # no random draws
                    name = f"{stem}_l{k}{s}"
                    names = peephole_names if stem == "weight_ch" else norm_names
                    names.append(name)
                    full = torch.full((size,), value, device=device, dtype=dtype)
                    setattr(self, name, nn.Parameter(full))
        self._layer_norm_names = norm_names
        self._peephole_names = peephole_names
        self._init_flat_weights()

    def _kernel_impls(self) -> Tuple[str, ...]:
        return ("custom", "auto")  # torch has no layer-normalised LSTM

    def _init_flat_weights(self) -> None:
        # torch refreshes its weight list here (init, .to(), changed weights); keep
        # ours with it, as plain lists so that TorchScript sees List[Tensor]
        super()._init_flat_weights()
        norms = getattr(self, "_layer_norm_names", [])
        peepholes = getattr(self, "_peephole_names", [])
        self._flat_layer_norms = [getattr(self, n) for n in norms if hasattr(self, n)]
        self._flat_peepholes = [getattr(self, n) for n in peepholes if hasattr(self, n)]

    def _weights_have_changed(self) -> bool:
        ours = zip(
            self._flat_layer_norms + self._flat_peepholes,
            self._layer_norm_names + self._peephole_names,
            strict=True,
        )
        replaced = any(p is not getattr(self, n) for p, n in ours)
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
        bias = b_ih + b_hh if b_ih is not None and b_hh is not None else None
        norms = self._flat_layer_norms[4 * k : 4 * k + 4]
        peep: Optional[Tensor] = None
        if self.peephole:
            peep = self._flat_peepholes[k]
        w_hr = self._kernel_proj_weight(k)
        out, h_n, c_n = lnlstm_kernel_layer(
            x,
            w_ih,
            bias,
            w_hh,
            norms,
            peep,
            w_hr,
            state[0],
            state[1],
            batch_sizes,
            reverse,
            rec_mask=masks[0],
            zone_h=masks[1],
            zone_c=masks[2],
        )
        return out, [h_n, c_n]

    def extra_repr(self) -> str:
        return super().extra_repr() + (", peephole=True" if self.peephole else "")
