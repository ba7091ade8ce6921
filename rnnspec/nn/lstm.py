"""LSTM cell: `CustomLSTM`, a drop-in `nn.LSTM` (gates i, f, g, o as torch).

i = σ(W_ii x + b_ii + W_hi h + b_hi)    f = σ(W_if x + b_if + W_hf h + b_hf)
g = tanh(W_ig x + b_ig + W_hg h + b_hg) o = σ(W_io x + b_io + W_ho h + b_ho)
c' = f ⊙ c + i ⊙ g                      h' = o ⊙ tanh(c')

`lstm_backward_factors` is shared with the peephole LSTM.
"""

import math
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from .kernel import (
    KernelConstants,
    KernelStepWeight,
    KernelThreads,
    kernel_doubled_rows,
    kernel_doubles,
    kernel_final_rows,
    kernel_init_grad,
    kernel_input_grads,
    kernel_linear,
    kernel_offsets,
    kernel_order,
    kernel_prev_range,
    kernel_prev_weight_grad,
    kernel_project,
    kernel_recompute_grads,
    kernel_runs_plain,
    kernel_spans,
    kernel_state_rows,
    kernel_state_rows_grad,
    kernel_tanh,
    kernel_tanh_into,
    kernel_threads,
    kernel_weight_grad,
)
from .stack import (
    KernelStackBase,
    kernel_check_impl,
)


class LSTMKernelFunction(torch.autograd.Function):
    """One direction of one LSTM layer; gates i, f, g, o as torch.

    Forward (`lstm_kernel_run`) projects every step's input into the gate buffer,
    which each step then completes in place; it saves the activated gates and c_t.
    Backward (`LSTMBackward`) forms, a span of steps at a time, every factor that
    does not depend on the recurrence (`lstm_span_factors`):
        dz_{i,f,g} = dc_t P_{i,f,g},   dz_o = dm_t P_o,   dc_t += dm_t K
    so a step costs one matmul and a few small elementwise ops; each weight
    gradient is then one matmul over all steps.

    With a projection `w_hr` (P, H), torch's proj_size: m_t = o ⊙ tanh(c_t) and
    h_t = W_hr m_t, so h is P wide; a step adds the matmul to h_t (forward) and
    dm_t = dh_t W_hr (backward), and dW_hr = Σ_t dh_tᵀ m_t is one matmul after the
    loop. Without it, m_t is h_t.

    The regularizers (design section 9), each None when off: `rec_mask` (B, W),
    sorted by length, masks the matmul input, m ⊙ h_{t-1} (saved as rows for
    dW_hh); `zone_h` (N, W) and `zone_c` (N, H), one row per packed row (1: the unit
    keeps its previous value; the rate in eval), blend the new states with the
    previous ones after the step (lerp), whose h̃_t reads the un-zoned c̃_t; the
    backward's share of them is `LSTMRegularizerGrads`.
    """

    @staticmethod
    def forward(
        ctx,
        x,
        w_ih,
        bias,
        w_hh,
        h0,
        c0,
        batch_sizes,
        reverse,
        w_hr=None,
        rec_mask=None,
        zone_h=None,
        zone_c=None,
    ):
        regs = (rec_mask, zone_h, zone_c)
        run = lstm_kernel_run(
            x, w_ih, bias, w_hh, None, h0, c0, batch_sizes, reverse, w_hr, *regs
        )
        gates, cs, ms, hs, zs, h_in, h_n, c_n = run
        saved = (x, w_ih, bias, w_hh, h0, c0, gates, cs, hs, w_hr, ms)
        ctx.save_for_backward(*saved, rec_mask, zone_h, zone_c, zs, h_in)
        ctx.plan = (batch_sizes, reverse)
        ctx.spent = False
        return hs, h_n, c_n

    @staticmethod
    def backward(ctx, d_hs, d_hn, d_cn):
        x, w_ih, bias, w_hh, h0, c0, gates, cs, hs, w_hr, ms, *regs = ctx.saved_tensors
        batch_sizes, reverse = ctx.plan
        if torch.is_grad_enabled():  # create_graph=True: differentiate the plain steps

            def plain(x, w_ih, bias, w_hh, h0, c0, w_hr):
                xw = kernel_project(x, w_ih, bias)
                return lstm_kernel_plain(
                    xw, w_hh, h0, c0, batch_sizes, reverse, w_hr, *regs[:3]
                )

            inputs = [x, w_ih, bias, w_hh, h0, c0, w_hr]
            needs = lstm_tensor_needs(ctx.needs_input_grad, 6)
            grads = kernel_recompute_grads(plain, inputs, needs, [d_hs, d_hn, d_cn])
            return (*grads[:6], None, None, grads[6], None, None, None)
        if ctx.spent:  # backward again (retain_graph): the first wrote over the gates
            run = lstm_kernel_run(
                x, w_ih, bias, w_hh, None, h0, c0, batch_sizes, reverse, w_hr, *regs[:3]
            )
            gates = run[0]
        ctx.spent = True
        saved = (gates, cs, hs, ms, w_hh, h0, c0, w_hr)
        back = LSTMBackward(ctx, saved, regs, None, (d_hs, d_hn, d_cn))
        dh0, dc0, d_whh, d_whr = back.run()
        with KernelThreads(back.threads):
            dx, d_wih, d_bias = kernel_input_grads(ctx, back.dz, x, w_ih)
        return dx, d_wih, d_bias, d_whh, dh0, dc0, None, None, d_whr, None, None, None


