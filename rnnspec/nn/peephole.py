"""Peephole LSTM cell: `PeepholeLSTM`, a `CustomLSTM` whose gates see the cell.

i = σ(W_ii x + b_ii + W_hi h + b_hi + p_i ⊙ c)
f = σ(W_if x + b_if + W_hf h + b_hf + p_f ⊙ c)
g = tanh(W_ig x + b_ig + W_hg h + b_hg)
c' = f ⊙ c + i ⊙ g
o = σ(W_io x + b_io + W_ho h + b_ho + p_o ⊙ c')
h' = o ⊙ tanh(c')
"""

import math
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from .kernel import (
    KernelThreads,
    kernel_final_rows,
    kernel_input_grads,
    kernel_project,
    kernel_recompute_grads,
    kernel_runs_plain,
    kernel_state_rows,
    kernel_tanh,
)
from .lstm import (
    CustomLSTM,
    LSTMBackward,
    lstm_kernel_run,
    lstm_split,
    lstm_tensor_needs,
)


class PeepholeKernelFunction(torch.autograd.Function):
    """One direction of one peephole LSTM layer (equations in PeepholeLSTM).

    As LSTMKernelFunction (with its optional projection w_hr and regularizer masks
    rec_mask, zone_h, zone_c; the same `lstm_kernel_run` and `LSTMBackward`), plus
    the peephole paths in backward: dc̃_t += dz_o p_o and dc_{t-1} += dz_i p_i +
    dz_f p_f; the peephole gradients are reductions over each span's rows. With
    zoneout i and f see the zoned c_{t-1}, o the un-zoned c̃_t.
    """

    @staticmethod
    def forward(
        ctx,
        x,
        w_ih,
        bias,
        w_hh,
        peep,
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
            x, w_ih, bias, w_hh, peep, h0, c0, batch_sizes, reverse, w_hr, *regs
        )
        gates, cs, ms, hs, zs, h_in, h_n, c_n = run
        saved = (x, w_ih, bias, w_hh, peep, h0, c0, gates, cs, hs, w_hr, ms)
        ctx.save_for_backward(*saved, rec_mask, zone_h, zone_c, zs, h_in)
        ctx.plan = (batch_sizes, reverse)
        ctx.spent = False
        return hs, h_n, c_n

    @staticmethod
    def backward(ctx, d_hs, d_hn, d_cn):
        x, w_ih, bias, w_hh, peep, h0, c0, gates, cs, hs, w_hr, ms, *regs = (
            ctx.saved_tensors
        )
        batch_sizes, reverse = ctx.plan
        if torch.is_grad_enabled():  # create_graph=True: differentiate the plain steps

            def plain(x, w_ih, bias, w_hh, peep, h0, c0, w_hr):
                xw = kernel_project(x, w_ih, bias)
                return peephole_kernel_plain(
                    xw, w_hh, peep, h0, c0, batch_sizes, reverse, w_hr, *regs[:3]
                )

            inputs = [x, w_ih, bias, w_hh, peep, h0, c0, w_hr]
            needs = lstm_tensor_needs(ctx.needs_input_grad, 7)
            grads = kernel_recompute_grads(plain, inputs, needs, [d_hs, d_hn, d_cn])
            return (*grads[:7], None, None, grads[7], None, None, None)
        if ctx.spent:  # backward again (retain_graph): the first wrote over the gates
            run = lstm_kernel_run(
                x, w_ih, bias, w_hh, peep, h0, c0, batch_sizes, reverse, w_hr, *regs[:3]
            )
            gates = run[0]
        ctx.spent = True
        saved = (gates, cs, hs, ms, w_hh, h0, c0, w_hr)
        back = LSTMBackward(ctx, saved, regs, peep, (d_hs, d_hn, d_cn))
        dh0, dc0, d_whh, d_whr = back.run()
        with KernelThreads(back.threads):
            dx, d_wih, d_bias = kernel_input_grads(ctx, back.dz, x, w_ih)
        grads = (dx, d_wih, d_bias, d_whh, back.d_peep, dh0, dc0, None, None, d_whr)
        return (*grads, None, None, None)


def peephole_kernel_plain(
    xw: Tensor,
    w_hh: Tensor,
    peep: Tensor,
    h0: Tensor,
    c0: Tensor,
    batch_sizes: List[int],
    reverse: bool,
    w_hr: Optional[Tensor] = None,
    rec_mask: Optional[Tensor] = None,
    zone_h: Optional[Tensor] = None,
    zone_c: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor, Tensor]:
    """PeepholeKernelFunction's forward step for step, left to autograd."""
    H = c0.shape[1]
    p_if, p_o = peep[: 2 * H].view(2, H), peep[2 * H :]
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
        size = batch_sizes[t]
        h_prev = kernel_state_rows(h, h0, size, h_done)
        c_prev = kernel_state_rows(c, c0, size, c_done)
        h_in = h_prev
        if rec_mask is not None:
            h_in = h_prev * rec_mask[:size]
        a = torch.addmm(xs[t], h_in, w_t)  # (size, 4H)
        a_if = a[:, : 2 * H].view(size, 2, H).addcmul(c_prev.unsqueeze(1), p_if)
        i, f = a_if.sigmoid().view(size, 2 * H).chunk(2, 1)
        g = kernel_tanh(a[:, 2 * H : 3 * H])
        c = torch.addcmul(f * c_prev, i, g)
        o = a[:, 3 * H :].addcmul(c, p_o).sigmoid()
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


