"""LSTM cell: `CustomLSTM`, a drop-in `nn.LSTM` (gates i, f, g, o as torch).

i = σ(W_ii x + b_ii + W_hi h + b_hi)    f = σ(W_if x + b_if + W_hf h + b_hf)
g = tanh(W_ig x + b_ig + W_hg h + b_hg) o = σ(W_io x + b_io + W_ho h + b_ho)
c' = f ⊙ c + i ⊙ g                      h' = o ⊙ tanh(c')

`lstm_backward_factors` is shared with the peephole LSTM.
"""

from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from .stack import (
    KernelStackBase,
    kernel_check_impl,
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


class LSTMKernelFunction(torch.autograd.Function):
    """One direction of one LSTM layer; gates i, f, g, o as torch.

    Forward projects every step's input into the gate buffer, which each step then
    completes in place; it saves the activated gates and c_t. Backward first forms,
    for all steps at once, every factor that does not depend on the recurrence
    (`lstm_backward_factors`):
        dz_{i,f,g} = dc_t P_{i,f,g},   dz_o = dh_t P_o,   dc_t += dh_t K
    so a step costs one matmul and five small elementwise ops; each weight gradient
    is then one matmul over all steps.
    """

    @staticmethod
    def forward(ctx, x, w_ih, bias, w_hh, h0, c0, batch_sizes, reverse):
        H = h0.shape[1]
        gates = kernel_project(x, w_ih, bias)  # (N, 4H): input part, then i, f, g, o
        cs = x.new_empty(gates.shape[0], H)  # (N, H) c_t
        hs = torch.empty_like(cs)  # (N, H) h_t: the output
        gs, css, outs = (t.split(batch_sizes) for t in (gates, cs, hs))
        w_t = w_hh.t()
        h_done: List[Tensor] = []
        c_done: List[Tensor] = []
        h, c = h0[:0], c0[:0]
        for t in kernel_order(len(gs), reverse):
            h_prev = kernel_state_rows(h, h0, batch_sizes[t], h_done)
            c_prev = kernel_state_rows(c, c0, batch_sizes[t], c_done)
            a = gs[t].addmm_(h_prev, w_t)  # (size, 4H) pre-activations
            i, f, g, o = a.chunk(4, 1)
            a[:, : 2 * H].sigmoid_()  # i, f
            kernel_tanh(g, out=g)
            o.sigmoid_()
            c = torch.mul(f, c_prev, out=css[t]).addcmul_(i, g)
            h = kernel_tanh(c, out=outs[t]).mul_(o)
        ctx.save_for_backward(x, w_ih, bias, w_hh, h0, c0, gates, cs, hs)
        ctx.plan = (batch_sizes, reverse)
        return hs, kernel_final_rows(h, h_done), kernel_final_rows(c, c_done)

    @staticmethod
    def backward(ctx, d_hs, d_hn, d_cn):
        x, w_ih, bias, w_hh, h0, c0, gates, cs, hs = ctx.saved_tensors
        batch_sizes, reverse = ctx.plan
        if torch.is_grad_enabled():  # create_graph=True: differentiate the plain steps

            def plain(x, w_ih, bias, w_hh, h0, c0):
                xw = kernel_project(x, w_ih, bias)
                return lstm_kernel_plain(xw, w_hh, h0, c0, batch_sizes, reverse)

            inputs = [x, w_ih, bias, w_hh, h0, c0]
            grads = kernel_recompute_grads(
                plain, inputs, ctx.needs_input_grad, [d_hs, d_hn, d_cn]
            )
            return (*grads, None, None)
        H = h0.shape[1]
        c_prev = kernel_prev_rows(cs, c0, batch_sizes, reverse)  # (N, H)
        dz, K = lstm_backward_factors(gates, c_prev, cs)  # dz holds P for now
        d_outs, dzs, Ks = (t.split(batch_sizes) for t in (d_hs, dz, K))
        fs = gates[:, H : 2 * H].split(batch_sizes)
        h_grads: List[Tensor] = []
        c_grads: List[Tensor] = []
        dh, dc = d_hn[:0], d_cn[:0]  # gradients of the next-run step's start state
        for t in kernel_order(len(dzs), not reverse):
            size, dzt = batch_sizes[t], dzs[t]  # (size, 4H)
            dh = kernel_state_rows_grad(dh, d_hn, size, h_grads) + d_outs[t]
            dc = kernel_state_rows_grad(dc, d_cn, size, c_grads).addcmul(dh, Ks[t])
            dzt[:, : 3 * H].view(size, 3, H).mul_(dc.unsqueeze(1))  # i, f, g
            dzt[:, 3 * H :].mul_(dh)  # o
            dh = dzt @ w_hh  # (size, H)
            dc = dc * fs[t]
        kernel_state_rows_grad(dh, d_hn, 0, h_grads)
        kernel_state_rows_grad(dc, d_cn, 0, c_grads)
        d_whh = dz.t() @ kernel_prev_rows(hs, h0, batch_sizes, reverse)  # (4H, H)
        dx, d_wih, d_bias = kernel_input_grads(ctx, dz, x, w_ih)
        dh0, dc0 = kernel_init_grad(h_grads), kernel_init_grad(c_grads)
        return dx, d_wih, d_bias, d_whh, dh0, dc0, None, None


def lstm_backward_factors(
    gates: Tensor, c_prev: Tensor, cs: Tensor
) -> Tuple[Tensor, Tensor]:
    """P (N, 4H) and K (N, H) of the LSTM backward, for all steps at once.

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


def lstm_kernel_plain(
    xw: Tensor,
    w_hh: Tensor,
    h0: Tensor,
    c0: Tensor,
    batch_sizes: List[int],
    reverse: bool,
) -> Tuple[Tensor, Tensor, Tensor]:
    """LSTMKernelFunction's forward step for step, left to autograd."""
    H = h0.shape[1]
    w_t = w_hh.t()
    xs = xw.split(batch_sizes)
    hs: List[Tensor] = []
    h_done: List[Tensor] = []
    c_done: List[Tensor] = []
    h, c = h0[:0], c0[:0]
    for j in range(len(xs)):
        t = len(xs) - 1 - j if reverse else j
        h_prev = kernel_state_rows(h, h0, batch_sizes[t], h_done)
        c_prev = kernel_state_rows(c, c0, batch_sizes[t], c_done)
        a = torch.addmm(xs[t], h_prev, w_t)  # (size, 4H)
        i, f = a[:, : 2 * H].sigmoid().chunk(2, 1)
        g = kernel_tanh(a[:, 2 * H : 3 * H])
        o = a[:, 3 * H :].sigmoid()
        c = torch.addcmul(f * c_prev, i, g)
        h = kernel_tanh(c) * o
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
) -> Tuple[Tensor, Tensor, Tensor]:
    """(N, H) outputs and (B, H) final h, c of one LSTM layer-direction."""
    if torch.jit.is_scripting() or kernel_runs_plain(x):
        xw = kernel_project(x, w_ih, bias)
        return lstm_kernel_plain(xw, w_hh, h0, c0, batch_sizes, reverse)
    out, h_n, c_n = LSTMKernelFunction.apply(
        x, w_ih, bias, w_hh, h0, c0, batch_sizes, reverse
    )
    return out, h_n, c_n