def lstm_tensor_needs(needs: Tuple[bool, ...], n: int) -> Tuple[bool, ...]:
    """`ctx.needs_input_grad` of the tensor inputs of a Function taking n tensors,
    (batch_sizes, reverse), then an optional w_hr: the n, then w_hr's."""
    return needs[:n] + (len(needs) > n + 2 and needs[n + 2],)


def lstm_split(rows: Optional[Tensor], batch_sizes: List[int]) -> List[Tensor]:
    """Per-step views of packed rows (N, ·); [] for an option that is off."""
    return [] if rows is None else list(rows.split(batch_sizes))


def lstm_masked_rows(hs: Tensor, rec_mask: Optional[Tensor]) -> Optional[Tensor]:
    """(N, W) buffer for m ⊙ h_{t-1} of every row with recurrent dropout, else None."""
    return None if rec_mask is None else torch.empty_like(hs)


def lstm_kernel_run(
    x: Tensor,
    w_ih: Tensor,
    bias: Optional[Tensor],
    w_hh: Tensor,
    peep: Optional[Tensor],
    h0: Tensor,
    c0: Tensor,
    batch_sizes: List[int],
    reverse: bool,
    w_hr: Optional[Tensor],
    rec_mask: Optional[Tensor],
    zone_h: Optional[Tensor],
    zone_c: Optional[Tensor],
) -> Tuple[Tensor, ...]:
    """The eager forward of an LSTM layer-direction, peepholes `peep` (3H) or None.

    Returns gates (N, 4H) (i, f, g, o activated), c̃ (N, H), m (N, H), the outputs
    h (N, W), zoned c (N, H; c̃ itself without zoneout), the masked matmul inputs
    (N, W, with recurrent dropout, else None), and the final h and c. The input
    projection runs on the threads its size earns, the steps on one thread unless
    a step's product is large (`kernel_threads`).
    """
    H, N, W = c0.shape[1], x.shape[0], h0.shape[1]
    big = kernel_threads(8.0 * N * x.shape[1] * H)
    threads = kernel_threads(8.0 * batch_sizes[0] * W * H)
    doubled = kernel_doubles(batch_sizes)  # g's rows: one sigmoid for all gates
    with KernelThreads(big):
        gates = kernel_linear(
            x,
            kernel_doubled_rows(w_ih, 2 * H, 3 * H, doubled),
            kernel_doubled_rows(bias, 2 * H, 3 * H, doubled),
        )
    cs = x.new_empty(N, H)  # c̃_t, before zoneout
    ms = torch.empty_like(cs)  # m_t = o ⊙ tanh(c̃_t): h̃_t unless projected
    hs = ms if w_hr is None else x.new_empty(N, W)
    zs = cs if zone_c is None else torch.empty_like(cs)  # zoned c_t
    h_in = lstm_masked_rows(hs, rec_mask)  # m ⊙ h_{t-1}, or None
    gs, css, mss, outs, zss = (t.split(batch_sizes) for t in (gates, cs, ms, hs, zs))
    zh, zc, ins = (lstm_split(t, batch_sizes) for t in (zone_h, zone_c, h_in))
    k = KernelConstants(x)
    p_if = None if peep is None else peep[: 2 * H].view(2, H)
    p_o = None if peep is None else peep[2 * H :]
    h_done: List[Tensor] = []
    c_done: List[Tensor] = []
    h, c = h0[:0], c0[:0]
    with KernelThreads(threads):
        w_hh = kernel_doubled_rows(w_hh, 2 * H, 3 * H, doubled)
        w_step = KernelStepWeight(w_hh, batch_sizes[0], len(gs))
        for t in kernel_order(len(gs), reverse):
            size = batch_sizes[t]
            h_prev = kernel_state_rows(h, h0, size, h_done)
            c_prev = kernel_state_rows(c, c0, size, c_done)
            h_mm = h_prev
            if rec_mask is not None:
                h_mm = torch.mul(h_prev, rec_mask[:size], out=ins[t])
            a = w_step.addmm_(gs[t], h_mm)  # (size, 4H) pre-activations
            i, f, g, o = lstm_activate(a, c_prev, p_if, doubled, k)
            c = torch.mul(f, c_prev, out=css[t]).addcmul_(i, g)
            if p_o is not None:
                o.addcmul_(c, p_o).sigmoid_()
            h = kernel_tanh_into(c, mss[t], k).mul_(o)
            if w_hr is not None:
                h = torch.mm(h, w_hr.t(), out=outs[t])
            if zone_c is not None:
                c = torch.lerp(c, c_prev, zc[t], out=zss[t])
            if zone_h is not None:
                h = h.lerp_(h_prev, zh[t])
    h_n, c_n = kernel_final_rows(h, h_done), kernel_final_rows(c, c_done)
    return gates, cs, ms, hs, zs, h_in, h_n, c_n


