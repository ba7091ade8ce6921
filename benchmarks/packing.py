"""Variable-length batches: our packed kernel against torch's two ways on CPU.

    .venv/bin/python benchmarks/packing.py                # B=64, T=200, 256 -> 256
    .venv/bin/python benchmarks/packing.py --repeats 11
    .venv/bin/python benchmarks/packing.py --quick        # a smoke run

Lengths are drawn uniformly in [T/20, T] (seeded). Contenders, all on the same
padded (B, T, N) batch with the same weights:
  torch padded  the module on the whole padded batch, lengths ignored (wrong
                states for short sequences, but torch's fastest: oneDNN for LSTMs);
  torch packed  pack_padded_sequence(enforce_sorted=False) -> module ->
                pad_packed_sequence (what impl="torch" does);
  ours          CustomX(x, lengths=lengths): sorts once, shrinks the batch step by
                step (what impl="auto" runs for packed input on CPU).
"fwd+bwd" is a training step (forward, backward of a fixed random projection of
the output, gradients for the input and every weight); "fwd" runs under no_grad.
Each repeat runs all contenders in rotating order; medians, and medians of the
per-repeat ratios.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import add_kernel_arguments, machine  # noqa: E402
from rnnspec.nn import CustomGRU, CustomLSTM, CustomRNN  # noqa: E402

CELLS = [
    ("LSTM", CustomLSTM, nn.LSTM, True),
    ("GRU", CustomGRU, nn.GRU, False),
    ("RNN tanh", CustomRNN, nn.RNN, False),
]


def measure(ours, theirs, x, grad, lengths, repeats):
    """{(contender, pass): [seconds per repeat]}, contenders interleaved."""
    steps = x.shape[1]

    def padded():
        return theirs(x)[0]

    def packed():
        seq = nn.utils.rnn.pack_padded_sequence(
            x, lengths, batch_first=True, enforce_sorted=False
        )
        out, _ = theirs(seq)
        return nn.utils.rnn.pad_packed_sequence(
            out, batch_first=True, total_length=steps
        )[0]

    def mine():
        return ours(x, None, lengths)[0]

    runs = {"padded": padded, "packed": packed, "ours": mine}

    def step(name, p):
        if p == "fwd":
            with torch.no_grad():
                runs[name]()
            return
        ours.zero_grad(set_to_none=True)
        theirs.zero_grad(set_to_none=True)
        x.grad = None
        runs[name]().backward(grad)

    for name in runs:  # warm-up
        for p in ("fwd", "fwd+bwd"):
            step(name, p)
    names = list(runs)
    times = {(n, p): [] for n in runs for p in ("fwd", "fwd+bwd")}
    for r in range(repeats):
        order = names[r % 3 :] + names[: r % 3]
        for p in ("fwd", "fwd+bwd"):
            for name in order:
                t = time.perf_counter()
                step(name, p)
                times[(name, p)].append(time.perf_counter() - t)
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_kernel_arguments(parser, repeats=7, batch=64, steps=200)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.repeats, args.batch, args.steps, args.size = 3, 16, 40, 64
    B, T, size = args.batch, args.steps, args.size
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(max(1, T // 20), T + 1, (B,), generator=gen)

    print(f"machine: {machine()}")
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    print(
        f"B={B}, T={T}, input=hidden={size}, lengths uniform in [{max(1, T // 20)}, "
        f"{T}] (mean {lengths.float().mean():.0f}), float32, "
        f"median of {args.repeats} repeats, {torch.get_num_threads()} threads\n"
    )
    print(
        "| cell | layers × dirs | pass | torch padded ms | torch packed ms | ours ms "
        "| ours / padded | packed / ours |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for bidirectional in (False, True):
        for label, ours_cls, torch_cls, targeted in CELLS:
            if bidirectional and not targeted:
                continue
            torch.manual_seed(0)
            ours = ours_cls(size, size, batch_first=True, bidirectional=bidirectional)
            theirs = torch_cls(
                size, size, batch_first=True, bidirectional=bidirectional
            )
            theirs.load_state_dict(ours.state_dict())
            x = torch.randn(B, T, size, generator=gen, requires_grad=True)
            grad = torch.randn(B, T, size * (2 if bidirectional else 1), generator=gen)

            times = measure(ours, theirs, x, grad, lengths, args.repeats)
            for p in ("fwd", "fwd+bwd"):
                pad, pac, me = (times[(n, p)] for n in ("padded", "packed", "ours"))
                vs_padded = statistics.median(a / b for a, b in zip(me, pad))
                vs_packed = statistics.median(b / a for a, b in zip(me, pac))
                print(
                    f"| {label} | 1 × {2 if bidirectional else 1} | {p} | "
                    f"{1e3 * statistics.median(pad):.1f} | "
                    f"{1e3 * statistics.median(pac):.1f} | "
                    f"{1e3 * statistics.median(me):.1f} | "
                    f"{vs_padded:.2f}× | {vs_packed:.1f}× |"
                )
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    print("targets (LSTM, fwd+bwd): ours / padded ≤ 1.0×, packed / ours ≥ 4×")


if __name__ == "__main__":
    main()
