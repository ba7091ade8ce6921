"""How fast the compiler front end starts, and what rnnspec's model adds to torch's.

    python benchmarks/cli_latency.py [--repeats 10] [--build-only]

1. `rnnspec build examples/*.rnn` wall time vs `python -c pass` (medians; the build
   must not import torch), and vs importing only the libraries a build needs
   (pydantic, lark, jinja2): the floor no change inside rnnspec can go below.
   Commands run in turn (load on a busy machine hits them alike) and as a user's
   would, with bytecode caches (a warm-up round, even under PYTHONDONTWRITEBYTECODE).
2. forward+backward of an instantiated default LSTM model vs a bare `torch.nn.LSTM`
   of the same size (ratio of medians, one process).
"""

from __future__ import annotations

import argparse
import os
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

#: What `rnnspec build` cannot avoid importing: the IR's, the parser's and the
#: templates' libraries (pydantic loads its plugins when it builds a validator).
LIBRARIES = (
    "import argparse, jinja2, lark, pydantic.main\n"
    "from pydantic import Field\n"
    "from pydantic.plugin._loader import get_plugins\n"
    "get_plugins()\n"
)

#: Bytecode caches written as they would be for a user (see the docstring).
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def walls(commands: list[list[str]], repeats: int) -> list[float]:
    """Median wall time of each command, run in turn, so that load hits all alike."""
    times: list[list[float]] = [[] for _ in commands]
    for round in range(repeats + 1):
        for command, taken in zip(commands, times):
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True, cwd=ROOT, env=ENV)
            if round:  # the first round warms caches and writes bytecode
                taken.append(time.perf_counter() - start)
    return [statistics.median(taken) for taken in times]


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
    parser.add_argument(
        "--build-only", action="store_true", help="skip the model measurement"
    )
    args = parser.parse_args()
    examples = sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("examples/*.rnn"))
    with tempfile.TemporaryDirectory() as out:
        build = [sys.executable, "-m", "rnnspec", "build", *examples, "-o", out]
        libraries = [sys.executable, "-c", LIBRARIES]
        nothing = [sys.executable, "-c", "pass"]
        build_s, floor_s, pass_s = walls([build, libraries, nothing], args.repeats)
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
    print(
        f"| importing pydantic, lark and jinja2 only | {floor_s * 1000:.0f} ms | "
        f"{floor_s / pass_s:.1f}× `python -c pass` |"
    )
    print(f"| `python -c pass` | {pass_s * 1000:.0f} ms | 1.0× |")
    if args.build_only:
        return
    ours, bare = model_overhead(args.repeats)
    print(
        f"| instantiated LSTM model fwd+bwd (B=32, T=100, 256) | "
        f"{ours * 1000:.1f} ms | {ours / bare:.3f}× bare nn.LSTM |"
    )
    print(f"| bare `nn.LSTM` fwd+bwd | {bare * 1000:.1f} ms | 1.0× |")


if __name__ == "__main__":
    main()