def lstm_activate(
    a: Tensor, c_prev: Tensor, p_if: Optional[Tensor], doubled: bool, k: KernelConstants
) -> List[Tensor]:
    """A step's gates i, f, g, o activated in place in its pre-activations a
    (size, 4H); with peepholes p_if (2, H), i and f see c_{t-1} and o is left for
    the caller (it sees c̃_t). With `doubled` weights (`kernel_doubled_rows`) one
    sigmoid covers g too, which then is 2σ - 1 = tanh."""
    H = a.shape[1] // 4
    if p_if is not None:
        a[:, : 2 * H].view(a.shape[0], 2, H).addcmul_(c_prev.unsqueeze(1), p_if)
    i, f, g, o = a.chunk(4, 1)
    if doubled:
        a[:, : 3 * H if p_if is not None else 4 * H].sigmoid_()
        g.mul_(k.two).sub_(k.one)
        return [i, f, g, o]
    a[:, : 2 * H].sigmoid_()
    kernel_tanh_into(g, g, k)
    if p_if is None:
        o.sigmoid_()
    return [i, f, g, o]


class LSTMBackward:
    """The first-order backward of an LSTM or peephole layer-direction.

    A span of steps at a time (`kernel_spans`: about a quarter of the rows), in
    the order the steps run backwards, `lstm_span_factors` turns the span's saved
    gates into the factors P in place and makes its K and f; then its steps run,
    each scaling its rows of P into the gate gradients dz. So dz ends where the
    gates were, and the temporaries stay within a quarter of what forward saved
    (the gates' last use: a second backward recomputes them, `ctx.spent`). The
    weight gradients follow, one matmul each over all rows.
    """

    def __init__(self, ctx, saved, regs, peep: Optional[Tensor], grads):
        gates, self.cs, self.hs, self.ms, w_hh, self.h0, self.c0, self.w_hr = saved
        self.batch_sizes, self.reverse = ctx.plan
        self.regs = regs  # rec_mask, zone_h, zone_c, zs, h_in
        self.peep = peep
        d_hs, self.d_hn, self.d_cn = grads
        # dz (N, 4H): the gates, written over. `.data`, with a version counter of
        # its own: a second backward can still read what was saved (and recompute)
        self.dz = gates.data
        H, W, sizes = self.c0.shape[1], self.h0.shape[1], self.batch_sizes
        self.threads = kernel_threads(8.0 * self.dz.shape[0] * H * W)
        self.step_threads = kernel_threads(8.0 * sizes[0] * W * H)
        self.dh_all = None if self.w_hr is None else torch.empty_like(d_hs)  # dh̃_t
        self.d_outs = d_hs.split(sizes)
        self.dhs = self.d_outs if self.dh_all is None else self.dh_all.split(sizes)
        self.dzs = self.dz.split(sizes)
        self.dz_o = self.dz[:, 3 * H :].split(sizes)
        self.dz_ifg = self.dz[:, : 3 * H].unflatten(1, (3, H)).split(sizes)
        self.steps = LSTMRegularizerGrads(regs[1], regs[2], regs[0], self.w_hr, sizes)
        self.w_back = KernelStepWeight(w_hh.t(), sizes[0], len(sizes))
        self.h_grads: List[Tensor] = []
        self.c_grads: List[Tensor] = []
        self.dh, self.dc = self.d_hn[:0], self.d_cn[:0]  # of the next-run step's start
        self.d_peep: Optional[Tensor] = None

    def run(self) -> Tuple[Tensor, Tensor, Tensor, Optional[Tensor]]:
        """(dh0, dc0, dW_hh, dW_hr); dz (N, 4H) is left in `self.dz`, the peephole
        gradient in `self.d_peep`."""
        sizes, reverse, dz, h_in = self.batch_sizes, self.reverse, self.dz, self.regs[4]
        d_peep: List[Tensor] = []
        with KernelThreads(self.step_threads):
            for span in kernel_spans(sizes, reverse, 4):
                self.span(span, d_peep)
            kernel_state_rows_grad(self.dh, self.d_hn, 0, self.h_grads)
            kernel_state_rows_grad(self.dc, self.d_cn, 0, self.c_grads)
        del self.w_back  # packed: gone before the weights' products
        with KernelThreads(self.threads):
            if h_in is None:
                d_whh = kernel_prev_weight_grad(dz, self.hs, self.h0, sizes, reverse)
            else:
                d_whh = kernel_weight_grad(dz, h_in)  # (4H, W)
            d_whr = None
            if self.dh_all is not None:
                d_whr = kernel_weight_grad(self.dh_all, self.ms)  # (P, H)
        if d_peep:
            self.d_peep = torch.stack(d_peep).sum(0)
        dh0, dc0 = kernel_init_grad(self.h_grads), kernel_init_grad(self.c_grads)
        return dh0, dc0, d_whh, d_whr

    def span(self, span: List[int], d_peep: List[Tensor]) -> None:
        """The steps t0..t1-1 of `span`, in the order they run backwards, after
        their factors; their share of the peepholes' gradient to `d_peep`."""
        t0, t1 = span
        sizes, offsets = self.batch_sizes[t0:t1], kernel_offsets(self.batch_sizes)
        r0, r1 = offsets[t0], offsets[t1]
        rows, cs = self.dz[r0:r1], self.cs[r0:r1]
        zs = self.regs[3]
        c_prev = kernel_prev_range(
            zs, self.c0, self.batch_sizes, offsets, self.reverse, span
        )
        K, f = lstm_span_factors(rows, cs, c_prev, KernelConstants(rows))
        self.steps.span(r0, r1, sizes, K, rows)
        self.steps_of(span, K.split(sizes), f.split(sizes))
        if self.peep is not None:
            d_peep.append(lstm_peephole_grad(rows, c_prev, cs))

    def steps_of(self, span: List[int], Ks: List[Tensor], fs: List[Tensor]) -> None:
        """The steps of one span, in the order they run backwards; Ks and fs: the
        span's K and f, per step."""
        t0, t1 = span
        order = range(t0, t1) if self.reverse else range(t1 - 1, t0 - 1, -1)
        H = self.c0.shape[1]
        peep, steps = self.peep, self.steps
        for t in order:
            size, j = self.batch_sizes[t], t - t0
            dh = kernel_state_rows_grad(self.dh, self.d_hn, size, self.h_grads)
            dh, dm = steps.dm(t, j, dh, self.d_outs[t], self.dhs[t])  # of h_t, m_t
            dz_o = self.dz_o[t].mul_(dm)
            dc = kernel_state_rows_grad(self.dc, self.d_cn, size, self.c_grads)
            dc, carry = steps.dc(t, j, dc, dm, Ks[j])  # of c̃_t; d^c ⊙ dc_t
            if peep is not None:
                dc.addcmul_(dz_o, peep[2 * H :])  # o saw c̃_t
            dz_ifg = self.dz_ifg[t].mul_(dc.unsqueeze(1))  # i, f, g
            self.dh = steps.dh_prev(t, self.dzs[t], self.w_back, dh)
            dc = dc * fs[j] if carry is None else carry.addcmul_(dc, fs[j])
            if peep is not None:  # i and f saw c_{t-1}
                dc.addcmul_(dz_ifg[:, 0], peep[:H])
                dc.addcmul_(dz_ifg[:, 1], peep[H : 2 * H])
            self.dc = dc


