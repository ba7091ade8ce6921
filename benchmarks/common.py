"""What every benchmark prints about the machine, and the kernel benchmarks' flags."""

import argparse
import os
import platform


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """CPU model, cores, torch version and threads, Python version."""
    import torch

    return (
        f"{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), Python {platform.python_version()}"
    )


def add_kernel_arguments(
    parser: argparse.ArgumentParser,
    repeats: int,
    batch: int,
    steps: int,
    threads: int | None = None,
) -> None:
    """The flags the kernel benchmarks share; `threads` is the default of
    --threads (None: torch's own)."""
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--quick", action="store_true", help="small sizes, 3 repeats")
    parser.add_argument("--batch", type=int, default=batch)
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--size", type=int, default=256, help="input = hidden size")
    default = "torch's" if threads is None else threads
    parser.add_argument(
        "--threads",
        type=int,
        default=threads,
        help=f"torch threads (default: {default})",
    )


def time_training_steps(models, x, grad, repeats: int, seconds: float, clock=None):
    """{name: [seconds per training step]}, contenders interleaved in rotating order
    (a busy neighbour slows all alike); stops at `repeats` or after `seconds` (wall
    time), at least 3 repeats. `clock` times each step (default: wall time,
    `time.perf_counter`; `time.process_time` counts only this process's CPU)."""
    import time

    clock = clock or time.perf_counter

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
            t = clock()
            step(models[n])
            times[n].append(clock() - t)
    return times


def layer_norm_main(description, contenders, labels, tolerance, argv=None) -> None:
    """The layer-norm benchmarks' run: `contenders(size)` gives {"torch", "ours",
    "loop"} modules; ours and the loop are checked equal (`tolerance`: atol, rtol)
    before timing; `labels` names ours and torch's module in the table."""
    import statistics

    import torch

    parser = argparse.ArgumentParser(description=description)
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
    atol, rtol = tolerance
    with torch.no_grad():  # the loop computes the same cell
        torch.testing.assert_close(
            models["loop"](x)[0], models["ours"](x)[0], atol=atol, rtol=rtol
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
    ours_label, torch_label = labels
    for name in ("torch", "ours", "loop"):
        ms = 1e3 * statistics.median(times[name])
        if name == "ours":
            print(f"| {ours_label} (ours) | {ms:.1f} | — | — |")
            continue
        pairs = list(zip(times["ours"], times[name], times["torch"]))
        if name == "torch":
            ratio = statistics.median(a / b for a, b, _ in pairs)
            label, note = f"{torch_label} (no layer norm)", ""
            target, which = "≤ 1.6×", "ours / torch"
        else:
            ratio = statistics.median(b / a for a, b, _ in pairs)
            label = "per-step nn.LayerNorm loop"
            ceiling = statistics.median(b / c for _, b, c in pairs)
            note = f" ({'loop / ' + torch_label} {ceiling:.2f}×)"
            target, which = "≥ 3×", "loop / ours"
        print(f"| {label} | {ms:.1f} | {which} {ratio:.2f}×{note} | {target} |")
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