class CustomLSTM(KernelStackBase, nn.LSTM):
    """`nn.LSTM` with our kernel; gates as torch (x = input, h = previous state):

    i = σ(W_ii x + b_ii + W_hi h + b_hi)    f = σ(W_if x + b_if + W_hf h + b_hf)
    g = tanh(W_ig x + b_ig + W_hg h + b_hg) o = σ(W_io x + b_io + W_ho h + b_ho)
    c' = f ⊙ c + i ⊙ g                      h' = o ⊙ tanh(c')
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
        proj_size: int = 0,
        device=None,
        dtype=None,
        *,
        impl: str = "custom",
        residual: bool = False,
        initial_state: str = "zeros",
    ):
        if proj_size != 0:
            raise ValueError(
                "Expected proj_size=0 (the custom kernels have no projection; "
                f"use nn.LSTM), got {proj_size}"
            )
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
        self.impl = kernel_check_impl(impl, self._kernel_impls())
        self._kernel_options(residual, initial_state)

    def _kernel_impls(self) -> Tuple[str, ...]:
        return ("custom", "auto", "torch")

    def _kernel_layer(
        self,
        x: Tensor,
        k: int,
        state: List[Tensor],
        batch_sizes: List[int],
        reverse: bool,
    ) -> Tuple[Tensor, List[Tensor]]:
        w_ih, w_hh, b_ih, b_hh = self._kernel_weights(k)
        bias = b_ih + b_hh if b_ih is not None and b_hh is not None else None
        out, h_n, c_n = lstm_kernel_layer(
            x, w_ih, bias, w_hh, state[0], state[1], batch_sizes, reverse
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