class LSTMRegularizerGrads:
    """The regularizers' share of an LSTM backward step (shared with the peephole
    LSTM), with their factors formed a span of steps at a time (`span`).

    Zoneout h_t = d ⊙ h_{t-1} + (1-d) ⊙ h̃_t gives dh̃_t = (1-d) ⊙ dh_t, and d ⊙ dh_t
    flows to h_{t-1}; c likewise. Without a projection dm_t = dh̃_t only scales P_o
    and K, so (1-d^h) is folded into them and a step multiplies by it nowhere.
    Recurrent dropout: dh_{t-1} = m ⊙ (dz_t W_hh). Lists indexed by j are the
    current span's steps (j = t - t0).
    """

    def __init__(self, zone_h, zone_c, rec_mask, w_hr, batch_sizes):
        self.rec_mask = rec_mask  # (B, W), or None
        self.zone_h, self.zone_c, self.w_hr = zone_h, zone_c, w_hr
        self.zh = lstm_split(zone_h, batch_sizes)
        self.zc = lstm_split(zone_c, batch_sizes)
        self.keep_c: List[Tensor] = []
        self.keep_h: List[Tensor] = []
        self.proj = None
        if w_hr is not None:  # dm_t = dh̃_t W_hr
            self.proj = KernelStepWeight(w_hr.t(), batch_sizes[0], len(batch_sizes))

    def span(self, r0: int, r1: int, sizes: List[int], K: Tensor, P: Tensor) -> None:
        """The factors 1 - d of rows r0..r1 (steps of `sizes` rows), folded into
        K and P_o (the span's rows of P) without a projection."""
        H = K.shape[1]
        if self.zone_c is not None:
            self.keep_c = list((1 - self.zone_c[r0:r1]).split(sizes))
        if self.zone_h is not None:
            keep = 1 - self.zone_h[r0:r1]  # (rows, W)
            if self.w_hr is None:
                K.mul_(keep)
                P[:, 3 * H :].mul_(keep)
            else:
                self.keep_h = list(keep.split(sizes))

    def dm(self, t, j, dh, d_out, dh_row):
        """Gradients of h_t (zoned: from the next step and the output) and of m_t
        (times 1-d^h when folded); with w_hr, dh̃_t goes to `dh_row` for dW_hr."""
        if self.proj is None:
            dh = dh + d_out
            return dh, dh
        if not self.keep_h:
            dh = torch.add(dh, d_out, out=dh_row)
            return dh, self.proj.mm(dh)
        dh = dh + d_out
        return dh, self.proj.mm(torch.mul(dh, self.keep_h[j], out=dh_row))

    def dc(self, t, j, dc, dm, K):
        """dc̃_t, and d^c ⊙ dc_t for c_{t-1} (None without zoneout), from dc_t, the
        gradient of the zoned c_t (a tensor of this backward's own: reused)."""
        if not self.zc:
            return dc.addcmul(dm, K), None
        dc_new = torch.mul(dc, self.keep_c[j]).addcmul_(dm, K)
        return dc_new, dc.mul_(self.zc[t])

    def dh_prev(self, t, dzt, w_back: KernelStepWeight, dh):
        """Gradient of h_{t-1}: through the masked matmul input, plus d^h ⊙ dh_t."""
        grad = w_back.mm(dzt)  # (size, W): dz_t W_hh
        if self.rec_mask is not None:
            grad.mul_(self.rec_mask[: dzt.shape[0]])
        if self.zh:
            grad.addcmul_(dh, self.zh[t])
        return grad


