"""One step at a time: the recurrent stack and attention of `RecurrentModel.step`.

Sampling and streaming feed a model one token at a time. Through `forward` with
T = 1 each token pays for the sequence machinery (checks, packing plans, the
kernel Functions, the fused kernel's set-up): several times the arithmetic of the
step itself. Here a step runs the cell math directly on the layer's weights:

* standard cells (torch's modules, `CustomRNN`, `CustomLSTM`, `CustomGRU`):
  torch's own cell ops (`_VF.lstm_cell`, `gru_cell`, `rnn_tanh_cell`,
  `rnn_relu_cell`, what `nn.LSTMCell` and friends run), `step_cells`; our stacks
  add the options that act around the step (`step_kernel_stack`);
* every other cell of ours (peephole, layer norm, a cell added later): the class's
  own `_kernel_layer` on one packed step of B rows, so the step is that cell's code.

Attention's step is `StepAttention.step` (`rnnspec.nn.attention.step_attention`).

In eval (the only mode `step` runs in) dropout, recurrent dropout and weight drop
are the identity and zoneout blends by its rate (design section 9). Each piece is
reached from the class that needs it (`RecurrentModel`, `KernelStackBase`), so a
generated file holds only the step code of its own model.
"""

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def step_cells(
    rnn: nn.Module,
    x: Tensor,
    hx: List[Tensor],
    zone_h: float = 0.0,
    zone_c: float = 0.0,
    skip: bool = False,
) -> Tuple[Tensor, List[Tensor]]:
    """One step of every layer of a one-direction stack of standard cells.

    x (B, I); `hx` the states [h] or [h, c], each (L, B, width) in torch's layout.
    zone_h, zone_c: zoneout's rates, which h and c keep of their previous values
    (eval); `skip`: layers k >= 1 add their input to their output. Returns the top
    layer's output (B, W) and the new states in `hx`'s layout.
    """
    lstm = rnn.mode == "LSTM"
    weights = step_flat_weights(rnn)
    stride = len(weights) // rnn.num_layers  # w_ih, w_hh, [b_ih, b_hh], [w_hr]
    hs: List[Tensor] = []
    cs: List[Tensor] = []
    for k in range(rnn.num_layers):
        w = weights[k * stride : (k + 1) * stride]
        b_ih, b_hh = (w[2], w[3]) if rnn.bias else (None, None)
        h_prev = hx[0][k]  # (B, W)
        if lstm:
            c_prev = hx[1][k]  # (B, H)
            if rnn.proj_size > 0:
                h, c = step_lstm_proj(x, h_prev, c_prev, w, b_ih, b_hh)
            else:
                h, c = torch._VF.lstm_cell(x, (h_prev, c_prev), w[0], w[1], b_ih, b_hh)
            if zone_c > 0:
                c = torch.lerp(c, c_prev, zone_c)
            cs.append(c)
        elif rnn.mode == "GRU":
            h = torch._VF.gru_cell(x, h_prev, w[0], w[1], b_ih, b_hh)
        elif rnn.mode == "RNN_TANH":
            h = torch._VF.rnn_tanh_cell(x, h_prev, w[0], w[1], b_ih, b_hh)
        else:
            h = torch._VF.rnn_relu_cell(x, h_prev, w[0], w[1], b_ih, b_hh)
        if zone_h > 0:
            h = torch.lerp(h, h_prev, zone_h)
        hs.append(h)
        x = h + x if skip and k > 0 else h
    states = [torch.stack(hs)]
    if lstm:
        states.append(torch.stack(cs))
    return x, states


def step_flat_weights(rnn: nn.Module) -> List[Tensor]:
    """The stack's flat weights, refreshed as forward refreshes them when
    functional_call has put other tensors in its parameters (one dict look-up
    each: torch's own check costs a step of a small model 10%)."""
    params = rnn._parameters
    for name, weight in zip(rnn._flat_weights_names, rnn._flat_weights):
        if params.get(name) is not weight:
            rnn._update_flat_weights()
            break
    return rnn._flat_weights


def step_lstm_proj(
    x: Tensor,
    h_prev: Tensor,
    c_prev: Tensor,
    w: List[Tensor],
    b_ih: Optional[Tensor],
    b_hh: Optional[Tensor],
) -> Tuple[Tensor, Tensor]:
    """One LSTM step with torch's projection: h = W_hr (o ⊙ tanh(c)), P wide
    (torch's lstm_cell wants h as wide as c)."""
    gates = F.linear(x, w[0], b_ih) + F.linear(h_prev, w[1], b_hh)  # (B, 4H)
    i, f, g, o = gates.chunk(4, 1)
    c = torch.sigmoid(f) * c_prev + torch.sigmoid(i) * torch.tanh(g)
    h = torch.mm(torch.sigmoid(o) * torch.tanh(c), w[len(w) - 1].t())  # (B, P)
    return h, c


#: Our stack classes whose step is torch's standard cell (a subclass is not: a
#: peephole or layer-norm LSTM is a CustomLSTM with a step of its own). One string,
#: split: codegen reads a lone class name in quotes as a use of that class.
STEP_STANDARD_CELLS = "CustomRNN CustomLSTM CustomGRU".split()


def step_kernel_stack(
    rnn: nn.Module, x: Tensor, hx: Optional[List[Tensor]]
) -> Tuple[Tensor, List[Tensor]]:
    """`step_cells` for our stack classes (`KernelStackBase`), with their options.

    hx None: the learned initial states where the stack has them, else zeros.
    Standard cells run torch's cell ops with zoneout's rates and the residual
    sums; the others their `_kernel_layer`, given the masks the stack passes in
    eval (zoneout's rates as views; no dropout).
    """
    batch = x.shape[0]
    if hx is None:
        hx = rnn._kernel_learned_states(batch)
    if hx is None:
        hx = rnn._kernel_zero_states(x, batch)
    if type(rnn).__name__ in STEP_STANDARD_CELLS:
        return step_cells(rnn, x, hx, rnn.zoneout, rnn.zoneout_cell, rnn.residual)
    rnn._update_flat_weights()  # functional_call: its own weights too
    masks = rnn._kernel_packed_masks([None, None, None], batch, None, None)
    finals: List[List[Tensor]] = [[] for _ in hx]
    for k in range(rnn.num_layers):
        out, states = rnn._kernel_layer(x, k, [h[k] for h in hx], [batch], False, masks)
        for j in range(len(states)):
            finals[j].append(states[j])
        x = out + x if rnn.residual and k > 0 else out
    return x, [torch.stack(f) for f in finals]
