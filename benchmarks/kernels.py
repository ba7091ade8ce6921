"""From-scratch kernels against torch's own modules (oneDNN LSTM on CPU).

    .venv/bin/python benchmarks/kernels.py                # B=32 and 8, T=100, 256
    .venv/bin/python benchmarks/kernels.py --repeats 21
    .venv/bin/python benchmarks/kernels.py --quick        # a smoke run
    .venv/bin/python benchmarks/kernels.py --only proj --threads 1 --repeats 5
    .venv/bin/python benchmarks/kernels.py --only regularizers   # regularizers.py
    git archive main rnnspec | tar -x -C /tmp/main       # the code before, then:
    .venv/bin/python benchmarks/kernels.py --threads 1 --before /tmp/main

Three sections (`--sections`, all by default):

speed: for each configuration, "fwd" is an inference forward (under no_grad) and
"fwd+bwd" a training step: forward, backward of a fixed random projection of the
output, gradients for the input and every weight. Each repeat runs every
contender once, in rotating order, so a busy neighbour on the machine slows all of
them alike; the table gives the median time of each and the median of the
per-repeat ratios ours / torch. Weights are shared (ours are loaded into torch's
module); PeepholeLSTM is timed against nn.LSTM, the cost of its extra terms. The
1-layer cells run at --batch and again at --small-batch. The `proj` rows time
nn.LSTM(proj_size=P) against CustomLSTM(proj_size=P) on torch's kernel (impl
auto) and ours, and PeepholeLSTM(proj_size=P), all in one interleaved group.
With --before DIR (a copy of an older rnnspec, DIR/rnnspec/nn), that code's
module runs in the same groups: "before / torch" is its ratio. `--only
regularizers` runs benchmarks/regularizers.py (the issue-14 options and their
anchors) with the other flags.

busy: ours (and the code before) fwd+bwd on 1 thread, on 1 thread with one core
loaded, and on 2 threads with one core loaded, interleaved; the load is a
busy-loop process of this script's own, pinned to the last core and paused
between its turns. "2 thr busy / 1 thr" is the goal's ratio; on a machine with
other work than ours the load also takes our own core's time, which
"2 thr busy / 1 thr busy" leaves out (what threads alone cost).

memory: one training step of each cell; "saved" is what its kernel Functions keep
for backward (every distinct storage passed to saved_tensors_hooks), "peak" the
most memory the kernel Function's backward holds at once beyond what was held
when it started (its temporaries and the gradients it returns), from torch's
profiler (profile_memory); the ratio is (saved + peak) / saved. "whole backward"
is the same for all of loss.backward(): autograd's own copies included.
"""

import argparse
import importlib.util
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import add_kernel_arguments, machine  # noqa: E402
from benchmarks.seeds import Seed002Loop  # noqa: E402
from rnnspec.nn import (  # noqa: E402
    CustomGRU,
    CustomLSTM,
    CustomRNN,
    LayerNormGRU,
    LayerNormLSTM,
    PeepholeLSTM,
)
from rnnspec.nn.kernel import (  # noqa: E402
    KernelStepWeight,
    KernelThreads,
    kernel_linear,
    kernel_threads,
    kernel_weight_grad,
)

# (label, ours, torch's, targets (fwd, fwd+bwd) or None)
CELLS = [
    ("LSTM", CustomLSTM, nn.LSTM, (1.2, 1.15)),
    ("peephole LSTM", PeepholeLSTM, nn.LSTM, (1.2, 1.15)),
    ("GRU", CustomGRU, nn.GRU, (1.0, 1.0)),
    ("RNN tanh", CustomRNN, nn.RNN, (1.0, 1.0)),
]
#: the busy and memory sections time every cell: these too (no torch twin)
NORM_CELLS = [
    ("layer-norm LSTM", LayerNormLSTM, None, None),
    ("layer-norm GRU", LayerNormGRU, None, None),
]
#: targets of the 1-layer cells at --small-batch, where they differ
SMALL_TARGETS = {"LSTM": (1.2, 1.3), "peephole LSTM": (1.2, 1.3)}