def lstm_span_factors(
    P: Tensor, cs: Tensor, c_prev: Tensor, k: KernelConstants
) -> Tuple[Tensor, Tensor]:
    """The LSTM backward's factors of a span's rows, for all its steps at once.

    P (rows, 4H) holds the rows' activated gates [i, f, g, o] and leaves holding
    [g σ'(i), c_{t-1} σ'(f), i tanh'(g), tanh(c_t) σ'(o)] (σ'(a) = a - a² and
    tanh'(a) = 1 - a² in terms of the activations); returns K = o tanh'(c_t) and
    f (rows, H), the carry's factor. cs, c_prev: the rows' c̃_t and c_{t-1}.
    """
    i, f, g, o = P.chunk(4, 1)
    tanh_c = kernel_tanh_into(cs, torch.empty_like(cs), k)
    K = torch.mul(tanh_c, tanh_c).neg_().add_(k.one).mul_(o)
    torch.addcmul(o, o, o, value=-1.0, out=o).mul_(tanh_c)
    g_copy = tanh_c.copy_(g)  # tanh(c_t) is spent: its memory keeps g
    f_copy = f.clone(memory_format=torch.contiguous_format)
    torch.addcmul(f, f, f, value=-1.0, out=f).mul_(c_prev)
    g.mul_(g).neg_().add_(k.one).mul_(i)
    torch.addcmul(i, i, i, value=-1.0, out=i).mul_(g_copy)
    return K, f_copy


