"""How fast `rnnspec lsp` starts and answers, over raw JSON-RPC on its stdio.

    python benchmarks/lsp_latency.py [--repeats 8] [--edits 40]

1. Start-up: from spawning `python -m rnnspec lsp` to its answer to `initialize`,
   interleaved with `rnnspec check examples/tagger.rnn` and `python -c pass` (the
   anchors, run in turn so that load hits all alike; a warm-up round first).
2. Editing: one server, examples/awd_lstm.rnn open; the median time from a
   `didChange` to its `publishDiagnostics`, and of a `hover`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import cpu_model  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


class Server:
    """`python -m rnnspec lsp`, spoken to with Content-Length framed JSON."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "rnnspec", "lsp"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=ENV,
            cwd=ROOT,
        )
        self.next_id = 0

    def send(self, method: str, params: dict, request: bool = True) -> int | None:
        message: dict = {"jsonrpc": "2.0", "method": method, "params": params}
        if request:
            self.next_id += 1
            message["id"] = self.next_id
        body = json.dumps(message).encode()
        self.process.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.process.stdin.flush()
        return message.get("id")

    def receive(self) -> dict:
        length = 0
        while (line := self.process.stdout.readline().strip()) != b"":
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        return json.loads(self.process.stdout.read(length))

    def wait(self, predicate) -> dict:
        while not predicate(message := self.receive()):
            pass
        return message

    def request(self, method: str, params: dict) -> dict:
        ident = self.send(method, params)
        return self.wait(lambda m: m.get("id") == ident)

    def close(self) -> None:
        self.request("shutdown", {})
        self.send("exit", {}, request=False)
        self.process.wait(30)


def initialize(server: Server) -> None:
    server.request(
        "initialize", {"processId": None, "rootUri": None, "capabilities": {}}
    )
    server.send("initialized", {}, request=False)


def time_start() -> float:
    start = time.perf_counter()
    server = Server()
    initialize(server)
    elapsed = time.perf_counter() - start
    server.close()
    return elapsed


def time_command(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=ROOT, env=ENV)
    return time.perf_counter() - start


def start_up(repeats: int) -> dict[str, float]:
    contenders = {
        "rnnspec lsp, to its initialize answer": time_start,
        "rnnspec check examples/tagger.rnn": lambda: time_command(
            [sys.executable, "-m", "rnnspec", "check", "examples/tagger.rnn"]
        ),
        "python -c pass": lambda: time_command([sys.executable, "-c", "pass"]),
    }
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for round in range(repeats + 1):
        for name, run in contenders.items():
            elapsed = run()
            if round:  # the first round warms caches
                times[name].append(elapsed)
    return {name: statistics.median(taken) for name, taken in times.items()}


def editing(edits: int) -> tuple[float, float]:
    """Median seconds from didChange to its diagnostics, and of a hover."""
    path = ROOT / "examples" / "awd_lstm.rnn"
    text = path.read_text(encoding="utf-8")
    uri = path.as_uri()
    server = Server()
    initialize(server)
    document = {"uri": uri, "languageId": "rnnspec", "version": 0, "text": text}
    server.send("textDocument/didOpen", {"textDocument": document}, request=False)
    changes, hovers = [], []
    for version in range(1, edits + 1):
        changed = text.replace("hidden     256", f"hidden     {version}")
        start = time.perf_counter()
        server.send(
            "textDocument/didChange",
            {
                "textDocument": {"uri": uri, "version": version},
                "contentChanges": [{"text": changed}],
            },
            request=False,
        )
        server.wait(
            lambda m, version=version: (
                m.get("method") == "textDocument/publishDiagnostics"
                and m["params"].get("version") == version
            )
        )
        changes.append(time.perf_counter() - start)
        start = time.perf_counter()
        position = {"line": 3, "character": 6}
        server.request(
            "textDocument/hover", {"textDocument": {"uri": uri}, "position": position}
        )
        hovers.append(time.perf_counter() - start)
    server.close()
    return statistics.median(changes), statistics.median(hovers)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--edits", type=int, default=40)
    args = parser.parse_args(argv)
    print(
        f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"medians of {args.repeats} (start-up), {args.edits} (editing)"
    )
    medians = start_up(args.repeats)
    anchor = medians["rnnspec check examples/tagger.rnn"]
    for name, seconds in medians.items():
        print(f"  {name:40s} {seconds:6.3f} s  ({seconds / anchor:.2f}× check)")
    change, hover = editing(args.edits)
    print(f"  didChange → publishDiagnostics         {change * 1000:6.1f} ms")
    print(f"  hover                                  {hover * 1000:6.1f} ms")


if __name__ == "__main__":
    main()
