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
from .lstm import CustomLSTM, lstm_backward_factors, lstm_peephole_grad
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
            kernel_threads(N / 2 * H * max(W, x.shape[1])),  # a span's weight gradient
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
    the steps on threads[0] of torch's threads, a span's products on threads[1].

    A span of steps at a time (`kernel_spans`: a sixteenth of the rows), in the
    order the steps run backwards: the span's factors, its steps, then its share
    of every gradient that sums over rows (`LNLSTMBackward`). So the temporaries
    stay within a span's rows; dx, N rows, is the one full-size tensor made.
    """
    back = LNLSTMBackward(saved, outputs_grads, plan, needs, threads[1])
    with KernelThreads(threads[0]):
        for span in kernel_spans(plan[0], plan[1], 16):
            back.span(span)
    return back.grads()


class LNLSTMBackward:
    """The state of `lnlstm_backward` between spans: the gradients flowing
    into the next-run step (dh, dc), the initial state's pieces, and the sums over
    rows so far (`sums`: the weights', gains' and biases' gradients).

    The equations (with LN(c̃_t) in place of c_t in `lstm_backward_factors`):
    dz_{i,f,g} = dc̃_t P, dz_o = dm_t P_o, d LN(c̃_t) = dm_t K; a step runs the two
    LayerNorm backwards (of LN(c̃_t) and of LN(W_hh h_{t-1})) and the recurrent
    matmul. With zoneout, d ⊙ dh_t goes straight to h_{t-1} and (1 - d) ⊙ dh_t to
    h̃_t (c likewise); with recurrent dropout the matmul's gradient is masked.
    """

    def __init__(self, saved, grads, plan, needs, threads: int):
        self.saved, self.needs, self.threads = saved, needs, threads
        self.batch_sizes, self.reverse = plan
        self.offsets = kernel_offsets(self.batch_sizes)
        x, w_hh, c0, hs = saved[0], saved[3], saved[11], saved[24]
        self.d_outs = grads[0].split(self.batch_sizes)
        self.d_hn, self.d_cn = grads[1], grads[2]
        self.dh, self.dc = self.d_hn[:0], self.d_cn[:0]  # of the next-run step's start
        self.h_grads: List[Tensor] = []
        self.c_grads: List[Tensor] = []
        self.dx = torch.empty_like(x) if needs[0] else None  # (N, input)
        self.sums: List[Optional[Tensor]] = [None] * 10  # gradients of inputs 0-9
        sizes = self.batch_sizes
        self.w_back = KernelStepWeight(w_hh.t(), sizes[0], len(sizes))
        self.rows = [
            t.split(sizes) for t in saved[19:22] + saved[16:19]
        ]  # c̃, mean_c, rstd_c, W_hh h, mean_h, rstd_h: per step
        H = c0.shape[1]
        self.fs = saved[15][:, H : 2 * H].split(sizes)  # f_t, per step
        self.zhs = lnlstm_split(saved[27], sizes)
        self.zcs = lnlstm_split(saved[28], sizes)
        self.d_h_width = hs.shape[1]

    def add(self, k: int, part: Optional[Tensor]) -> None:
        """Adds a span's share to the gradient of input k."""
        self.sums[k] = kernel_sum(self.sums[k], part)

    def span(self, span: List[int]) -> None:
        """The steps t0..t1-1 of `span` after their factors, then their rows'
        share of the sums (`fold`)."""
        saved, (t0, t1) = self.saved, span
        r0, r1 = self.offsets[t0], self.offsets[t1]
        c_states, c0 = saved[25], saved[11]
        c_prev = kernel_prev_range(  # (rows, H) c_{t-1}
            c_states, c0, self.batch_sizes, self.offsets, self.reverse, span
        )
        dz, K = lstm_backward_factors(saved[15][r0:r1], c_prev, saved[22][r0:r1])
        d_norm_c = torch.empty_like(K)  # (rows, H) gradient of LN(c̃_t)
        d_h = dz.new_empty(r1 - r0, self.d_h_width)  # gradient of h̃_t
        d_hws: List[Tensor] = [dz] * (t1 - t0)  # per step: of W_hh h_{t-1}
        sizes = self.batch_sizes[t0:t1]
        split = [t.split(sizes) for t in (dz, K, d_norm_c, d_h)]
        order = range(t0, t1) if self.reverse else range(t1 - 1, t0 - 1, -1)
        for t in order:
            j = t - t0
            d_hws[j] = self.step(t, *(s[j] for s in split))
        with KernelThreads(self.threads):
            self.fold(span, dz, torch.cat(d_hws), d_norm_c, d_h, c_prev)

    def step(self, t: int, dzt: Tensor, K: Tensor, d_norm_c: Tensor, d_h: Tensor):
        """Step t backwards: dzt (size, 4H) holds P and becomes dz_t; returns the
        gradient of W_hh h_{t-1} (size, 4H)."""
        saved, size = self.saved, self.batch_sizes[t]
        g_hh, g_c, peep, w_hr, rec_mask = (saved[k] for k in (5, 6, 8, 9, 26))
        cs, mean_c, rstd_c, hws, mean_h, rstd_h = (rows[t] for rows in self.rows)
        H = cs.shape[1]
        dh = kernel_state_rows_grad(self.dh, self.d_hn, size, self.h_grads)
        if self.zhs is None:
            dh = torch.add(dh, self.d_outs[t], out=d_h)
            carry_h = None
        else:  # dh_t, then dh̃_t = (1 - d) dh_t
            dh, carry_h = lnlstm_zone_grad(dh + self.d_outs[t], self.zhs, t, d_h)
        dm = dh  # (size, H) gradient of o ⊙ tanh(LN(c̃_t))
        if w_hr is not None:
            dm = kernel_linear(dh, w_hr.t())
        dz_o = dzt[:, 3 * H :].mul_(dm)
        d_nc = torch.mul(dm, K, out=d_norm_c)
        dc = kernel_state_rows_grad(self.dc, self.d_cn, size, self.c_grads)  # of c_t
        dc, carry_c = lnlstm_zone_grad(dc, self.zcs, t)  # of c̃_t, through c_t
        dc = dc + lnlstm_norm_grad(d_nc, cs, mean_c, rstd_c, g_c)
        if peep is not None:
            dc.addcmul_(dz_o, peep[2 * H :])  # o saw c̃_t
        dzt[:, : 3 * H].view(size, 3, H).mul_(dc.unsqueeze(1))  # i, f, g
        d_hw = lnlstm_norm_grad(dzt, hws, mean_h, rstd_h, g_hh)
        dh = self.w_back.mm(d_hw)  # (size, h width)
        if rec_mask is not None:
            dh.mul_(rec_mask[:size])
        if carry_h is not None:
            dh.add_(carry_h)
        dc = dc * self.fs[t]
        if peep is not None:  # i and f saw c_{t-1}
            dc.addcmul_(dzt[:, :H], peep[:H]).addcmul_(
                dzt[:, H : 2 * H], peep[H : 2 * H]
            )
        if carry_c is not None:
            dc.add_(carry_c)
        self.dh, self.dc = dh, dc
        return d_hw

    def fold(self, span, dz, d_hws, d_norm_c, d_h, c_prev) -> None:
        """A span's rows into dx and the sums: one matmul or one LayerNorm
        backward each. dz, d_hws (rows, 4H): the gradients of the gates'
        pre-activations and of W_hh h_{t-1}; d_norm_c, of LN(c̃_t); d_h, of h̃_t."""
        x, w_ih, bias, _, g_ih, g_hh, g_c, b_c, peep, w_hr, h0 = self.saved[:11]
        xw, mean_x, rstd_x, _, hws, mean_h, rstd_h = self.saved[12:19]
        cs, mean_c, rstd_c, _, ms, hs = self.saved[19:25]
        rec_mask, needs = self.saved[26], self.needs
        r0, r1 = self.offsets[span[0]], self.offsets[span[1]]
        nlb = torch.ops.aten.native_layer_norm_backward
        G, H = dz.shape[1], cs.shape[1]
        mask = [needs[0] or needs[1], needs[4], needs[2]]  # LN's bias there is b
        if any(mask):
            d_xw, d_gih, d_bias = nlb(
                dz, xw[r0:r1], [G], mean_x[r0:r1], rstd_x[r0:r1], g_ih, bias, mask
            )
            self.add(2, d_bias)
            self.add(4, d_gih)
            if self.dx is not None:  # (rows, input)
                self.dx[r0:r1] = kernel_linear(d_xw, w_ih.t())
            if needs[1]:
                self.add(1, kernel_weight_grad(d_xw, x[r0:r1]))  # (4H, input)
        if needs[3]:  # what the matmul read: m ⊙ h_{t-1}
            h_prev = kernel_prev_range(
                hs, h0, self.batch_sizes, self.offsets, self.reverse, span
            )
            if rec_mask is not None:
                sizes = self.batch_sizes[span[0] : span[1]]
                h_prev = h_prev * lnlstm_mask_rows(rec_mask, sizes)
            self.add(3, kernel_weight_grad(d_hws, h_prev))  # (4H, h width)
        if needs[5]:
            rows = (hws[r0:r1], [G], mean_h[r0:r1], rstd_h[r0:r1], g_hh, None)
            self.add(5, nlb(dz, *rows, [False, True, False])[1])
        if needs[6] or needs[7]:
            rows = (cs[r0:r1], [H], mean_c[r0:r1], rstd_c[r0:r1], g_c, b_c)
            _, d_gc, d_bc = nlb(d_norm_c, *rows, [False, needs[6], needs[7]])
            self.add(6, d_gc)
            self.add(7, d_bc)
        if peep is not None and needs[8]:
            self.add(8, lstm_peephole_grad(dz, c_prev, cs[r0:r1]))
        if w_hr is not None and needs[9]:
            self.add(9, kernel_weight_grad(d_h, ms[r0:r1]))  # (P, H)

    def grads(self) -> List[Optional[Tensor]]:
        """The gradients of the Function's 12 tensor inputs, after every span."""
        kernel_state_rows_grad(self.dh, self.d_hn, 0, self.h_grads)
        kernel_state_rows_grad(self.dc, self.d_cn, 0, self.c_grads)
        dh0, dc0 = kernel_init_grad(self.h_grads), kernel_init_grad(self.c_grads)
        return [self.dx, *self.sums[1:], dh0, dc0]


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
