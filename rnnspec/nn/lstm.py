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


class LSTMKernelFunction(torch.autograd.Function):
    """One direction of one LSTM layer; gates i, f, g, o as torch.

    Forward projects every step's input into the gate buffer, which each step then
    completes in place; it saves the activated gates and c_t. Backward first forms,
    for all steps at once, every factor that does not depend on the recurrence
    (`lstm_backward_factors`):
        dz_{i,f,g} = dc_t P_{i,f,g},   dz_o = dm_t P_o,   dc_t += dm_t K
    so a step costs one matmul and five small elementwise ops; each weight gradient
    is then one matmul over all steps.

    With a projection `w_hr` (P, H), torch's proj_size: m_t = o ⊙ tanh(c_t) and
    h_t = W_hr m_t, so h is P wide; a step adds the matmul to h_t (forward) and
    dm_t = dh_t W_hr (backward), and dW_hr = Σ_t dh_tᵀ m_t is one matmul after the
    loop. Without it, m_t is h_t.
    """

    @staticmethod
    def forward(ctx, x, w_ih, bias, w_hh, h0, c0, batch_sizes, reverse, w_hr=None):
        H = c0.shape[1]
        gates = kernel_project(x, w_ih, bias)  # (N, 4H): input part, then i, f, g, o
        cs = x.new_empty(gates.shape[0], H)  # (N, H) c_t
        ms = torch.empty_like(cs)  # (N, H) m_t = o ⊙ tanh(c_t): h_t unless projected
        hs = ms if w_hr is None else x.new_empty(cs.shape[0], w_hr.shape[0])
        gs, css, mss, outs = (t.split(batch_sizes) for t in (gates, cs, ms, hs))
        w_t = w_hh.t()
        r_t = None if w_hr is None else w_hr.t()
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
            h = kernel_tanh(c, out=mss[t]).mul_(o)
            if r_t is not None:
                h = torch.mm(h, r_t, out=outs[t])
        ctx.save_for_backward(x, w_ih, bias, w_hh, h0, c0, gates, cs, hs, w_hr, ms)
        ctx.plan = (batch_sizes, reverse)
        return hs, kernel_final_rows(h, h_done), kernel_final_rows(c, c_done)

    @staticmethod
    def backward(ctx, d_hs, d_hn, d_cn):
        x, w_ih, bias, w_hh, h0, c0, gates, cs, hs, w_hr, ms = ctx.saved_tensors
        batch_sizes, reverse = ctx.plan
        if torch.is_grad_enabled():  # create_graph=True: differentiate the plain steps

            def plain(x, w_ih, bias, w_hh, h0, c0, w_hr):
                xw = kernel_project(x, w_ih, bias)
                return lstm_kernel_plain(xw, w_hh, h0, c0, batch_sizes, reverse, w_hr)

            inputs = [x, w_ih, bias, w_hh, h0, c0, w_hr]
            needs = lstm_tensor_needs(ctx.needs_input_grad, 6)
            grads = kernel_recompute_grads(plain, inputs, needs, [d_hs, d_hn, d_cn])
            return (*grads[:6], None, None, grads[6])
        H = c0.shape[1]
        c_prev = kernel_prev_rows(cs, c0, batch_sizes, reverse)  # (N, H)
        dz, K = lstm_backward_factors(gates, c_prev, cs)  # dz holds P for now
        d_outs, dzs, Ks = (t.split(batch_sizes) for t in (d_hs, dz, K))
        dh_all = None if w_hr is None else torch.empty_like(d_hs)  # (N, P) dh_t
        dhs = d_outs if dh_all is None else dh_all.split(batch_sizes)
        fs = gates[:, H : 2 * H].split(batch_sizes)
        h_grads: List[Tensor] = []
        c_grads: List[Tensor] = []
        dh, dc = d_hn[:0], d_cn[:0]  # gradients of the next-run step's start state
        for t in kernel_order(len(dzs), not reverse):
            size, dzt = batch_sizes[t], dzs[t]  # (size, 4H)
            dh = kernel_state_rows_grad(dh, d_hn, size, h_grads)
            if w_hr is None:
                dm = dh = dh + d_outs[t]
            else:
                dh = torch.add(dh, d_outs[t], out=dhs[t])
                dm = dh @ w_hr  # (size, H)
            dc = kernel_state_rows_grad(dc, d_cn, size, c_grads).addcmul(dm, Ks[t])
            dzt[:, : 3 * H].view(size, 3, H).mul_(dc.unsqueeze(1))  # i, f, g
            dzt[:, 3 * H :].mul_(dm)  # o
            dh = dzt @ w_hh  # (size, H or P)
            dc = dc * fs[t]
        kernel_state_rows_grad(dh, d_hn, 0, h_grads)
        kernel_state_rows_grad(dc, d_cn, 0, c_grads)
        d_whh = dz.t() @ kernel_prev_rows(hs, h0, batch_sizes, reverse)  # (4H, H|P)
        dx, d_wih, d_bias = kernel_input_grads(ctx, dz, x, w_ih)
        dh0, dc0 = kernel_init_grad(h_grads), kernel_init_grad(c_grads)
        d_whr = None if dh_all is None else dh_all.t() @ ms  # (P, H)
        return dx, d_wih, d_bias, d_whh, dh0, dc0, None, None, d_whr


def lstm_tensor_needs(needs: Tuple[bool, ...], n: int) -> Tuple[bool, ...]:
    """`ctx.needs_input_grad` of the tensor inputs of a Function taking n tensors,
    (batch_sizes, reverse), then an optional w_hr: the n, then w_hr's."""
    return needs[:n] + (len(needs) > n + 2 and needs[n + 2],)


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
    w_hr: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor, Tensor]:
    """LSTMKernelFunction's forward step for step, left to autograd."""
    H = c0.shape[1]
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
        if w_hr is not None:
            h = torch.mm(h, w_hr.t())  # (size, P)
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
    layer-direction; P with the projection w_hr."""
    if rec_mask is not None or zone_h is not None or zone_c is not None:
        raise NotImplementedError("recurrent_dropout and zoneout: not yet")
    if torch.jit.is_scripting() or kernel_runs_plain(x):
        xw = kernel_project(x, w_ih, bias)
        return lstm_kernel_plain(xw, w_hh, h0, c0, batch_sizes, reverse, w_hr)
    out, h_n, c_n = LSTMKernelFunction.apply(
        x, w_ih, bias, w_hh, h0, c0, batch_sizes, reverse, w_hr
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
