"""LayerNormGRU (`norm layer` GRU) against nn.GRU and against a per-step loop.

    .venv/bin/python benchmarks/layernorm_gru.py               # B=32, T=100, 256 -> 256
    .venv/bin/python benchmarks/layernorm_gru.py --quick       # a smoke run

A training step (forward, backward of a fixed random projection of the output,
gradients for the input and every weight) of three contenders of one layer, on one
thread unless --threads says otherwise:

* torch: `nn.GRU`, torch's fused kernel, the yardstick (no layer norm);
* ours: `LayerNormGRU`, our kernel with its hand-written backward;
* loop: the same cell as users write it today, a `LayerNormGRUCell` of two
  `nn.Linear` and two `nn.LayerNorm` called once per step, left to autograd.

Ours and the loop share their weights and are checked equal before timing. Each
repeat runs every contender once, in rotating order, so a busy neighbour slows all
of them alike; repeats stop at --repeats or after --seconds, at least 3. The table
gives the median time of each and the median of the per-repeat ratios; for the
loop also loop / nn.GRU, how far a kernel as fast as torch's own would get.
"""

import sys
from pathlib import Path

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import layer_norm_main  # noqa: E402
from rnnspec.nn import LayerNormGRU  # noqa: E402


class LayerNormGRUCell(nn.Module):
    """One step of the layer-normalised GRU, from nn building blocks."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.ih = nn.Linear(input_size, 3 * hidden_size, bias=False)
        self.hh = nn.Linear(hidden_size, 3 * hidden_size, bias=False)
        self.ln_ih = nn.LayerNorm(3 * hidden_size)  # its bias is b_ih
        self.ln_hh = nn.LayerNorm(3 * hidden_size)  # its bias is b_hh

    def forward(self, x: Tensor, h: Tensor) -> Tensor:
        a_r, a_z, a_n = self.ln_ih(self.ih(x)).chunk(3, 1)
        b_r, b_z, b_n = self.ln_hh(self.hh(h)).chunk(3, 1)
        r = torch.sigmoid(a_r + b_r)
        z = torch.sigmoid(a_z + b_z)
        n = torch.tanh(a_n + r * b_n)
        return (1 - z) * n + z * h


class LoopGRU(nn.Module):
    """A batch-first sequence through `LayerNormGRUCell`, one step at a time."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.cell = LayerNormGRUCell(input_size, hidden_size)

    def load_from(self, ours: LayerNormGRU) -> "LoopGRU":
        with torch.no_grad():
            self.cell.ih.weight.copy_(ours.weight_ih_l0)
            self.cell.hh.weight.copy_(ours.weight_hh_l0)
            self.cell.ln_ih.weight.copy_(ours.weight_ln_ih_l0)
            self.cell.ln_ih.bias.copy_(ours.bias_ih_l0)
            self.cell.ln_hh.weight.copy_(ours.weight_ln_hh_l0)
            self.cell.ln_hh.bias.copy_(ours.bias_hh_l0)
        return self

    def forward(self, x: Tensor):
        h = x.new_zeros(x.shape[0], self.cell.hidden_size)
        outs = []
        for t in range(x.shape[1]):
            h = self.cell(x[:, t], h)
            outs.append(h)
        return torch.stack(outs, 1), h.unsqueeze(0)


def contenders(size: int):
    ours = LayerNormGRU(size, size, batch_first=True)
    with torch.no_grad():  # gains away from 1, so that they count
        for name in ("weight_ln_ih_l0", "weight_ln_hh_l0"):
            getattr(ours, name).uniform_(0.5, 1.5)
    theirs = nn.GRU(size, size, batch_first=True)
    theirs.load_state_dict(ours.state_dict(), strict=False)
    return {"torch": theirs, "ours": ours, "loop": LoopGRU(size, size).load_from(ours)}


def main(argv=None):
    layer_norm_main(
        __doc__.split("\n")[0],
        contenders,
        ("LayerNormGRU", "nn.GRU"),
        (1e-5, 1e-4),
        argv,
    )


if __name__ == "__main__":
    main()