#: the projection rows: P = 128 (at most half the hidden size, for --quick)
PROJ_SIZE = 128
# (label, ours, impl, targets (fwd, fwd+bwd) or None), each against nn.LSTM(proj)
PROJ_CELLS = [
    ("LSTM proj, impl auto (torch's kernel)", CustomLSTM, "auto", (1.05, 1.05)),
    ("LSTM proj, impl custom", CustomLSTM, "custom", None),
    ("peephole LSTM proj", PeepholeLSTM, "custom", (None, 1.5)),
]
SECTIONS = ("speed", "busy", "memory")


def load_before(root: str):
    """rnnspec.nn of the copy at root (root/rnnspec/nn), as module rnnspec_before."""
    path = Path(root) / "rnnspec" / "nn"
    spec = importlib.util.spec_from_file_location(
        "rnnspec_before", path / "__init__.py", submodule_search_locations=[str(path)]
    )
    if spec is None or spec.loader is None:
        raise SystemExit(f"Expected rnnspec/nn under {root}, found none")
    module = importlib.util.module_from_spec(spec)
    sys.modules["rnnspec_before"] = module
    spec.loader.exec_module(module)
    return module


def before_twin(before, model):
    """The code before's module of `model`'s class, with model's weights."""
    if before is None:
        return None
    kw = dict(batch_first=True, bidirectional=model.bidirectional, impl=model.impl)
    if model.proj_size > 0:
        kw["proj_size"] = model.proj_size
    if model.mode.startswith("RNN_"):
        kw["nonlinearity"] = model.nonlinearity
    cls = getattr(before, type(model).__name__)
    twin = cls(model.input_size, model.hidden_size, model.num_layers, **kw)
    twin.load_state_dict(model.state_dict())
    return twin


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


class ProductsFunction(torch.autograd.Function):
    """The GEMMs of one LSTM layer's training step alone, on the kernel's engine
    (oneDNN, packed step weights, steps on one thread), with the layout copies
    that ours makes too: forward, the input projection and one h_{t-1} W_hhᵀ a
    step; backward, one dz_t W_hh a step, then dW_ih, dW_hh, db and dx over all
    rows. No elementwise work: a floor for `ours`."""

    @staticmethod
    def forward(ctx, x, w_ih, bias, w_hh):
        batch, steps, _ = x.shape
        rows = x.transpose(0, 1).reshape(steps * batch, -1)  # (T*B, input)
        with KernelThreads(kernel_threads(2.0 * rows.numel() * w_ih.shape[0])):
            gates = kernel_linear(rows, w_ih, bias)  # (T*B, 4H)
        h = x.new_zeros(batch, w_hh.shape[1])
        with KernelThreads(1):
            product = KernelStepWeight(w_hh, batch, steps)
            for _ in range(steps):
                product.mm(h)
        ctx.save_for_backward(rows, w_ih, w_hh)
        ctx.shape = (batch, steps)
        hidden = w_hh.shape[1]  # (B, T, H), what the training step's gradient fits
        return gates.view(steps, batch, -1)[..., :hidden].transpose(0, 1)

    @staticmethod
    def backward(ctx, grad):
        rows, w_ih, w_hh = ctx.saved_tensors
        batch, steps = ctx.shape
        dz = grad.transpose(0, 1).reshape(steps * batch, -1).repeat(1, 4)  # (T*B, 4H)
        with KernelThreads(1):
            product = KernelStepWeight(w_hh.t(), batch, steps)
            for t in range(steps):
                product.mm(dz[t * batch : (t + 1) * batch])
        with KernelThreads(kernel_threads(2.0 * rows.numel() * w_ih.shape[0])):
            d_wih = kernel_weight_grad(dz, rows)
            d_whh = kernel_weight_grad(dz, rows)  # h_{t-1} rows: the same shape
            d_bias = dz.sum(0)
            dx = kernel_linear(dz, w_ih.t())  # (T*B, input)
        dx = dx.view(steps, batch, -1).transpose(0, 1).contiguous()
        return dx, d_wih, d_bias, d_whh


