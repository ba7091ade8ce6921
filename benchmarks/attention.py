"""Attention over earlier steps: seed 000's per-step loop vs rnnspec, on CPU.

    python benchmarks/attention.py [--quick] [--repeats N]

Prints markdown tables. Inputs: recurrent outputs o of shape (B, T, H) with B=16,
H=256 (tanh of normal noise, like LSTM outputs), float32, torch's default threads.

Rows, all on the same o:
- seed 000 loop as written: seed 000's model, ``mask=strict`` general attention, one
  step at a time on one sequence at a time (the seed's model takes batch 1), the
  anchor of the ratio columns;
- seed 000 loop, batched over B: the same loop over the whole batch with bmm (as in
  tests/nn/test_attention.py), a stronger anchor;
- rnnspec general strict: ``GeneralAttention(H, mask="strict")`` with the same
  weights (blocked matmuls on CPU), and the same module forced onto
  ``F.scaled_dot_product_attention`` (``use_sdpa=True``);
- rnnspec dot causal, additive causal (T <= 256): the other score kinds;
- F.sdpa causal anchor: ``F.scaled_dot_product_attention(o, o, o, is_causal=True)``,
  the bare kernel with no projection.

Timing: median of ``--repeats`` samples; a sample is the mean over k back-to-back calls
(k so that a sample lasts >= 100 ms) after one untimed call. "fwd" runs under
``torch.no_grad()``; "fwd+bwd" runs forward with autograd and ``out.sum().backward()``
into o and the parameters. On Linux, a sample waits until no other process is
runnable and is retaken (up to 30 times) if other processes used the CPU meanwhile.

Memory, measured in separate untimed calls: "largest tensor" is the largest storage
any aten op returns during the call (forward only, or forward and backward), seen
through a TorchDispatchMode: the largest intermediate, B x T x T scores for a
one-shot implementation. "saved" is the storage kept between forward and backward
(saved_tensors_hooks, each storage counted once): what training holds per layer.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import cpu_model  # noqa: E402
from benchmarks.seeds import seed000_as_written, seed000_loop  # noqa: E402
from rnnspec.nn.attention import (  # noqa: E402
    AdditiveAttention,
    DotAttention,
    GeneralAttention,
)

BATCH, HIDDEN = 16, 256


# ---------------------------------------------------------------- measuring


def _proc_stat():
    """(busy jiffies of all CPUs, runnable processes), or None off Linux."""
    try:
        with open("/proc/stat") as f:
            busy = runnable = 0
            for line in f:
                if line.startswith("cpu "):
                    ticks = [int(x) for x in line.split()[1:]]
                    busy = sum(ticks) - ticks[3] - ticks[4]  # minus idle, iowait
                elif line.startswith("procs_running"):
                    runnable = int(line.split()[1])
            return busy, runnable
    except OSError:
        return None


def _wait_until_quiet(limit_s: float = 60.0) -> None:
    """Wait (at most limit_s) until only this process is runnable, 5 looks in a row."""
    start = time.time()
    quiet = 0
    while quiet < 5 and time.time() - start < limit_s:
        stat = _proc_stat()
        if stat is None:
            return
        quiet = quiet + 1 if stat[1] <= 1 else 0
        time.sleep(0.01 if quiet else 0.05)


def _sample(fn, calls: int) -> float:
    """Seconds per call over `calls` back-to-back calls, retaken if others ran."""
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for _ in range(30):
        _wait_until_quiet()
        fn()
        before, cpu0, t0 = _proc_stat(), time.process_time(), time.perf_counter()
        for _ in range(calls):
            fn()
        seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        after = _proc_stat()
        if before is None or after is None:
            break
        others = (after[0] - before[0]) / hz - cpu  # CPU seconds of other processes
        if others <= 0.01 + 0.02 * seconds:
            break
    return seconds / calls


def median_ms(fn, repeats: int) -> float:
    start = time.perf_counter()
    fn()
    calls = max(1, int(0.1 / max(time.perf_counter() - start, 1e-6)))
    return 1e3 * statistics.median(_sample(fn, calls) for _ in range(repeats))


class _LargestTensor(TorchDispatchMode):
    """Records the largest storage that any aten op (forward or backward) returns."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.untyped_storage().nbytes())
        return out