def peephole_kernel_layer(
    x: Tensor,
    w_ih: Tensor,
    bias: Optional[Tensor],
    w_hh: Tensor,
    peep: Tensor,
    h0: Tensor,
    c0: Tensor,
    batch_sizes: List[int],
    reverse: bool,
    w_hr: Optional[Tensor] = None,
    rec_mask: Optional[Tensor] = None,
    zone_h: Optional[Tensor] = None,
    zone_c: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor, Tensor]:
    """(N, H or P) outputs, (B, H or P) final h and (B, H) final c of one peephole
    layer-direction; P with the projection w_hr. The regularizer masks as
    PeepholeKernelFunction takes them (None: off)."""
    if torch.jit.is_scripting() or kernel_runs_plain(x):
        xw = kernel_project(x, w_ih, bias)
        return peephole_kernel_plain(
            xw, w_hh, peep, h0, c0, batch_sizes, reverse, w_hr, rec_mask, zone_h, zone_c
        )
    out, h_n, c_n = PeepholeKernelFunction.apply(
        x,
        w_ih,
        bias,
        w_hh,
        peep,
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


class PeepholesLoadAsZero:
    """Mixed in before an LSTM with peepholes `_peephole_names`: a state dict without
    them (a plain LSTM's, or one saved with peephole=False) loads them as p = 0."""

    def _load_from_state_dict(
        self,
        state_dict,
        prefix,
        local_metadata,
        strict,
        missing_keys,
        unexpected_keys,
        error_msgs,
    ):
        super()._load_from_state_dict(  # type: ignore[misc]
            state_dict,
            prefix,
            local_metadata,
            strict,
            missing_keys,
            unexpected_keys,
            error_msgs,
        )
        for name in self._peephole_names:
            if prefix + name in missing_keys:
                missing_keys.remove(prefix + name)
                with torch.no_grad():
                    getattr(self, name).zero_()


class PeepholeLSTM(PeepholesLoadAsZero, CustomLSTM):
    """LSTM with peephole connections (after Gers & Schmidhuber), c = previous cell:

        i = σ(W_ii x + b_ii + W_hi h + b_hi + p_i ⊙ c)
        f = σ(W_if x + b_if + W_hf h + b_hf + p_f ⊙ c)
        g = tanh(W_ig x + b_ig + W_hg h + b_hg)
        c' = f ⊙ c + i ⊙ g
        o = σ(W_io x + b_io + W_ho h + b_ho + p_o ⊙ c')
        h' = o ⊙ tanh(c')                     (then W_hr h' with proj_size, as torch)

    torch's LSTM parameters plus `weight_ch_l{k}[_reverse]` (3H,) = [p_i, p_f, p_o],
    drawn U(-1/√H, 1/√H) after torch's own init. A plain nn.LSTM state dict loads
    (peepholes set to zero): it then computes exactly that LSTM. Always our kernel.
    """

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
        **options,
    ):
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
        suffixes = ["", "_reverse"] if bidirectional else [""]
        names = [f"weight_ch_l{k}{s}" for k in range(num_layers) for s in suffixes]
        self._peephole_names = names
        bound = 1.0 / math.sqrt(hidden_size)
        for name in names:
            weight = nn.Parameter(
                torch.empty(3 * hidden_size, device=device, dtype=dtype)
            )
            nn.init.uniform_(weight, -bound, bound)
            setattr(self, name, weight)
        self._init_flat_weights()

    def _kernel_impls(self) -> Tuple[str, ...]:
        return ("custom", "auto")  # torch has no peephole LSTM

    def _init_flat_weights(self) -> None:
        # torch refreshes its weight list here (init, .to(), changed weights); keep
        # ours with it, as a plain list so that TorchScript sees List[Tensor]
        super()._init_flat_weights()
        names = getattr(self, "_peephole_names", [])
        self._flat_peepholes = [getattr(self, n) for n in names if hasattr(self, n)]

    def _weights_have_changed(self) -> bool:
        peepholes = zip(self._flat_peepholes, self._peephole_names, strict=True)
        replaced = any(p is not getattr(self, n) for p, n in peepholes)
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
        peep = self._flat_peepholes[k]
        w_hr = self._kernel_proj_weight(k)
        h0, c0 = state[0], state[1]
        out, h_n, c_n = peephole_kernel_layer(
            x,
            w_ih,
            bias,
            w_hh,
            peep,
            h0,
            c0,
            batch_sizes,
            reverse,
            w_hr,
            rec_mask=masks[0],
            zone_h=masks[1],
            zone_c=masks[2],
        )
        return out, [h_n, c_n]
