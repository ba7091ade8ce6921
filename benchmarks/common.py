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