class ProductsOnly(nn.Module):
    """`ProductsFunction` on an LSTM's weights: the floor of its fwd and fwd+bwd."""

    LABEL = "our LSTM's products alone (floor)"

    def __init__(self, lstm):
        super().__init__()
        self.lstm = lstm

    def forward(self, x):
        lstm = self.lstm
        bias = lstm.bias_ih_l0 + lstm.bias_hh_l0
        out = ProductsFunction.apply(x, lstm.weight_ih_l0, bias, lstm.weight_hh_l0)
        return out, None


def contenders(ours_cls, torch_cls, size, layers, bidirectional, before):
    ours = ours_cls(size, size, layers, batch_first=True, bidirectional=bidirectional)
    theirs = torch_cls(
        size, size, layers, batch_first=True, bidirectional=bidirectional
    )
    theirs.load_state_dict(ours.state_dict(), strict=False)
    models = {"torch": theirs, "ours": ours}
    if before is not None:
        models["before"] = before_twin(before, ours)
    if torch_cls is nn.LSTM and ours_cls is CustomLSTM and layers == 1:
        if not bidirectional:
            models["seed 002 naive loop (8 matmuls/step)"] = Seed002Loop(theirs, False)
            models["seed 002 fused loop (2 matmuls/step)"] = Seed002Loop(theirs, True)
            models[ProductsOnly.LABEL] = ProductsOnly(ours)
    return models


def training_step(m, x, grad):
    m.zero_grad(set_to_none=True)
    x.grad = None
    out, _ = m(x)
    out.backward(grad)


def time_pair(models, x, grad, repeats):
    """{(name, pass): [seconds per repeat]}, contenders interleaved."""

    def fwd(m):
        with torch.no_grad():
            m(x)

    passes = {"fwd": fwd, "fwd+bwd": lambda m: training_step(m, x, grad)}
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


def ratio(times, a, b):
    """Median over repeats of a's time / b's."""
    return statistics.median(x / y for x, y in zip(times[a], times[b]))


def speed_rows(args, before):
    """The main table: every cell, 1 × 1 and 2 × 2, and 1 × 1 at --small-batch."""
    print(
        "| cell | layers × dirs | B | pass | torch ms | ours ms | ours / torch "
        "| before / torch | target |"
    )
    print("|---|---|---:|---|---:|---:|---:|---:|---|")
    shapes = [(1, False, args.batch), (2, True, args.batch)]
    if args.small_batch:
        shapes.insert(1, (1, False, args.small_batch))
    for layers, bidirectional, batch in shapes:
        shape = f"{layers} × {2 if bidirectional else 1}"
        for label, ours_cls, torch_cls, targets in CELLS:
            if args.only and args.only not in label:
                continue
            if batch != args.batch:
                targets = SMALL_TARGETS.get(label, targets)
            torch.manual_seed(0)
            models = contenders(
                ours_cls, torch_cls, args.size, layers, bidirectional, before
            )
            x = torch.randn(batch, args.steps, args.size, requires_grad=True)
            out_size = args.size * (2 if bidirectional else 1)
            grad = torch.randn(batch, args.steps, out_size)
            check_outputs(models, x)
            times = time_pair(models, x, grad, args.repeats)
            cell_rows(label, shape, batch, models, times, targets)
        if batch == args.batch and (
            not args.only or any(args.only in c[0] for c in PROJ_CELLS)
        ):
            proj_rows(args, layers, bidirectional, shape)


def check_outputs(models, x):
    """Every contender gives torch's outputs (peepholes add terms: none to check)."""
    with torch.no_grad():
        expected = models["torch"](x)[0]
        for name, model in models.items():
            if type(model).__name__ in ("PeepholeLSTM", "ProductsOnly"):
                continue
            torch.testing.assert_close(
                model(x)[0], expected, atol=1e-5, rtol=1e-4, msg=name
            )


def cell_rows(label, shape, batch, models, times, targets):
    """The rows of one cell: ours (with the code before's ratio), the seeds'."""
    for name in models:
        if name in ("torch", "before"):
            continue
        row = label if name == "ours" else name
        for k, p in enumerate(("fwd", "fwd+bwd")):
            theirs = times[("torch", p)]
            mine = bool(targets) and name == "ours"
            target = f"≤ {targets[k]}×" if mine else "—"
            prior = "—"
            if name == "ours" and "before" in models:
                prior = f"{ratio(times, ('before', p), ('torch', p)):.2f}×"
            print(
                f"| {row} | {shape} | {batch} | {p} | "
                f"{1e3 * statistics.median(theirs):.1f} | "
                f"{1e3 * statistics.median(times[(name, p)]):.1f} | "
                f"{ratio(times, (name, p), ('torch', p)):.2f}× | {prior} | {target} |"
            )


