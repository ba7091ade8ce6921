"""Attention over earlier steps: seed 000's per-step loop vs rnnspec, on CPU.

    python benchmarks/attention.py [--quick] [--table seeds|memory|both]
        [--before DIR] [--repeats N] [--seconds S] [--threads N]

Prints markdown tables. Inputs: recurrent outputs o of shape (B, T, H) with B=16,
H=256 (tanh of normal noise, like LSTM outputs), float32, 1 thread unless --threads.

The "seeds" table (issue 5), all rows on the same o:
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

The "memory" table (issue 15): what training saves for backward and its forward +
backward time, this checkout ("after") against an older one ("before": ``--before
DIR``, a directory holding an ``rnnspec/`` package, e.g. from ``git archive main
rnnspec | tar -x -C DIR``), same modules, same weights, in the same process.

Timing: the contenders of one table row group are interleaved: each round takes one
sample of every contender, in rotating order, so that a busy neighbour slows all
alike; a sample is the mean over k back-to-back calls (k so that it lasts >= 50 ms).
Times are medians over the rounds, ratios medians of the rounds' ratios. Rounds stop
after ``--repeats`` or once a group has run ``--seconds`` (at least 3 rounds): the
run is bounded on a busy machine. "fwd" runs under ``torch.no_grad()``; "fwd+bwd"
runs forward with autograd and ``out.sum().backward()`` into o and the parameters.

Memory, measured in separate untimed calls: "largest tensor" is the largest storage
any aten op returns during the call (forward only, or forward and backward), seen
through a TorchDispatchMode: the largest intermediate, B x T x T scores for a
one-shot implementation. "saved" is the storage kept between forward and backward
(saved_tensors_hooks, each storage counted once, the parameters' own storage not
counted: it exists anyway): what training holds per layer.
"""

import argparse
import importlib
import os
import statistics
import sys
import time
import types
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine  # noqa: E402
from benchmarks.seeds import seed000_as_written, seed000_loop  # noqa: E402
from rnnspec.nn import attention as after_module  # noqa: E402

BATCH, HIDDEN = 16, 256
MIB = 2.0**-20


# ---------------------------------------------------------------- measuring


def interleaved_ms(fns: dict, repeats: int, seconds: float) -> dict:
    """{name: [ms per call, one per round]}: rounds of one sample per contender.

    A sample is the mean of k back-to-back calls, k so that it lasts >= 50 ms
    (from one untimed call that also warms up); contenders take turns in rotating
    order. Stops after ``repeats`` rounds or ``seconds``, at least 3 rounds.
    """
    names = list(fns)
    calls = {}
    for name in names:
        start = time.perf_counter()
        fns[name]()
        calls[name] = max(1, int(0.05 / max(time.perf_counter() - start, 1e-6)))
    times = {name: [] for name in names}
    start = time.perf_counter()
    for r in range(repeats):
        if r >= 3 and time.perf_counter() - start > seconds:
            break
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn, k = fns[name], calls[name]
            t0 = time.perf_counter()
            for _ in range(k):
                fn()
            times[name].append(1e3 * (time.perf_counter() - t0) / k)
    return times


def median_ratio(numerator: list, denominator: list) -> float:
    """Median over rounds of numerator / denominator (same-round samples)."""
    return statistics.median(a / b for a, b in zip(numerator, denominator))


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


def _zero_grads(model, o: torch.Tensor) -> None:
    o.grad = None
    for p in model.parameters() if isinstance(model, nn.Module) else []:
        p.grad = None


def memory_mib(model, o: torch.Tensor):
    """(largest tensor in fwd, in fwd+bwd, tensors saved for backward), MiB."""
    with _LargestTensor() as fwd, torch.no_grad():
        model(o)
    params = model.parameters() if isinstance(model, nn.Module) else []
    own = {p.untyped_storage().data_ptr() for p in params}
    storages = {}

    def pack(t):
        if t.untyped_storage().data_ptr() not in own:
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    _zero_grads(model, o)
    with _LargestTensor() as fwd_bwd:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(o)
        out.sum().backward()
    return fwd.largest * MIB, fwd_bwd.largest * MIB, sum(storages.values()) * MIB


