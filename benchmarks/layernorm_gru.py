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

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import add_kernel_arguments, machine  # noqa: E402
from rnnspec.nn import LayerNormGRU  # noqa: E402

#: contender: (target, which ratio)
TARGETS = {"torch": ("≤ 1.6×", "ours / torch"), "loop": ("≥ 3×", "loop / ours")}


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


def time_training_steps(models, x, grad, repeats, seconds):
    """{name: [seconds per training step]}, contenders interleaved."""

    def step(m):
        m.zero_grad(set_to_none=True)
        x.grad = None
        out, _ = m(x)
        out.backward(grad)

    names = list(models)
    for m in models.values():  # warm-up (oneDNN primitives, allocator)
        step(m)
        step(m)
    times = {n: [] for n in names}
    start = time.perf_counter()
    for r in range(repeats):
        if r >= 3 and time.perf_counter() - start > seconds:
            break
        for n in names[r % len(names) :] + names[: r % len(names)]:
            t = time.perf_counter()
            step(models[n])
            times[n].append(time.perf_counter() - t)
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_kernel_arguments(parser, repeats=21, batch=32, steps=100, threads=1)
    parser.add_argument("--seconds", type=float, default=60.0, help="time budget")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.repeats, args.batch, args.steps, args.size = 3, 8, 20, 64
    torch.manual_seed(0)
    models = contenders(args.size)
    x = torch.randn(args.batch, args.steps, args.size, requires_grad=True)
    grad = torch.randn(args.batch, args.steps, args.size)
    with torch.no_grad():  # the loop computes the same cell
        torch.testing.assert_close(
            models["loop"](x)[0], models["ours"](x)[0], atol=1e-5, rtol=1e-4
        )

    print(f"machine: {machine()}")
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    times = time_training_steps(models, x, grad, args.repeats, args.seconds)
    print(
        f"B={args.batch}, T={args.steps}, input=hidden={args.size}, one layer, "
        f"float32, forward + backward, median of {len(times['ours'])} repeats\n"
    )
    print("| contender | ms | ratio | target |")
    print("|---|---:|---:|---|")
    for name in ("torch", "ours", "loop"):
        ms = 1e3 * statistics.median(times[name])
        if name == "ours":
            print(f"| LayerNormGRU (ours) | {ms:.1f} | — | — |")
            continue
        pairs = list(zip(times["ours"], times[name], times["torch"]))
        if name == "torch":
            ratio = statistics.median(a / b for a, b, _ in pairs)
            label, note = "nn.GRU (no layer norm)", ""
        else:
            ratio = statistics.median(b / a for a, b, _ in pairs)
            label = "per-step nn.LayerNorm loop"
            ceiling = statistics.median(b / c for _, b, c in pairs)
            note = f" (loop / nn.GRU {ceiling:.2f}×)"
        target, which = TARGETS[name]
        print(f"| {label} | {ms:.1f} | {which} {ratio:.2f}×{note} | {target} |")
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