def lstm_backward_factors(
    gates: Tensor, c_prev: Tensor, cs: Tensor
) -> Tuple[Tensor, Tensor]:
    """P (N, 4H) and K (N, H) of the LSTM backward, for all steps at once (the
    layer-normalised LSTM's; `lstm_span_factors` is this in place, for a span).

    P = [g σ'(i), c_{t-1} σ'(f), i tanh'(g), tanh(c_t) σ'(o)], K = o tanh'(c_t),
    with σ'(a) = a - a² and tanh'(a) = 1 - a² in terms of the activations.
    """
    i, f, g, o = gates.chunk(4, 1)
    P = torch.addcmul(gates, gates, gates, value=-1)  # a - a²: σ' of i, f, o
    p_i, p_f, p_g, p_o = P.chunk(4, 1)
    p_i.mul_(g)
    p_f.mul_(c_prev)
    p_g.sub_(g).add_(1).mul_(i)  # (g - g²) - g + 1 = 1 - g²
    K = kernel_tanh(cs)  # tanh(c_t) ...
    p_o.mul_(K)
    K.mul_(K).neg_().add_(1).mul_(o)  # ... then o (1 - tanh²(c_t))
    return P, K


def lstm_peephole_grad(dz: Tensor, c_prev: Tensor, cs: Tensor) -> Tensor:
    """The peepholes' gradient (3H) from some rows: Σ dz_i c_{t-1}, Σ dz_f c_{t-1},
    Σ dz_o c̃_t."""
    H = cs.shape[1]
    i_f = dz[:, : 2 * H].view(-1, 2, H).mul(c_prev.unsqueeze(1)).sum(0)  # (2, H)
    return torch.cat([i_f.view(2 * H), (dz[:, 3 * H :] * cs).sum(0)])