def forward_fn(model, o: torch.Tensor):
    def forward():
        with torch.no_grad():
            model(o)

    return forward


def forward_backward_fn(model, o: torch.Tensor):
    def forward_backward():
        _zero_grads(model, o)
        model(o).sum().backward()

    return forward_backward


def load_before(root: Path):
    """rnnspec/nn/attention.py of the checkout under ``root``, with its own kernel.py.

    Imported as ``rnnspec_before_nn.attention`` (a bare package: nn/__init__ and the
    rest of that rnnspec are not run), so that both versions live in one process.
    """
    package = types.ModuleType("rnnspec_before_nn")
    package.__path__ = [str(root / "rnnspec" / "nn")]
    sys.modules[package.__name__] = package
    return importlib.import_module("rnnspec_before_nn.attention")


def lstm_like(steps: int) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(BATCH, steps, HIDDEN).tanh().requires_grad_()


def print_header(args) -> None:
    print(f"machine: {machine()}")
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    print(
        f"B={BATCH}, H={HIDDEN}, float32, {torch.get_num_threads()} thread(s); "
        f"medians of up to {args.repeats} interleaved rounds, {args.seconds:.0f} s "
        "per group (>= 3 rounds)\n"
    )


# ---------------------------------------------------------------- seeds table


def seed_cases(steps: int, quick: bool) -> dict:
    """{name: module or callable} for one sequence length; the first is the anchor."""
    torch.manual_seed(0)
    general = after_module.GeneralAttention(HIDDEN, mask="strict")
    seed_attn = nn.Linear(HIDDEN, HIDDEN)
    seed_attn.load_state_dict(general.query.state_dict())
    general_sdpa = after_module.GeneralAttention(HIDDEN, mask="strict")
    general_sdpa.load_state_dict(general.state_dict())
    general_sdpa.use_sdpa = True
    cases = {
        "seed 000 loop as written (one sequence at a time)": (
            lambda o: seed000_as_written(seed_attn, o)
        ),
        "seed 000 loop, batched over B": lambda o: seed000_loop(seed_attn, o),
        "rnnspec general strict": general,
        "rnnspec general strict, use_sdpa=True": general_sdpa,
        "rnnspec dot causal": after_module.DotAttention(HIDDEN),
    }
    if steps <= 256 and not quick:
        cases["rnnspec additive causal"] = after_module.AdditiveAttention(HIDDEN)
    cases["F.sdpa(o, o, o, is_causal=True) anchor"] = lambda o: (
        F.scaled_dot_product_attention(o, o, o, is_causal=True)
    )
    return cases


def seeds_table(steps_list, args) -> None:
    print(
        "| T | method | fwd ms | fwd+bwd ms | fwd: seed / this | fwd+bwd: seed / this"
        " | largest tensor fwd MiB | largest tensor fwd+bwd MiB | saved MiB |"
    )
    print("|" + "---|" * 9)
    for steps in steps_list:
        o = lstm_like(steps)
        cases = seed_cases(steps, args.quick)
        names = list(cases)
        with torch.no_grad():  # the loops and general strict compute the same thing
            reference = cases[names[0]](o)
            for name in names[1:3]:
                got = cases[name](o)
                torch.testing.assert_close(got, reference, atol=1e-5, rtol=1e-4)
        fwd = interleaved_ms(
            {n: forward_fn(m, o) for n, m in cases.items()}, args.repeats, args.seconds
        )
        fwd_bwd = interleaved_ms(
            {n: forward_backward_fn(m, o) for n, m in cases.items()},
            args.repeats,
            args.seconds,
        )
        anchor = names[0]
        for name, model in cases.items():
            ratios = ["-", "-"]
            if name != anchor:
                ratios = [
                    f"{median_ratio(times[anchor], times[name]):.1f}x"
                    for times in (fwd, fwd_bwd)
                ]
            mems = [f"{m:.1f}" for m in memory_mib(model, o)]
            ms = [f"{statistics.median(t[name]):.2f}" for t in (fwd, fwd_bwd)]
            cells = [str(steps), name, *ms, *ratios, *mems]
            print("| " + " | ".join(cells) + " |", flush=True)