def memory_mib(model, o: torch.Tensor):
    """(largest tensor in fwd, in fwd+bwd, tensors saved for backward), MiB."""
    with _LargestTensor() as fwd, torch.no_grad():
        model(o)
    storages = {}

    def pack(t):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    o.grad = None
    for p in model.parameters() if isinstance(model, nn.Module) else []:
        p.grad = None
    with _LargestTensor() as fwd_bwd:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(o)
        out.sum().backward()
    mib = 2.0**-20
    return fwd.largest * mib, fwd_bwd.largest * mib, sum(storages.values()) * mib


# ---------------------------------------------------------------- cases


def make_cases(steps: int, quick: bool):
    """(name, module-or-callable, is_loop) for one sequence length."""
    torch.manual_seed(0)
    general = GeneralAttention(HIDDEN, mask="strict")
    seed_attn = nn.Linear(HIDDEN, HIDDEN)
    seed_attn.load_state_dict(general.query.state_dict())
    general_sdpa = GeneralAttention(HIDDEN, mask="strict")
    general_sdpa.load_state_dict(general.state_dict())
    general_sdpa.use_sdpa = True
    cases = [
        (
            "seed 000 loop as written (one sequence at a time)",
            lambda o: seed000_as_written(seed_attn, o),
        ),
        ("seed 000 loop, batched over B", lambda o: seed000_loop(seed_attn, o)),
        ("rnnspec general strict", general),
        ("rnnspec general strict, use_sdpa=True", general_sdpa),
        ("rnnspec dot causal", DotAttention(HIDDEN)),
    ]
    if steps <= 256 and not quick:
        cases.append(("rnnspec additive causal", AdditiveAttention(HIDDEN)))
    cases.append(
        (
            "F.sdpa(o, o, o, is_causal=True) anchor",
            lambda o: F.scaled_dot_product_attention(o, o, o, is_causal=True),
        )
    )
    return cases


def measure(model, o: torch.Tensor, repeats: int):
    """(fwd ms, fwd+bwd ms, then memory_mib's three sizes) of model on o."""
    params = list(model.parameters()) if isinstance(model, nn.Module) else []

    def forward():
        with torch.no_grad():
            model(o)

    def forward_backward():
        o.grad = None
        for p in params:
            p.grad = None
        model(o).sum().backward()

    fwd, fwd_bwd = median_ms(forward, repeats), median_ms(forward_backward, repeats)
    return (fwd, fwd_bwd, *memory_mib(model, o))


def run(steps_list, repeats: int, loop_repeats_long: int, quick: bool) -> None:
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {cpu_model()}"
    )
    print(f"B={BATCH}, H={HIDDEN}, float32; median of {repeats} samples", end="")
    print(f" ({loop_repeats_long} for the loop at T >= 1024)")
    print()
    print(
        "| T | method | fwd ms | fwd+bwd ms | fwd: seed / this | fwd+bwd: seed / this"
        " | largest tensor fwd MiB | largest tensor fwd+bwd MiB | saved MiB |"
    )
    print("|" + "---|" * 9)
    for steps in steps_list:
        torch.manual_seed(1)
        o = torch.randn(BATCH, steps, HIDDEN).tanh().requires_grad_()
        loop = None
        cases = make_cases(steps, quick)
        with torch.no_grad():  # the loops and general strict compute the same thing
            reference = cases[0][1](o)
            for _, model in cases[1:3]:
                torch.testing.assert_close(model(o), reference, atol=1e-5, rtol=1e-4)
        for name, model in cases:
            is_loop = name.startswith("seed")
            n = loop_repeats_long if is_loop and steps >= 1024 else repeats
            fwd, fwd_bwd, *mem = measure(model, o, n)
            ratios = ["-", "-"]
            if loop is None:
                loop = (fwd, fwd_bwd)  # the first row: the loop as written
            else:
                ratios = [f"{loop[0] / fwd:.1f}x", f"{loop[1] / fwd_bwd:.1f}x"]
            mems = [f"{m:.1f}" for m in mem]
            cells = [str(steps), name, f"{fwd:.2f}", f"{fwd_bwd:.2f}", *ratios, *mems]
            print("| " + " | ".join(cells) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="T in {64, 256} only")
    parser.add_argument("--repeats", type=int, default=7, help="samples per median")
    parser.add_argument(
        "--loop-repeats-long",
        type=int,
        default=3,
        help="samples for the seed loop at T >= 1024 (seconds per call)",
    )
    args = parser.parse_args()
    steps_list = [64, 256] if args.quick else [64, 256, 1024]
    run(steps_list, args.repeats, args.loop_repeats_long, args.quick)


if __name__ == "__main__":
    main()
