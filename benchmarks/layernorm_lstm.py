"""LayerNormLSTM (`norm layer` LSTM) against nn.LSTM and against a per-step loop.

    .venv/bin/python benchmarks/layernorm_lstm.py              # B=32, T=100, 256 -> 256
    .venv/bin/python benchmarks/layernorm_lstm.py --quick      # a smoke run

A training step (forward, backward of a fixed random projection of the output,
gradients for the input and every weight) of three contenders of one layer, on one
thread unless --threads says otherwise:

* torch: `nn.LSTM`, torch's fused kernel, the yardstick (no layer norm);
* ours: `LayerNormLSTM`, our kernel with its hand-written backward;
* loop: the same cell as users write it today, a `LayerNormLSTMCell` of two
  `nn.Linear` and three `nn.LayerNorm` called once per step, left to autograd.

Ours and the loop share their weights and are checked equal before timing. Each
repeat runs every contender once, in rotating order, so a busy neighbour slows all
of them alike; repeats stop at --repeats or after --seconds, at least 3. The table
gives the median time of each and the median of the per-repeat ratios; for the
loop also loop / nn.LSTM, how far a kernel as fast as torch's own would get.
"""

import sys
from pathlib import Path

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import layer_norm_main  # noqa: E402
from rnnspec.nn import LayerNormLSTM  # noqa: E402


class LayerNormLSTMCell(nn.Module):
    """One step of the layer-normalised LSTM, from nn building blocks."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.ih = nn.Linear(input_size, 4 * hidden_size, bias=False)
        self.hh = nn.Linear(hidden_size, 4 * hidden_size, bias=False)
        self.ln_ih = nn.LayerNorm(4 * hidden_size)  # its bias is b_ih
        self.ln_hh = nn.LayerNorm(4 * hidden_size)  # its bias is b_hh
        self.ln_c = nn.LayerNorm(hidden_size)

    def forward(self, x: Tensor, h: Tensor, c: Tensor):
        gates = self.ln_ih(self.ih(x)) + self.ln_hh(self.hh(h))
        i, f, g, o = gates.chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(self.ln_c(c))
        return h, c


class LoopLSTM(nn.Module):
    """A batch-first sequence through `LayerNormLSTMCell`, one step at a time."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.cell = LayerNormLSTMCell(input_size, hidden_size)

    def load_from(self, ours: LayerNormLSTM) -> "LoopLSTM":
        cell = self.cell
        with torch.no_grad():
            cell.ih.weight.copy_(ours.weight_ih_l0)
            cell.hh.weight.copy_(ours.weight_hh_l0)
            cell.ln_ih.weight.copy_(ours.weight_ln_ih_l0)
            cell.ln_ih.bias.copy_(ours.bias_ih_l0)
            cell.ln_hh.weight.copy_(ours.weight_ln_hh_l0)
            cell.ln_hh.bias.copy_(ours.bias_hh_l0)
            cell.ln_c.weight.copy_(ours.weight_ln_c_l0)
            cell.ln_c.bias.copy_(ours.bias_ln_c_l0)
        return self

    def forward(self, x: Tensor):
        h = c = x.new_zeros(x.shape[0], self.cell.hidden_size)
        outs = []
        for t in range(x.shape[1]):
            h, c = self.cell(x[:, t], h, c)
            outs.append(h)
        return torch.stack(outs, 1), (h.unsqueeze(0), c.unsqueeze(0))


def contenders(size: int):
    ours = LayerNormLSTM(size, size, batch_first=True)
    with torch.no_grad():  # norms away from their init, so that they count
        for name, p in ours.named_parameters():
            if name.startswith("weight_ln_"):
                p.uniform_(0.5, 1.5)
            elif name.startswith("bias_ln_"):
                p.uniform_(-0.5, 0.5)
    theirs = nn.LSTM(size, size, batch_first=True)
    theirs.load_state_dict(ours.state_dict(), strict=False)
    return {"torch": theirs, "ours": ours, "loop": LoopLSTM(size, size).load_from(ours)}


def main(argv=None):
    layer_norm_main(
        __doc__.split("\n")[0],
        contenders,
        ("LayerNormLSTM", "nn.LSTM"),
        (5e-4, 1e-3),
        argv,
    )


if __name__ == "__main__":
    main()