def lstm_kernel_plain(
    xw: Tensor,
    w_hh: Tensor,
    h0: Tensor,
    c0: Tensor,
    batch_sizes: List[int],
    reverse: bool,
    w_hr: Optional[Tensor] = None,
    rec_mask: Optional[Tensor] = None,
    zone_h: Optional[Tensor] = None,
    zone_c: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor, Tensor]:
    """LSTMKernelFunction's forward step for step, left to autograd."""
    H = c0.shape[1]
    w_t = w_hh.t()
    xs = xw.split(batch_sizes)
    zh = lstm_split(zone_h, batch_sizes)
    zc = lstm_split(zone_c, batch_sizes)
    hs: List[Tensor] = []
    h_done: List[Tensor] = []
    c_done: List[Tensor] = []
    h, c = h0[:0], c0[:0]
    for j in range(len(xs)):
        t = len(xs) - 1 - j if reverse else j
        h_prev = kernel_state_rows(h, h0, batch_sizes[t], h_done)
        c_prev = kernel_state_rows(c, c0, batch_sizes[t], c_done)
        h_in = h_prev
        if rec_mask is not None:
            h_in = h_prev * rec_mask[: batch_sizes[t]]
        a = torch.addmm(xs[t], h_in, w_t)  # (size, 4H)
        i, f = a[:, : 2 * H].sigmoid().chunk(2, 1)
        g = kernel_tanh(a[:, 2 * H : 3 * H])
        o = a[:, 3 * H :].sigmoid()
        c = torch.addcmul(f * c_prev, i, g)
        h = kernel_tanh(c) * o
        if w_hr is not None:
            h = torch.mm(h, w_hr.t())  # (size, P)
        if len(zc) > 0:
            c = torch.lerp(c, c_prev, zc[t])
        if len(zh) > 0:
            h = torch.lerp(h, h_prev, zh[t])
        hs.append(h)
    if reverse:
        hs.reverse()
    return torch.cat(hs), kernel_final_rows(h, h_done), kernel_final_rows(c, c_done)


def lstm_kernel_layer(
    x: Tensor,
    w_ih: Tensor,
    bias: Optional[Tensor],
    w_hh: Tensor,
    h0: Tensor,
    c0: Tensor,
    batch_sizes: List[int],
    reverse: bool,
    w_hr: Optional[Tensor] = None,
    rec_mask: Optional[Tensor] = None,
    zone_h: Optional[Tensor] = None,
    zone_c: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor, Tensor]:
    """(N, H or P) outputs and (B, H or P) final h, (B, H) final c of one LSTM
    layer-direction; P with the projection w_hr. The regularizer masks as
    LSTMKernelFunction takes them (None: off)."""
    if torch.jit.is_scripting() or kernel_runs_plain(x):
        xw = kernel_project(x, w_ih, bias)
        return lstm_kernel_plain(
            xw, w_hh, h0, c0, batch_sizes, reverse, w_hr, rec_mask, zone_h, zone_c
        )
    out, h_n, c_n = LSTMKernelFunction.apply(
        x,
        w_ih,
        bias,
        w_hh,
        h0,
        c0,
        batch_sizes,
        reverse,
        w_hr,
        rec_mask,
        zone_h,
        zone_c,
    )
    return out, h_n, c_n


def lstm_check_forget_bias(forget_bias: Optional[float], bias: bool) -> None:
    """A finite number, and a bias to put it in."""
    if forget_bias is None:
        return
    number = isinstance(forget_bias, (int, float)) and not isinstance(forget_bias, bool)
    if not number or not math.isfinite(forget_bias):
        raise ValueError(
            f"Expected forget_bias to be a finite number, got {forget_bias!r}"
        )
    if not bias:
        raise ValueError(
            "Expected bias=True with forget_bias (it sets the forget-gate biases), "
            "got bias=False"
        )