# ---------------------------------------------------------------- memory table


def memory_cases(before, steps: int) -> dict:
    """{kind: (before module, after module)}, same weights; additive at T <= 256."""
    kinds = {
        "general strict": ("GeneralAttention", {"mask": "strict"}),
        "dot causal": ("DotAttention", {}),
    }
    if steps <= 256:
        kinds["additive causal"] = ("AdditiveAttention", {})
    cases = {}
    for kind, (cls, options) in kinds.items():
        torch.manual_seed(0)
        after = getattr(after_module, cls)(HIDDEN, **options)
        old = getattr(before, cls)(HIDDEN, **options) if before else None
        if old is not None:
            old.load_state_dict(after.state_dict())
        cases[kind] = (old, after)
    return cases


def check_same(old, new, o: torch.Tensor) -> None:
    """Before and after give the same output and gradients (the change is memory)."""
    results = []
    for model in (old, new):
        _zero_grads(model, o)
        out = model(o)
        out.square().sum().backward()
        results.append([out.detach(), o.grad, *(p.grad for p in model.parameters())])
    # float32 rounding: unscaled dot attention's gradients are ~2e-5 off float64's,
    # before and after alike (its scores reach ~100)
    for a, b in zip(*results):
        error = float((a - b).norm() / b.norm())
        assert error < 1e-4, f"Expected before == after, got relative error {error}"


def memory_table(steps_list, before, args) -> None:
    print(
        "| T | attention | saved MiB before | saved MiB after | 4 (B, T, D) MiB "
        "| fwd+bwd ms before | fwd+bwd ms after | after / before "
        "| largest tensor fwd+bwd MiB after |"
    )
    print("|" + "---|" * 9)
    for steps in steps_list:
        o = lstm_like(steps)
        bound = 4 * BATCH * steps * HIDDEN * o.element_size() * MIB
        for kind, (old, new) in memory_cases(before, steps).items():
            fns = {"after": forward_backward_fn(new, o)}
            if old is not None:
                check_same(old, new, o)
                fns["before"] = forward_backward_fn(old, o)
            times = interleaved_ms(fns, args.repeats, args.seconds)
            _, largest, saved = memory_mib(new, o)
            cells = [str(steps), kind, "-", f"{saved:.1f}", f"{bound:.0f}", "-"]
            cells += [f"{statistics.median(times['after']):.1f}", "-", f"{largest:.1f}"]
            if old is not None:
                cells[2] = f"{memory_mib(old, o)[2]:.1f}"
                cells[5] = f"{statistics.median(times['before']):.1f}"
                cells[7] = f"{median_ratio(times['after'], times['before']):.2f}x"
            print("| " + " | ".join(cells) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small T, 3 repeats")
    parser.add_argument("--table", choices=["seeds", "memory", "both"], default="both")
    parser.add_argument("--before", type=Path, help="an older checkout to compare")
    parser.add_argument("--repeats", type=int, default=7, help="rounds per median")
    parser.add_argument(
        "--seconds", type=float, default=60.0, help="time budget per row group"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        args.repeats = 3
    print_header(args)
    before = load_before(args.before) if args.before else None
    if args.table in ("seeds", "both"):
        seeds_table([64, 256] if args.quick else [64, 256, 1024], args)
        print()
    if args.table in ("memory", "both"):
        memory_table([64, 256] if args.quick else [256, 1024, 2048, 4096], before, args)
        print()
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
