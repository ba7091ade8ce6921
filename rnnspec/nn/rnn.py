"""Elman RNN cell, tanh or relu: `CustomRNN`, a drop-in `nn.RNN`.

h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)

Backward: act' is known from h alone (1 - h², or h > 0).
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


class RNNKernelFunction(torch.autograd.Function):
    """One direction of one Elman layer: h_t = act(W_ih x_t + b + W_hh h_{t-1}).

    Forward projects every step's input into the output buffer, which each step then
    completes in place. Backward: act' is known from h alone (1 - h², or h > 0), so
    a step is one multiply and one matmul; each weight gradient is one matmul.
    """

    @staticmethod
    def forward(ctx, x, w_ih, bias, w_hh, h0, batch_sizes, reverse, relu):
        hs = kernel_project(x, w_ih, bias)  # (N, H): input part, then the outputs
        outs = hs.split(batch_sizes)
        w_t = w_hh.t()
        done: List[Tensor] = []
        h = h0[:0]
        for t in kernel_order(len(outs), reverse):
            h_prev = kernel_state_rows(h, h0, batch_sizes[t], done)
            h = outs[t].addmm_(h_prev, w_t)
            h = h.relu_() if relu else kernel_tanh(h, out=h)
        ctx.save_for_backward(x, w_ih, bias, w_hh, h0, hs)
        ctx.plan = (batch_sizes, reverse, relu)
        return hs, kernel_final_rows(h, done)

    @staticmethod
    def backward(ctx, d_hs, d_hn):
        x, w_ih, bias, w_hh, h0, hs = ctx.saved_tensors
        batch_sizes, reverse, relu = ctx.plan
        if torch.is_grad_enabled():  # create_graph=True: differentiate the plain steps

            def plain(x, w_ih, bias, w_hh, h0):
                xw = kernel_project(x, w_ih, bias)
                return rnn_kernel_plain(xw, w_hh, h0, batch_sizes, reverse, relu)

            inputs = [x, w_ih, bias, w_hh, h0]
            grads = kernel_recompute_grads(
                plain, inputs, ctx.needs_input_grad, [d_hs, d_hn]
            )
            return (*grads, None, None, None)
        # act'(z) for every step; each step multiplies its rows by dh in place
        dz = (hs > 0).to(hs.dtype) if relu else hs.mul(hs).neg_().add_(1)  # (N, H)
        d_outs, dzs = d_hs.split(batch_sizes), dz.split(batch_sizes)
        init_grads: List[Tensor] = []
        dh = d_hn[:0]  # gradient of the state the next-run step started from
        for t in kernel_order(len(dzs), not reverse):
            size = batch_sizes[t]
            dh = kernel_state_rows_grad(dh, d_hn, size, init_grads) + d_outs[t]
            dh = dzs[t].mul_(dh) @ w_hh  # (size, H)
        kernel_state_rows_grad(dh, d_hn, 0, init_grads)
        d_whh = dz.t() @ kernel_prev_rows(hs, h0, batch_sizes, reverse)  # (H, H)
        dx, d_wih, d_bias = kernel_input_grads(ctx, dz, x, w_ih)
        dh0 = kernel_init_grad(init_grads)
        return dx, d_wih, d_bias, d_whh, dh0, None, None, None


def rnn_kernel_plain(
    xw: Tensor,
    w_hh: Tensor,
    h0: Tensor,
    batch_sizes: List[int],
    reverse: bool,
    relu: bool,
) -> Tuple[Tensor, Tensor]:
    """RNNKernelFunction's forward step for step, left to autograd."""
    w_t = w_hh.t()
    xs = xw.split(batch_sizes)
    hs: List[Tensor] = []
    done: List[Tensor] = []
    h = h0[:0]
    for j in range(len(xs)):
        t = len(xs) - 1 - j if reverse else j
        h_prev = kernel_state_rows(h, h0, batch_sizes[t], done)
        z = torch.addmm(xs[t], h_prev, w_t)
        h = torch.relu(z) if relu else kernel_tanh(z)
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
    """(N, H) outputs and (B, H) final state of one Elman layer-direction."""
    if rec_mask is not None or zone_h is not None:
        raise NotImplementedError("recurrent_dropout and zoneout: not yet")
    if torch.jit.is_scripting() or kernel_runs_plain(x):
        xw = kernel_project(x, w_ih, bias)
        return rnn_kernel_plain(xw, w_hh, h0, batch_sizes, reverse, relu)
    out, h_n = RNNKernelFunction.apply(
        x, w_ih, bias, w_hh, h0, batch_sizes, reverse, relu
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