def proj_rows(args, layers, bidirectional, shape):
    """The PROJ_CELLS rows of one stack shape: one interleaved group."""
    proj = min(PROJ_SIZE, args.size // 2)
    torch.manual_seed(0)
    models = proj_contenders(args.size, proj, layers, bidirectional)
    x = torch.randn(args.batch, args.steps, args.size, requires_grad=True)
    grad = torch.randn(args.batch, args.steps, proj * (2 if bidirectional else 1))
    check_outputs(models, x)
    times = time_pair(models, x, grad, args.repeats)
    for label, _, _, targets in PROJ_CELLS:
        if args.only and args.only not in label:
            continue
        for k, p in enumerate(("fwd", "fwd+bwd")):
            theirs = times[("torch", p)]
            target = f"≤ {targets[k]}×" if targets and targets[k] else "—"
            print(
                f"| {label} P={proj} | {shape} | {args.batch} | {p} | "
                f"{1e3 * statistics.median(theirs):.1f} | "
                f"{1e3 * statistics.median(times[(label, p)]):.1f} | "
                f"{ratio(times, (label, p), ('torch', p)):.2f}× | — | {target} |"
            )


class BusyCore:
    """A busy-loop process of our own on the last core, paused between turns."""

    def __init__(self):
        self.process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(self.process.pid, {(os.cpu_count() or 1) - 1})
        self.set(False)

    def set(self, on: bool) -> None:
        os.kill(self.process.pid, signal.SIGCONT if on else signal.SIGSTOP)
        if on:
            time.sleep(0.05)  # let it take its core

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


#: (label, threads, core loaded)
BUSY_CASES = [
    ("1 thread", 1, False),
    ("1 thread, busy core", 1, True),
    ("2 threads, busy core", 2, True),
]


def busy_rows(args, before):
    """fwd+bwd of each 1-layer cell in BUSY_CASES, interleaved."""
    threads = torch.get_num_threads()
    print(
        "| cell | code | 1 thread ms | 1 thread, busy core ms | "
        "2 threads, busy core ms | 2 thr busy / 1 thr | 2 thr busy / 1 thr busy "
        "| target |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---|")
    busy = BusyCore()
    try:
        for label, ours_cls, _, _ in CELLS + NORM_CELLS:
            if args.only and args.only not in label:
                continue
            torch.manual_seed(0)
            ours = ours_cls(args.size, args.size, batch_first=True)
            models = {"ours": ours}
            if before is not None:
                models["before"] = before_twin(before, ours)
            x = torch.randn(args.batch, args.steps, args.size, requires_grad=True)
            grad = torch.randn(args.batch, args.steps, args.size)
            times = time_busy(models, x, grad, args.repeats, busy)
            for name in models:
                ms = [1e3 * statistics.median(times[(name, c[0])]) for c in BUSY_CASES]
                quiet, loaded, both = ((name, c[0]) for c in BUSY_CASES)
                target = "≤ 1.15×" if name == "ours" else "—"
                print(
                    f"| {label} | {name} | {ms[0]:.1f} | {ms[1]:.1f} | {ms[2]:.1f} | "
                    f"{ratio(times, both, quiet):.2f}× | "
                    f"{ratio(times, both, loaded):.2f}× | {target} |"
                )
    finally:
        busy.close()
        torch.set_num_threads(threads)


def time_busy(models, x, grad, repeats, busy):
    """{(name, case): [seconds per repeat]}, cases and models interleaved."""
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for m in models.values():
            training_step(m, x, grad)
    times = {(n, c[0]): [] for n in models for c in BUSY_CASES}
    for r in range(repeats):
        k = r % len(BUSY_CASES)
        for case, threads, loaded in BUSY_CASES[k:] + BUSY_CASES[:k]:
            busy.set(loaded)
            torch.set_num_threads(threads)
            names = list(models) if r % 2 == 0 else list(reversed(models))
            for n in names:
                t = time.perf_counter()
                training_step(models[n], x, grad)
                times[(n, case)].append(time.perf_counter() - t)
        busy.set(False)
    return times


def backward_memory(model, x, grad):
    """(saved, peak in the kernel Functions' backward, peak of all of backward),
    in bytes, of one training step (see the module's docstring)."""
    from torch.profiler import ProfilerActivity, profile

    saved = {}

    def pack(t):
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    model.zero_grad(set_to_none=True)
    x.grad = None
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out, _ = model(x)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out.backward(grad)
    events = prof.profiler.kineto_results.events()
    memory = sorted(
        (e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]"
    )
    windows = [
        (e.start_ns(), e.start_ns() + e.duration_ns())
        for e in events
        if e.name().endswith("KernelFunctionBackward")
    ]

    def peak(start, end):
        now = most = 0
        for at, size in memory:
            if start <= at <= end:
                now += size
                most = max(most, now)
        return most

    kernel = max(peak(a, b) for a, b in windows)
    return sum(saved.values()), kernel, peak(0, 1 << 62)


def memory_rows(args, before):
    """Backward memory of each 1-layer cell, ours and the code before's."""
    print(
        "| cell | code | saved MB | backward peak MB | (saved + peak) / saved "
        "| whole backward | target |"
    )
    print("|---|---|---:|---:|---:|---:|---|")
    for label, ours_cls, _, _ in CELLS + NORM_CELLS:
        if args.only and args.only not in label:
            continue
        torch.manual_seed(0)
        ours = ours_cls(args.size, args.size, batch_first=True)
        x = torch.randn(args.batch, args.steps, args.size, requires_grad=True)
        grad = torch.randn(args.batch, args.steps, args.size)
        models = {"ours": ours}
        if before is not None:
            models["before"] = before_twin(before, ours)
        for name, model in models.items():
            training_step(model, x, grad)  # warm-up
            saved, kernel, whole = backward_memory(model, x, grad)
            target = "≤ 1.3×" if name == "ours" else "—"
            print(
                f"| {label} | {name} | {saved / 2**20:.1f} | {kernel / 2**20:.1f} | "
                f"{(saved + kernel) / saved:.2f}× | {(saved + whole) / saved:.2f}× | "
                f"{target} |"
            )


def main(argv=None):
    only = argparse.ArgumentParser(add_help=False)
    only.add_argument("--only")
    known, rest = only.parse_known_args(argv)
    if known.only == "regularizers":  # its own rows, defaults and time budget
        from benchmarks import regularizers

        return regularizers.main(rest)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_kernel_arguments(parser, repeats=11, batch=32, steps=100)
    parser.add_argument(
        "--only",
        help="only the rows whose label contains this (e.g. proj); "
        "'regularizers' runs benchmarks/regularizers.py",
    )
    parser.add_argument(
        "--small-batch", type=int, default=8, help="1-layer rows again (0: none)"
    )
    parser.add_argument("--before", help="a copy of older code: DIR/rnnspec/nn")
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help="of " + ", ".join(SECTIONS)
    )
    args = parser.parse_args(argv)
    sections = args.sections.split(",")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.repeats, args.batch, args.steps, args.size = 3, 8, 20, 64
        args.small_batch = 4 if args.small_batch else 0
    before = load_before(args.before) if args.before else None
    torch.manual_seed(0)

    print(f"machine: {machine()}")
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    print(
        f"B={args.batch}, T={args.steps}, input=hidden={args.size}, float32, "
        f"median of {args.repeats} repeats, {torch.get_num_threads()} threads"
        + (f"; before: {args.before}" if args.before else "")
        + "\n"
    )
    if "speed" in sections:
        speed_rows(args, before)
    if "busy" in sections:
        print(f"\nbusy (B={args.batch}, fwd+bwd, 1 layer):\n")
        busy_rows(args, before)
    if "memory" in sections:
        print(f"\nmemory (B={args.batch}, one training step, 1 layer):\n")
        memory_rows(args, before)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
