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
        H = c0.shape[1]
        gates = kernel_project(x, w_ih, bias)  # (N, 4H): input part, then i, f, g, o
        cs = x.new_empty(gates.shape[0], H)  # (N, H) c̃_t, before zoneout
        ms = torch.empty_like(cs)  # (N, H) m_t = o ⊙ tanh(c̃_t): h̃_t unless projected
        hs = ms if w_hr is None else x.new_empty(cs.shape[0], w_hr.shape[0])
        zs = cs if zone_c is None else torch.empty_like(cs)  # (N, H) zoned c_t
        h_in = lstm_masked_rows(hs, rec_mask)  # (N, W) m ⊙ h_{t-1}, or None
        gs, css, mss, outs, zss = (
            t.split(batch_sizes) for t in (gates, cs, ms, hs, zs)
        )
        zh, zc, ins = (lstm_split(t, batch_sizes) for t in (zone_h, zone_c, h_in))
        w_t = w_hh.t()
        r_t = None if w_hr is None else w_hr.t()
        h_done: List[Tensor] = []
        c_done: List[Tensor] = []
        h, c = h0[:0], c0[:0]
        for t in kernel_order(len(gs), reverse):
            size = batch_sizes[t]
            h_prev = kernel_state_rows(h, h0, size, h_done)
            c_prev = kernel_state_rows(c, c0, size, c_done)
            if rec_mask is None:
                a = gs[t].addmm_(h_prev, w_t)  # (size, 4H) pre-activations
            else:
                h_mask = torch.mul(h_prev, rec_mask[:size], out=ins[t])
                a = gs[t].addmm_(h_mask, w_t)
            i, f, g, o = a.chunk(4, 1)
            a[:, : 2 * H].sigmoid_()  # i, f
            kernel_tanh(g, out=g)
            o.sigmoid_()
            c = torch.mul(f, c_prev, out=css[t]).addcmul_(i, g)
            h = kernel_tanh(c, out=mss[t]).mul_(o)
            if r_t is not None:
                h = torch.mm(h, r_t, out=outs[t])
            if zone_c is not None:
                c = torch.lerp(c, c_prev, zc[t], out=zss[t])
            if zone_h is not None:
                h = h.lerp_(h_prev, zh[t])
        saved = (x, w_ih, bias, w_hh, h0, c0, gates, cs, hs, w_hr, ms)
        ctx.save_for_backward(*saved, rec_mask, zone_h, zone_c, zs, h_in)
        ctx.plan = (batch_sizes, reverse)
        return hs, kernel_final_rows(h, h_done), kernel_final_rows(c, c_done)

    @staticmethod
    def backward(ctx, d_hs, d_hn, d_cn):
        x, w_ih, bias, w_hh, h0, c0, gates, cs, hs, w_hr, ms, *regs = ctx.saved_tensors
        rec_mask, zone_h, zone_c, zs, h_in = regs
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
        H = c0.shape[1]
        c_prev = kernel_prev_rows(zs, c0, batch_sizes, reverse)  # (N, H) c_{t-1}
        dz, K = lstm_backward_factors(gates, c_prev, cs)  # dz holds P for now
        steps = LSTMRegularizerGrads(dz, K, zone_h, zone_c, rec_mask, w_hr, batch_sizes)
        d_outs, dzs, Ks = (t.split(batch_sizes) for t in (d_hs, dz, K))
        dh_all = None if w_hr is None else torch.empty_like(d_hs)  # (N, P) dh̃_t
        dhs = d_outs if dh_all is None else dh_all.split(batch_sizes)
        fs = gates[:, H : 2 * H].split(batch_sizes)
        h_grads: List[Tensor] = []
        c_grads: List[Tensor] = []
        dh, dc = d_hn[:0], d_cn[:0]  # gradients of the next-run step's start state
        for t in kernel_order(len(dzs), not reverse):
            size, dzt = batch_sizes[t], dzs[t]  # (size, 4H)
            dh = kernel_state_rows_grad(dh, d_hn, size, h_grads)
            dh, dm = steps.dm(t, dh, d_outs[t], dhs[t], w_hr)  # of h_t, m_t
            dzt[:, 3 * H :].mul_(dm)  # o
            dc = kernel_state_rows_grad(dc, d_cn, size, c_grads)
            dc, carry = steps.dc(t, dc, dm, Ks[t])  # of c̃_t; d^c ⊙ dc_t
            dzt[:, : 3 * H].view(size, 3, H).mul_(dc.unsqueeze(1))  # i, f, g
            dh = steps.dh_prev(t, dzt, w_hh, dh)
            dc = dc * fs[t] if carry is None else carry.addcmul_(dc, fs[t])
        kernel_state_rows_grad(dh, d_hn, 0, h_grads)
        kernel_state_rows_grad(dc, d_cn, 0, c_grads)
        if h_in is None:
            h_in = kernel_prev_rows(hs, h0, batch_sizes, reverse)  # (N, H or P)
        d_whh = dz.t() @ h_in  # (4H, H or P)
        dx, d_wih, d_bias = kernel_input_grads(ctx, dz, x, w_ih)
        dh0, dc0 = kernel_init_grad(h_grads), kernel_init_grad(c_grads)
        d_whr = None if dh_all is None else dh_all.t() @ ms  # (P, H)
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


