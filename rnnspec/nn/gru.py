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


class GRUKernelFunction(torch.autograd.Function):
    """One direction of one GRU layer; gates r, z, n as torch.

    Forward (`gru_kernel_run`) projects every step's input into the gate buffer,
    which each step then completes in place. Backward (`gru_kernel_backward`):
    with a = W_hh h_{t-1} + b_hh, every gradient of a step is dh_t times a factor
    known from the forward (da = dh_t q_a, formed a span of steps at a time by
    `gru_span_factors`), so a step costs three elementwise ops and one matmul; the
    input side follows for all steps.

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
        run = gru_kernel_run(
            x, w_ih, b_ih, w_hh, b_hh, h0, batch_sizes, reverse, rec_mask, zone_h
        )
        gates, hns, hs, hms, zs, h_n = run
        ctx.save_for_backward(
            x, w_ih, b_ih, w_hh, b_hh, h0, gates, hns, hs, hms, zs, rec_mask, zone_h
        )
        ctx.plan = (batch_sizes, reverse)
        ctx.spent = False
        return hs, h_n

    @staticmethod
    def backward(ctx, d_hs, d_hn):
        saved = list(ctx.saved_tensors)
        x, w_ih, b_ih, w_hh, b_hh, h0 = saved[:6]
        rec_mask, zone_h = saved[11:]
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
        if ctx.spent:  # backward again (retain_graph): the first wrote over these
            run = gru_kernel_run(
                x, w_ih, b_ih, w_hh, b_hh, h0, batch_sizes, reverse, rec_mask, zone_h
            )
            saved[6], saved[7] = run[0], run[1]
        ctx.spent = True
        grads = gru_kernel_backward(ctx, saved, d_hs, d_hn)
        return (*grads, None, None, None, None)


def gru_kernel_run(
    x: Tensor,
    w_ih: Tensor,
    b_ih: Optional[Tensor],
    w_hh: Tensor,
    b_hh: Optional[Tensor],
    h0: Tensor,
    batch_sizes: List[int],
    reverse: bool,
    rec_mask: Optional[Tensor],
    zone_h: Optional[Tensor],
) -> Tuple[Tensor, Tensor, Tensor, Optional[Tensor], Optional[Tensor], Tensor]:
    """The eager forward of a GRU layer-direction.

    Returns gates (N, 3H) (r, z, n activated), W_hn h_{t-1} + b_hn (N, H; twice
    that with doubled weights),
    the outputs (N, H), the masked matmul inputs (N, H, with recurrent dropout,
    else None), z' (N, H, with zoneout, else None) and the final state. From
    `kernel_doubles` steps n's rows of the weights are doubled
    (`kernel_doubled_rows`): a sigmoid then gives tanh. Threads as
    `lstm_kernel_run`'s.
    """
    H, N = h0.shape[1], x.shape[0]
    big = kernel_threads(6.0 * N * x.shape[1] * H)
    threads = kernel_threads(6.0 * batch_sizes[0] * H * H)
    doubled = kernel_doubles(batch_sizes)  # n's rows: a sigmoid for tanh
    with KernelThreads(big):
        w_x = kernel_doubled_rows(w_ih, 2 * H, 3 * H, doubled)
        b_x = kernel_doubled_rows(b_ih, 2 * H, 3 * H, doubled)
        gates = kernel_linear(x, w_x, b_x)
    hns = x.new_empty(N, H)  # W_hn h_{t-1} + b_hn (doubled or not)
    hs = x.new_empty(N, H)  # outputs
    gs, hns_, outs = (t.split(batch_sizes) for t in (gates, hns, hs))
    hms = None if rec_mask is None else torch.empty_like(hs)  # m ⊙ h_{t-1}
    masked = outs if hms is None else hms.split(batch_sizes)
    zs = None  # (N, H) z' = d + (1 - d) z, for the backward
    zones = keeps = zs_ = outs  # unused without zoneout
    if zone_h is not None:
        zs = torch.empty_like(hs)
        zones, keeps = zone_h.split(batch_sizes), (1 - zone_h).split(batch_sizes)
        zs_ = zs.split(batch_sizes)
    k = KernelConstants(x)
    done: List[Tensor] = []
    h = h0[:0]
    with KernelThreads(threads):
        w_step = KernelStepWeight(
            kernel_doubled_rows(w_hh, 2 * H, 3 * H, doubled),
            batch_sizes[0],
            len(gs),
            kernel_doubled_rows(b_hh, 2 * H, 3 * H, doubled),
        )
        for t in kernel_order(len(gs), reverse):
            size = batch_sizes[t]
            h_prev = kernel_state_rows(h, h0, size, done)
            h_in = h_prev
            if rec_mask is not None:
                h_in = torch.mul(h_prev, rec_mask[:size], out=masked[t])
            hw = w_step.mm(h_in)  # (size, 3H) W_hh h + b_hh
            a = gs[t]
            r, z = a[:, : 2 * H].add_(hw[:, : 2 * H]).sigmoid_().chunk(2, 1)
            hn = hns_[t].copy_(hw[:, 2 * H :])
            n = a[:, 2 * H :].addcmul_(r, hn)
            if doubled:
                n.sigmoid_().mul_(k.two).sub_(k.one)
            else:
                kernel_tanh_into(n, n, k)
            if zone_h is not None:  # z' = d + (1 - d) z; h_{t-1} exactly where d = 1
                z = torch.addcmul(zones[t], keeps[t], z, out=zs_[t])
            h = torch.lerp(n, h_prev, z, out=outs[t])  # (1 - z) n + z h
    return gates, hns, hs, hms, zs, kernel_final_rows(h, done)


def gru_kernel_backward(
    ctx, saved: List[Optional[Tensor]], d_hs: Tensor, d_hn: Tensor
) -> Tuple[Optional[Tensor], ...]:
    """GRUKernelFunction's first-order backward: the gradients of its six tensors.

    A span of steps at a time (`kernel_spans`), `gru_span_factors` writes the
    factors q_a over the span's saved gates (then the steps scale them by dh_t
    into the gradients da) and the input side's n factor over its saved W_hn h:
    so the backward's temporaries stay within a quarter of what forward saved (a
    second backward through the graph recomputes them, `ctx.spent`).
    """
    x, w_ih, _, w_hh, _, h0, gates, hns, hs, hms, zs, rec_mask, zone_h = saved
    assert x is not None and w_ih is not None and w_hh is not None and h0 is not None
    assert gates is not None and hns is not None and hs is not None
    batch_sizes, reverse = ctx.plan
    H, N = h0.shape[1], x.shape[0]
    # written over in place (`.data`: their own version counters, so that a second
    # backward can still read what was saved): da (N, 3H), and dn (N, H) the input
    # side's gradient of n's pre-activation (r does not scale it)
    da, dn = gates.data, hns.data
    init_grads: List[Tensor] = []
    with KernelThreads(kernel_threads(6.0 * batch_sizes[0] * H * H)):
        w_back = KernelStepWeight(w_hh.t(), batch_sizes[0], len(batch_sizes))
        dh = d_hn[:0]  # gradient of the state the next-run step started from
        for span in kernel_spans(batch_sizes, reverse, 4):
            factors = (da, dn, hs, h0, zs, zone_h)
            dh = gru_span_steps(
                ctx, span, factors, w_back, rec_mask, (dh, d_hs, d_hn), init_grads
            )
        kernel_state_rows_grad(dh, d_hn, 0, init_grads)
    del w_back  # packed: gone before the weights' products
    with KernelThreads(kernel_threads(6.0 * N * x.shape[1] * H)):
        if hms is None:
            d_whh = kernel_prev_weight_grad(da, hs, h0, batch_sizes, reverse)
        else:
            d_whh = kernel_weight_grad(da, hms)  # (3H, H)
        d_bhh = da.sum(0) if ctx.needs_input_grad[4] else None
        da[:, 2 * H :].copy_(dn)  # da is now the input side's gradient
        dx, d_wih, d_bih = kernel_input_grads(ctx, da, x, w_ih)
    return dx, d_wih, d_bih, d_whh, d_bhh, kernel_init_grad(init_grads)


def gru_span_steps(
    ctx,
    span: List[int],
    factors: Tuple[Tensor, Tensor, Tensor, Tensor, Optional[Tensor], Optional[Tensor]],
    w_back: KernelStepWeight,
    rec_mask: Optional[Tensor],
    grads: Tuple[Tensor, Tensor, Tensor],
    init_grads: List[Tensor],
) -> Tensor:
    """The steps t0..t1-1 of `span` in the order they run backwards, after their
    factors (`gru_span_factors`); returns the gradient of the state the last-run
    step started from. `factors`: da, dn, the outputs, h0, z' and the zoneout
    masks (None without); `grads`: that gradient so far, d_hs and d_hn."""
    da, dn, hs, h0, zs, zone_h = factors
    dh, d_hs, d_hn = grads
    batch_sizes, reverse = ctx.plan
    t0, t1 = span
    H, offsets = h0.shape[1], kernel_offsets(batch_sizes)
    r0, r1 = offsets[t0], offsets[t1]
    h_prev = kernel_prev_range(hs, h0, batch_sizes, offsets, reverse, span)
    rows = [None if t is None else t[r0:r1] for t in (zs, zone_h)]
    k = KernelConstants(h0)
    doubled = kernel_doubles(batch_sizes)
    carry = gru_span_factors(da[r0:r1], dn[r0:r1], h_prev, rows[0], rows[1], k, doubled)
    sizes = batch_sizes[t0:t1]
    das, dns, zz = da[r0:r1].split(sizes), dn[r0:r1].split(sizes), carry.split(sizes)
    d_outs = d_hs[r0:r1].split(sizes)
    for t in range(t0, t1) if reverse else range(t1 - 1, t0 - 1, -1):
        size, j = batch_sizes[t], t - t0
        dh = kernel_state_rows_grad(dh, d_hn, size, init_grads) + d_outs[j]
        das[j].view(size, 3, H).mul_(dh.unsqueeze(1))
        dns[j].mul_(dh)
        grad = w_back.mm(das[j])  # (size, H)
        if rec_mask is not None:
            grad.mul_(rec_mask[:size])
        dh = grad.addcmul_(dh, zz[j])
    return dh


def gru_span_factors(
    P: Tensor,
    hn: Tensor,
    h_prev: Tensor,
    zs: Optional[Tensor],
    zone: Optional[Tensor],
    k: KernelConstants,
    doubled: bool,
) -> Tensor:
    """The GRU backward's factors q_a = da / dh_t of a span's rows, at once.

    P (rows, 3H) holds the rows' gates [r, z, n] and leaves holding
    [q_n (W_hn h + b_hn) σ'(r), q_z, q_n r], with q_n = (1 - z)(1 - n²) and
    q_z = (h_{t-1} - n) z (1 - z), each times 1 - d with zoneout; hn (rows, H)
    holds W_hn h + b_hn (twice that if `doubled`) and leaves holding q_n.
    Returns the carry's factor z (z' with zoneout: `zs`'s rows) as its own
    (rows, H) tensor.
    """
    r, z, n = P.chunk(3, 1)
    q_n = torch.mul(n, n).neg_().add_(k.one)
    q_n.addcmul_(q_n, z, value=-1.0)  # (1 - z)(1 - n²)
    q_z = torch.sub(h_prev, n).mul_(z)
    q_z.addcmul_(q_z, z, value=-1.0)  # (h_{t-1} - n) z (1 - z)
    carry = zs
    if zone is not None:
        keep = 1 - zone
        q_n.mul_(keep)
        q_z.mul_(keep)
    else:
        carry = z.clone(memory_format=torch.contiguous_format)
    assert carry is not None
    z.copy_(q_z)
    torch.mul(q_n, r, out=n)
    torch.addcmul(r, r, r, value=-1.0, out=r).mul_(q_n).mul_(hn)
    if doubled:  # hn held 2 (W_hn h + b_hn)
        r.div_(k.two)
    hn.copy_(q_n)
    return carry


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
