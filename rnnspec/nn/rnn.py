"""Elman RNN cell, tanh or relu: `CustomRNN`, a drop-in `nn.RNN`.

h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)

With recurrent dropout the matmul reads m ⊙ h_{t-1}; with zoneout that h_t is h̃_t
and the state is d ⊙ h_{t-1} + (1 - d) ⊙ h̃_t. Backward: act' is known from h̃ alone
(1 - h̃², or h̃ > 0).
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
    kernel_linear,
    kernel_offsets,
    kernel_order,
    kernel_prev_range,
    kernel_project,
    kernel_recompute_grads,
    kernel_runs_plain,
    kernel_spans,
    kernel_state_rows,
    kernel_state_rows_grad,
    kernel_sum,
    kernel_tanh,
    kernel_tanh_into,
    kernel_threads,
    kernel_weight_grad,
)
from .stack import (
    KernelStackBase,
    kernel_check_impl,
)


class RNNKernelFunction(torch.autograd.Function):
    """One direction of one Elman layer: h_t = act(W_ih x_t + b + W_hh h_{t-1}).

    Forward projects every step's input into a buffer, which each step then
    completes in place into h̃_t = act(z_t). Backward: act' is known from h̃ alone
    (1 - h̃², or h̃ > 0), so a step is one multiply and one matmul; each weight
    gradient is one matmul.

    The regularizers (design section 9), None when off: `rec_mask` (B, H), sorted
    by length, scales the matmul's input: z_t = ... + W_hh (m ⊙ h_{t-1}), the
    masked rows kept for dW_hh; `zone_h` (N, H), one row per packed row: h_t =
    d ⊙ h_{t-1} + (1 - d) ⊙ h̃_t, so the outputs are a second buffer and h̃ (for
    act') stays in the first.
    """

    @staticmethod
    def forward(
        ctx,
        x,
        w_ih,
        bias,
        w_hh,
        h0,
        batch_sizes,
        reverse,
        relu,
        rec_mask=None,
        zone_h=None,
    ):
        H, N = h0.shape[1], x.shape[0]
        big = kernel_threads(2.0 * N * x.shape[1] * H)
        doubled = not relu and kernel_doubles(batch_sizes)  # then tanh = 2σ - 1
        with KernelThreads(big):
            w_x = kernel_doubled_rows(w_ih, 0, H, doubled)
            pre = kernel_linear(x, w_x, kernel_doubled_rows(bias, 0, H, doubled))
        hs = pre if zone_h is None else torch.empty_like(pre)  # (N, H) outputs
        hms = None if rec_mask is None else torch.empty_like(pre)  # m ⊙ h_{t-1}
        acts, outs = pre.split(batch_sizes), hs.split(batch_sizes)
        masked = outs if hms is None else hms.split(batch_sizes)
        zones = outs if zone_h is None else zone_h.split(batch_sizes)  # d rows
        k = KernelConstants(x)
        done: List[Tensor] = []
        h = h0[:0]
        with KernelThreads(kernel_threads(2.0 * batch_sizes[0] * H * H)):
            w_h = kernel_doubled_rows(w_hh, 0, H, doubled)
            w_step = KernelStepWeight(w_h, batch_sizes[0], len(acts))
            for t in kernel_order(len(acts), reverse):
                size = batch_sizes[t]
                h_prev = kernel_state_rows(h, h0, size, done)
                h_in = h_prev
                if rec_mask is not None:
                    h_in = torch.mul(h_prev, rec_mask[:size], out=masked[t])
                h = w_step.addmm_(acts[t], h_in)
                if relu:
                    h = h.relu_()
                elif doubled:
                    h = h.sigmoid_().mul_(k.two).sub_(k.one)
                else:
                    h = kernel_tanh_into(h, h, k)
                if (
                    zone_h is not None
                ):  # h̃ + d (h_{t-1} - h̃): h_{t-1} exactly where d = 1
                    h = torch.lerp(h, h_prev, zones[t], out=outs[t])
        ctx.save_for_backward(x, w_ih, bias, w_hh, h0, pre, hs, hms, rec_mask, zone_h)
        ctx.plan = (batch_sizes, reverse, relu)
        return hs, kernel_final_rows(h, done)

    @staticmethod
    def backward(ctx, d_hs, d_hn):
        x, w_ih, bias, w_hh, h0, pre, hs, hms, rec_mask, zone_h = ctx.saved_tensors
        batch_sizes, reverse, relu = ctx.plan
        if torch.is_grad_enabled():  # create_graph=True: differentiate the plain steps

            def plain(x, w_ih, bias, w_hh, h0):
                xw = kernel_project(x, w_ih, bias)
                return rnn_kernel_plain(
                    xw, w_hh, h0, batch_sizes, reverse, relu, rec_mask, zone_h
                )

            inputs = [x, w_ih, bias, w_hh, h0]
            grads = kernel_recompute_grads(
                plain, inputs, ctx.needs_input_grad, [d_hs, d_hn]
            )
            return (*grads, None, None, None, None, None)
        return rnn_backward(ctx, d_hs, d_hn)


def rnn_backward(ctx, d_hs: Tensor, d_hn: Tensor) -> Tuple[Optional[Tensor], ...]:
    """RNNKernelFunction's first-order backward, a span of steps at a time
    (`kernel_spans`: a sixteenth of the rows), in the order the steps run
    backwards: the span's dz/dh_t factors, its steps, then its rows' share of dx
    (rows of one (N, input) tensor, the one full-size one made) and of the weight
    gradients (sums over spans). Returns the gradients of the Function's inputs."""
    x, w_ih, bias, w_hh, h0, pre, hs, hms, rec_mask, zone_h = ctx.saved_tensors
    batch_sizes, reverse, relu = ctx.plan
    need, offsets = ctx.needs_input_grad, kernel_offsets(batch_sizes)
    H, N = h0.shape[1], x.shape[0]
    dx = torch.empty_like(x) if need[0] else None  # (N, input)
    sums: List[Optional[Tensor]] = [None] * 4  # [1:]: of w_ih, bias, w_hh
    fold_threads = kernel_threads(2.0 * N / 16 * H * max(H, x.shape[1]))
    d_outs = d_hs.split(batch_sizes)
    init_grads: List[Tensor] = []
    dh = d_hn[:0]  # gradient of the state the next-run step started from
    with KernelThreads(kernel_threads(2.0 * batch_sizes[0] * H * H)):
        w_back = KernelStepWeight(w_hh.t(), batch_sizes[0], len(batch_sizes))
        for span in kernel_spans(batch_sizes, reverse, 16):
            t0, t1 = span
            r0, r1 = offsets[t0], offsets[t1]
            sizes = batch_sizes[t0:t1]
            # dz/dh_t = act'(z) (1 - d) for the span's rows; a step multiplies by dh
            z = pre[r0:r1]
            dz = (z > 0).to(z.dtype) if relu else z.mul(z).neg_().add_(1.0)
            zones: List[Tensor] = []
            if zone_h is not None:
                zones = list(zone_h[r0:r1].split(sizes))
                dz.addcmul_(dz, zone_h[r0:r1], value=-1.0)
            dzs = dz.split(sizes)
            order = range(t0, t1) if reverse else range(t1 - 1, t0 - 1, -1)
            for t in order:
                size, j = batch_sizes[t], t - t0
                dh_t = kernel_state_rows_grad(dh, d_hn, size, init_grads) + d_outs[t]
                dh = w_back.mm(dzs[j].mul_(dh_t))  # (size, H)
                if rec_mask is not None:
                    dh.mul_(rec_mask[:size])
                if zone_h is not None:
                    dh.addcmul_(zones[j], dh_t)
            with KernelThreads(fold_threads):
                if dx is not None:
                    dx[r0:r1] = kernel_linear(dz, w_ih.t())  # (rows, input)
                if need[1]:
                    sums[1] = kernel_sum(sums[1], kernel_weight_grad(dz, x[r0:r1]))
                if need[2]:
                    sums[2] = kernel_sum(sums[2], dz.sum(0))
                if need[3]:  # what the matmul read: m ⊙ h_{t-1}
                    if hms is None:
                        args = (hs, h0, batch_sizes, offsets, reverse, span)
                        h_prev = kernel_prev_range(*args)
                    else:
                        h_prev = hms[r0:r1]
                    part = kernel_weight_grad(dz, h_prev)  # (H, H)
                    sums[3] = kernel_sum(sums[3], part)
        kernel_state_rows_grad(dh, d_hn, 0, init_grads)
    dh0 = kernel_init_grad(init_grads)
    return dx, sums[1], sums[2], sums[3], dh0, None, None, None, None, None


def rnn_kernel_plain(
    xw: Tensor,
    w_hh: Tensor,
    h0: Tensor,
    batch_sizes: List[int],
    reverse: bool,
    relu: bool,
    rec_mask: Optional[Tensor] = None,
    zone_h: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """RNNKernelFunction's forward step for step, left to autograd."""
    w_t = w_hh.t()
    xs = xw.split(batch_sizes)
    zones = xs if zone_h is None else zone_h.split(batch_sizes)
    hs: List[Tensor] = []
    done: List[Tensor] = []
    h = h0[:0]
    for j in range(len(xs)):
        t = len(xs) - 1 - j if reverse else j
        size = batch_sizes[t]
        h_prev = kernel_state_rows(h, h0, size, done)
        h_in = h_prev if rec_mask is None else h_prev * rec_mask[:size]
        z = torch.addmm(xs[t], h_in, w_t)
        h = torch.relu(z) if relu else kernel_tanh(z)
        if zone_h is not None:
            h = torch.lerp(h, h_prev, zones[t])
        hs.append(h)
    if reverse:
        hs.reverse()
    return torch.cat(hs), kernel_final_rows(h, done)


def rnn_kernel_layer(
    x: Tensor,
    w_ih: Tensor,
    bias: Optional[Tensor],
    w_hh: Tensor,
    h0: Tensor,
    batch_sizes: List[int],
    reverse: bool,
    relu: bool,
    rec_mask: Optional[Tensor] = None,
    zone_h: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """(N, H) outputs and (B, H) final state of one Elman layer-direction; the
    regularizer masks as `RNNKernelFunction` takes them (None: off)."""
    if torch.jit.is_scripting() or kernel_runs_plain(x):
        xw = kernel_project(x, w_ih, bias)
        return rnn_kernel_plain(
            xw, w_hh, h0, batch_sizes, reverse, relu, rec_mask, zone_h
        )
    out, h_n = RNNKernelFunction.apply(
        x, w_ih, bias, w_hh, h0, batch_sizes, reverse, relu, rec_mask, zone_h
    )
    return out, h_n


class CustomRNN(KernelStackBase, nn.RNN):
    """`nn.RNN` with our kernel: h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh).

    act is tanh or relu. Same parameters as nn.RNN; `forward(input, hx, lengths)`.
    """

    impl: str

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
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
            nonlinearity=nonlinearity,
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
        bias = b_ih + b_hh if b_ih is not None and b_hh is not None else None
        relu = self.nonlinearity == "relu"
        out, h_n = rnn_kernel_layer(
            x,
            w_ih,
            bias,
            w_hh,
            state[0],
            batch_sizes,
            reverse,
            relu,
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