class LSTMRegularizerGrads:
    """The regularizers' share of an LSTM backward step (shared with the peephole
    LSTM), with their per-row factors formed once, outside the time loop.

    Zoneout h_t = d ⊙ h_{t-1} + (1-d) ⊙ h̃_t gives dh̃_t = (1-d) ⊙ dh_t, and d ⊙ dh_t
    flows to h_{t-1}; c likewise. Without a projection dm_t = dh̃_t only scales P_o
    and K, so (1-d^h) is folded into them here and a step multiplies by it nowhere.
    Recurrent dropout: dh_{t-1} = m ⊙ (dz_t W_hh).
    """

    def __init__(self, dz, K, zone_h, zone_c, rec_mask, w_hr, batch_sizes):
        H = K.shape[1]
        self.rec_mask = rec_mask  # (B, W), or None
        self.zh = lstm_split(zone_h, batch_sizes)
        self.zc = lstm_split(zone_c, batch_sizes)
        self.keep_c = lstm_split(None if zone_c is None else 1 - zone_c, batch_sizes)
        self.keep_h: List[Tensor] = []
        if zone_h is not None:
            keep = 1 - zone_h  # (N, W)
            if w_hr is None:
                K.mul_(keep)
                dz[:, 3 * H :].mul_(keep)
            else:
                self.keep_h = list(keep.split(batch_sizes))

    def dm(self, t, dh, d_out, dh_row, w_hr):
        """Gradients of h_t (zoned: from the next step and the output) and of m_t
        (times 1-d^h when folded); with w_hr, dh̃_t goes to `dh_row` for dW_hr."""
        if w_hr is None:
            dh = dh + d_out
            return dh, dh
        if not self.keep_h:
            dh = torch.add(dh, d_out, out=dh_row)
            return dh, dh @ w_hr
        dh = dh + d_out
        return dh, torch.mul(dh, self.keep_h[t], out=dh_row) @ w_hr

    def dc(self, t, dc, dm, K):
        """dc̃_t, and d^c ⊙ dc_t for c_{t-1} (None without zoneout), from dc_t, the
        gradient of the zoned c_t (a tensor of this backward's own: reused)."""
        if not self.zc:
            return dc.addcmul(dm, K), None
        dc_new = torch.mul(dc, self.keep_c[t]).addcmul_(dm, K)
        return dc_new, dc.mul_(self.zc[t])

    def dh_prev(self, t, dzt, w_hh, dh):
        """Gradient of h_{t-1}: through the masked matmul input, plus d^h ⊙ dh_t."""
        grad = dzt @ w_hh  # (size, W)
        if self.rec_mask is not None:
            grad.mul_(self.rec_mask[: dzt.shape[0]])
        if self.zh:
            grad.addcmul_(dh, self.zh[t])
        return grad


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
