"""What `residual`, `initial_state learned` and `forget_bias` cost a training step.

    .venv/bin/python benchmarks/cell_options.py            # B=32, T=100, 256, 2 layers
    .venv/bin/python benchmarks/cell_options.py --quick    # a smoke run

Models are built the way users get them, `rnnspec.instantiate` of spec text: an LSTM
over `features N`, `hidden N`, `layers 2`, no head, once without an option and once
with each (and with all three), for `impl auto` (torch's fused kernel: plain
`nn.LSTM` without options; a `CustomLSTM` calling torch's kernel, a layer at a time
for `residual`, with them) and for `impl custom` (rnnspec's kernel). A training step
is forward, backward of a fixed random projection of the output, gradients for the
input and every parameter (`h0`, `c0` included), on one thread unless --threads says
otherwise. Each repeat runs every model of one impl once, in rotating order, so a
busy neighbour slows all of them alike; repeats stop at --repeats or after --seconds
per impl, at least 3. The table gives the median time of each and the median of the
per-repeat ratios with / without. Before timing, each model is checked against the
one without options: the same outputs for `forget_bias` (an initialisation only) and
a zero learned state, and for `residual`, the layers run one at a time with the
first one's output added to the second's.
"""

import argparse
import os
import statistics
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import rnnspec  # noqa: E402
from benchmarks.common import (  # noqa: E402
    add_kernel_arguments,
    machine,
    time_training_steps,
)

#: (label, the spec lines it adds); the first is the yardstick
OPTIONS = [
    ("without", []),
    ("residual true", ["residual true"]),
    ("initial_state learned", ["initial_state learned"]),
    ("forget_bias 1.0", ["forget_bias 1.0"]),
    ("all three", ["residual true", "initial_state learned", "forget_bias 1.0"]),
]
TARGET = 1.05  # with / without, for each option on its own


def spec_text(size: int, layers: int, impl: str, extra: list) -> str:
    lines = [
        f"input features {size}",
        "cell lstm",
        f"hidden {size}",
        f"layers {layers}",
        f"impl {impl}",
        *extra,
    ]
    body = "".join(f"    {line}\n" for line in lines)
    return f"model Bench {{\n{body}}}\n"


def build(size: int, layers: int, impl: str) -> dict:
    """{label: model} for every OPTIONS row, under the same seed."""
    models = {}
    for label, extra in OPTIONS:
        torch.manual_seed(0)
        (spec,) = rnnspec.parse(spec_text(size, layers, impl, extra))
        models[label] = rnnspec.instantiate(spec)
    return models


def residual_reference(plain: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The plain model's layers one at a time, as nn.LSTMs, each layer after the
    first adding its input to its output."""
    rnn = plain.rnn
    state = rnn.state_dict()
    data = x
    for layer in range(rnn.num_layers):
        size = rnn.input_size if layer == 0 else rnn.hidden_size
        one = nn.LSTM(size, rnn.hidden_size, batch_first=True)
        suffix = f"_l{layer}"
        one.load_state_dict(
            {
                k[: -len(suffix)] + "_l0": v
                for k, v in state.items()
                if k.endswith(suffix)
            }
        )
        out = one(data)[0]
        data = out + data if layer > 0 else out
    return data


def check(models: dict, x: torch.Tensor) -> None:
    """Each option computes what it should, from the plain model's weights (loaded
    into the others: check a set of models that is not timed)."""
    plain = models["without"]
    with torch.no_grad():
        expected = plain(x)[0]
        for label in ("initial_state learned", "forget_bias 1.0"):
            model = models[label]
            state = plain.state_dict()
            missing = model.load_state_dict(state, strict=False).missing_keys
            assert all(k.endswith(("h0", "c0")) for k in missing), missing
            torch.testing.assert_close(model(x)[0], expected, msg=label)
        model = models["residual true"]
        model.load_state_dict(plain.state_dict())
        torch.testing.assert_close(
            model(x)[0], residual_reference(plain, x), atol=1e-5, rtol=1e-4
        )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_kernel_arguments(parser, repeats=31, batch=32, steps=100, threads=1)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument(
        "--seconds", type=float, default=60.0, help="time budget per impl"
    )
    args = parser.parse_args(argv)
    if args.layers < 2:
        parser.error(f"expected --layers >= 2 (residual needs them), got {args.layers}")
    torch.set_num_threads(args.threads)
    if args.quick:
        args.repeats, args.batch, args.steps, args.size = 3, 8, 20, 64

    print(f"machine: {machine()}")
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    print(
        f"B={args.batch}, T={args.steps}, input=hidden={args.size}, "
        f"{args.layers} layers, float32, forward + backward\n"
    )
    print("| impl | spec | ms | with / without | target | repeats |")
    print("|---|---|---:|---:|---|---:|")
    for impl in ("auto", "custom"):
        torch.manual_seed(1)
        x = torch.randn(args.batch, args.steps, args.size, requires_grad=True)
        grad = torch.randn(args.batch, args.steps, args.size)
        check(build(args.size, args.layers, impl), x)
        models = build(args.size, args.layers, impl)
        times = time_training_steps(models, x, grad, args.repeats, args.seconds)
        base = times["without"]
        for label, extra in OPTIONS:
            ms = 1e3 * statistics.median(times[label])
            if label == "without":
                ratio, target = "1.0×", "—"
            else:
                per_repeat = (a / b for a, b in zip(times[label], base))
                ratio = f"{statistics.median(per_repeat):.3f}×"
                target = f"≤ {TARGET}×" if len(extra) == 1 else "—"
            kind = type(models[label].rnn).__name__
            print(
                f"| {impl} | {label} ({kind}) | {ms:.1f} | {ratio} | {target} | "
                f"{len(base)} |"
            )
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