class CustomLSTM(KernelStackBase, nn.LSTM):
    """`nn.LSTM` with our kernel; gates as torch (x = input, h = previous state):

    i = σ(W_ii x + b_ii + W_hi h + b_hi)    f = σ(W_if x + b_if + W_hf h + b_hf)
    g = tanh(W_ig x + b_ig + W_hg h + b_hg) o = σ(W_io x + b_io + W_ho h + b_ho)
    c' = f ⊙ c + i ⊙ g                      h' = o ⊙ tanh(c')

    With proj_size=P, torch's projection on either kernel: h' = W_hr (o ⊙ tanh(c')),
    `weight_hr_l{k}` (P, H). forget_bias=F (keyword): after torch's init, the forget
    slice [H:2H] of every bias_ih is F and of every bias_hh is 0 (no random draws:
    the other weights are nn.LSTM's under the same seed); reset_parameters keeps it.
    """

    impl: str
    forget_bias: Optional[float]

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
        forget_bias: Optional[float] = None,
        residual: bool = False,
        initial_state: str = "zeros",
        recurrent_dropout: float = 0.0,
        weight_drop: float = 0.0,
        zoneout: float = 0.0,
        zoneout_cell: Optional[float] = None,
        locked_dropout: bool = False,
    ):
        lstm_check_forget_bias(forget_bias, bias)
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias=bias,
            batch_first=batch_first,
            dropout=dropout,
            bidirectional=bidirectional,
            proj_size=proj_size,
            device=device,
            dtype=dtype,
        )
        self.impl = kernel_check_impl(impl, self._kernel_impls())
        self.forget_bias = None if forget_bias is None else float(forget_bias)
        self._lstm_set_forget_bias()
        self._kernel_options(
            residual,
            initial_state,
            recurrent_dropout,
            weight_drop,
            zoneout,
            zoneout_cell,
            locked_dropout,
        )

    def reset_parameters(self) -> None:
        super().reset_parameters()  # torch's init (called by torch's __init__ too)
        self._lstm_set_forget_bias()

    def _lstm_set_forget_bias(self) -> None:
        forget_bias = getattr(self, "forget_bias", None)
        if forget_bias is None:
            return
        H = self.hidden_size
        suffixes = ["", "_reverse"] if self.bidirectional else [""]
        with torch.no_grad():
            for k in range(self.num_layers):
                for s in suffixes:
                    getattr(self, f"bias_ih_l{k}{s}")[H : 2 * H].fill_(forget_bias)
                    getattr(self, f"bias_hh_l{k}{s}")[H : 2 * H].zero_()

    def _kernel_impls(self) -> Tuple[str, ...]:
        return ("custom", "auto", "torch")

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
        w_hr = self._kernel_proj_weight(k)
        out, h_n, c_n = lstm_kernel_layer(
            x,
            w_ih,
            bias,
            w_hh,
            state[0],
            state[1],
            batch_sizes,
            reverse,
            w_hr,
            rec_mask=masks[0],
            zone_h=masks[1],
            zone_c=masks[2],
        )
        return out, [h_n, c_n]

    def forward(
        self,
        input: Tensor,
        hx: Optional[Tuple[Tensor, Tensor]] = None,
        lengths: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Tuple[Tensor, Tensor]]:
        states = None if hx is None else [hx[0], hx[1]]
        if not torch.jit.is_scripting():
            if isinstance(input, nn.utils.rnn.PackedSequence):
                out, s = self._kernel_packed(input, states, lengths, 2)
                return out, (s[0], s[1])
        output, s = self._kernel_padded(input, states, lengths, 2)
        return output, (s[0], s[1])

    def extra_repr(self) -> str:
        if self.forget_bias is None:
            return super().extra_repr()
        return super().extra_repr() + f", forget_bias={self.forget_bias!r}"
