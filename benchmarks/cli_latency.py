"""How fast the compiler front end starts, and what rnnspec's model adds to torch's.

    python benchmarks/cli_latency.py [--repeats 10]

1. `rnnspec build examples/*.rnn` wall time vs `python -c pass` (medians; the build
   must not import torch). 2. forward+backward of an instantiated default LSTM model
   vs a bare `torch.nn.LSTM` of the same size (ratio of medians, one process).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import cpu_model  # noqa: E402


def wall(command: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def model_overhead(repeats: int) -> tuple[float, float]:
    import torch

    import rnnspec

    spec = rnnspec.parse(
        "model Bench {\n input features 256\n cell lstm\n hidden 256\n}\n"
    )[0]
    model = rnnspec.instantiate(spec)
    bare = torch.nn.LSTM(256, 256, batch_first=True)
    bare.load_state_dict(model.rnn.state_dict())
    x = torch.randn(32, 100, 256, requires_grad=True)

    def step(run) -> float:
        start = time.perf_counter()
        out = run()
        out.sum().backward()
        return time.perf_counter() - start

    runs = {"rnnspec": lambda: model(x)[0], "torch": lambda: bare(x)[0]}
    for run in runs.values():
        step(run)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():  # interleaved, so drift hits both alike
            times[name].append(step(run))
    return statistics.median(times["rnnspec"]), statistics.median(times["torch"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    examples = sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("examples/*.rnn"))
    with tempfile.TemporaryDirectory() as out:
        build = [sys.executable, "-m", "rnnspec", "build", *examples, "-o", out]
        build_s = wall(build, args.repeats)
    pass_s = wall([sys.executable, "-c", "pass"], args.repeats)
    ours, bare = model_overhead(args.repeats)
    print(
        f"machine: {cpu_model()}, python "
        f"{platform.python_version()}, median of {args.repeats}"
    )
    print()
    print("| measurement | median | ratio |")
    print("|---|---|---|")
    print(
        f"| `rnnspec build examples/*.rnn` ({len(examples)} specs) | "
        f"{build_s * 1000:.0f} ms | {build_s / pass_s:.1f}× `python -c pass` |"
    )
    print(f"| `python -c pass` | {pass_s * 1000:.0f} ms | 1.0× |")
    print(
        f"| instantiated LSTM model fwd+bwd (B=32, T=100, 256) | "
        f"{ours * 1000:.1f} ms | {ours / bare:.3f}× bare nn.LSTM |"
    )
    print(f"| bare `nn.LSTM` fwd+bwd | {bare * 1000:.1f} ms | 1.0× |")


if __name__ == "__main__":
    main()
