"""From-scratch kernels against torch's own modules (oneDNN LSTM on CPU).

    .venv/bin/python benchmarks/kernels.py                # B=32, T=100, 256 -> 256
    .venv/bin/python benchmarks/kernels.py --repeats 21
    .venv/bin/python benchmarks/kernels.py --quick        # a smoke run
    .venv/bin/python benchmarks/kernels.py --only proj --threads 1 --repeats 5
    .venv/bin/python benchmarks/kernels.py --only regularizers   # regularizers.py

For each configuration, "fwd" is an inference forward (under no_grad) and
"fwd+bwd" a training step: forward, backward of a fixed random projection of the
output, gradients for the input and every weight. Each repeat runs every
contender once, in rotating order, so a busy neighbour on the machine slows all of
them alike; the table gives the median time of each and the median of the
per-repeat ratios ours / torch. Weights are shared (ours are loaded into torch's
module); PeepholeLSTM is timed against nn.LSTM, the cost of its extra terms.
The `proj` rows time nn.LSTM(proj_size=P) against CustomLSTM(proj_size=P) on
torch's kernel (impl auto) and ours, and PeepholeLSTM(proj_size=P), all in one
interleaved group. `--only regularizers` runs benchmarks/regularizers.py (the
issue-14 options and their anchors) with the other flags.
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

from benchmarks import regularizers  # noqa: E402
from benchmarks.common import add_kernel_arguments, machine  # noqa: E402
from benchmarks.seeds import Seed002Loop  # noqa: E402
from rnnspec.nn import CustomGRU, CustomLSTM, CustomRNN, PeepholeLSTM  # noqa: E402

# (label, ours, torch's, targets (fwd, fwd+bwd) or None)
CELLS = [
    ("LSTM", CustomLSTM, nn.LSTM, (1.8, 1.5)),
    ("peephole LSTM", PeepholeLSTM, nn.LSTM, (1.8, 1.5)),
    ("GRU", CustomGRU, nn.GRU, None),
    ("RNN tanh", CustomRNN, nn.RNN, None),
]

#: the projection rows: P = 128 (at most half the hidden size, for --quick)
PROJ_SIZE = 128
# (label, ours, impl, targets (fwd, fwd+bwd) or None), each against nn.LSTM(proj)
PROJ_CELLS = [
    ("LSTM proj, impl auto (torch's kernel)", CustomLSTM, "auto", (1.05, 1.05)),
    ("LSTM proj, impl custom", CustomLSTM, "custom", None),
    ("peephole LSTM proj", PeepholeLSTM, "custom", (None, 1.5)),
]


def proj_contenders(size, proj, layers, bidirectional):
    """nn.LSTM(proj_size) and every PROJ_CELLS module, with the same weights."""
    kw = dict(batch_first=True, bidirectional=bidirectional, proj_size=proj)
    theirs = nn.LSTM(size, size, layers, **kw)
    models = {"torch": theirs}
    for label, cls, impl, _ in PROJ_CELLS:
        ours = cls(size, size, layers, impl=impl, **kw)
        ours.load_state_dict(theirs.state_dict(), strict=False)  # peepholes drawn
        models[label] = ours
    return models


def contenders(ours_cls, torch_cls, size, layers, bidirectional):
    ours = ours_cls(size, size, layers, batch_first=True, bidirectional=bidirectional)
    theirs = torch_cls(
        size, size, layers, batch_first=True, bidirectional=bidirectional
    )
    theirs.load_state_dict(ours.state_dict(), strict=False)
    models = {"torch": theirs, "ours": ours}
    if torch_cls is nn.LSTM and ours_cls is CustomLSTM and layers == 1:
        if not bidirectional:
            models["seed 002 naive loop (8 matmuls/step)"] = Seed002Loop(theirs, False)
            models["seed 002 fused loop (2 matmuls/step)"] = Seed002Loop(theirs, True)
    return models


def time_pair(models, x, grad, repeats):
    """{(name, pass): [seconds per repeat]}, contenders interleaved."""

    def fwd(m):
        with torch.no_grad():
            m(x)

    def fwd_bwd(m):
        m.zero_grad(set_to_none=True)
        x.grad = None
        out, _ = m(x)
        out.backward(grad)

    passes = {"fwd": fwd, "fwd+bwd": fwd_bwd}
    names = list(models)
    for m in models.values():  # warm-up (oneDNN primitives, allocator)
        for run in passes.values():
            run(m)
            run(m)
    times = {(n, p): [] for n in names for p in passes}
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for p, run in passes.items():
            for n in order:
                t = time.perf_counter()
                run(models[n])
                times[(n, p)].append(time.perf_counter() - t)
    return times


def main(argv=None):
    only = argparse.ArgumentParser(add_help=False)
    only.add_argument("--only")
    known, rest = only.parse_known_args(argv)
    if known.only == "regularizers":  # its own rows, defaults and time budget
        return regularizers.main(rest)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_kernel_arguments(parser, repeats=11, batch=32, steps=100)
    parser.add_argument(
        "--only",
        help="only the rows whose label contains this (e.g. proj); "
        "'regularizers' runs benchmarks/regularizers.py",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.repeats, args.batch, args.steps, args.size = 3, 8, 20, 64
    torch.manual_seed(0)

    print(f"machine: {machine()}")
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    print(
        f"B={args.batch}, T={args.steps}, input=hidden={args.size}, float32, "
        f"median of {args.repeats} repeats\n"
    )
    print(
        "| cell | layers × dirs | pass | torch ms | ours ms | ours / torch | target |"
    )
    print("|---|---|---|---:|---:|---:|---|")
    for layers, bidirectional in ((1, False), (2, True)):
        shape = f"{layers} × {2 if bidirectional else 1}"
        for label, ours_cls, torch_cls, targets in CELLS:
            if args.only and args.only not in label:
                continue
            torch.manual_seed(0)
            models = contenders(ours_cls, torch_cls, args.size, layers, bidirectional)
            x = torch.randn(args.batch, args.steps, args.size, requires_grad=True)
            out_size = args.size * (2 if bidirectional else 1)
            grad = torch.randn(args.batch, args.steps, out_size)
            with torch.no_grad():  # the same outputs (peepholes add terms)
                expected = models["torch"](x)[0]
                for name, model in models.items():
                    if isinstance(model, PeepholeLSTM):
                        continue
                    torch.testing.assert_close(
                        model(x)[0], expected, atol=1e-5, rtol=1e-4, msg=name
                    )
            times = time_pair(models, x, grad, args.repeats)
            for name in models:
                if name == "torch":
                    continue
                row = label if name == "ours" else name
                for k, p in enumerate(("fwd", "fwd+bwd")):
                    ours, theirs = times[(name, p)], times[("torch", p)]
                    ratio = statistics.median(a / b for a, b in zip(ours, theirs))
                    mine = targets and name == "ours"
                    target = f"≤ {targets[k]}×" if mine else "—"
                    print(
                        f"| {row} | {shape} | {p} | "
                        f"{1e3 * statistics.median(theirs):.1f} | "
                        f"{1e3 * statistics.median(ours):.1f} | {ratio:.2f}× | "
                        f"{target} |"
                    )
        if not args.only or any(args.only in c[0] for c in PROJ_CELLS):
            proj_rows(args, layers, bidirectional, shape)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


def proj_rows(args, layers, bidirectional, shape):
    """The PROJ_CELLS rows of one stack shape: one interleaved group."""
    proj = min(PROJ_SIZE, args.size // 2)
    torch.manual_seed(0)
    models = proj_contenders(args.size, proj, layers, bidirectional)
    x = torch.randn(args.batch, args.steps, args.size, requires_grad=True)
    grad = torch.randn(args.batch, args.steps, proj * (2 if bidirectional else 1))
    with torch.no_grad():  # the same outputs (peepholes add terms)
        expected = models["torch"](x)[0]
        for name, model in models.items():
            if not isinstance(model, PeepholeLSTM):
                torch.testing.assert_close(
                    model(x)[0], expected, atol=1e-5, rtol=1e-4, msg=name
                )
    times = time_pair(models, x, grad, args.repeats)
    for label, _, _, targets in PROJ_CELLS:
        if args.only and args.only not in label:
            continue
        for k, p in enumerate(("fwd", "fwd+bwd")):
            ours, theirs = times[(label, p)], times[("torch", p)]
            ratio = statistics.median(a / b for a, b in zip(ours, theirs))
            target = f"≤ {targets[k]}×" if targets and targets[k] else "—"
            print(
                f"| {label} P={proj} | {shape} | {p} | "
                f"{1e3 * statistics.median(theirs):.1f} | "
                f"{1e3 * statistics.median(ours):.1f} | {ratio:.2f}× | {target} |"
            )


if __name__ == "__main__":
    main()
