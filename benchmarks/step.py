"""One token at a time: `model.step` against a hand-written cell loop and forward(T=1).

    .venv/bin/python benchmarks/step.py              # char_rnn sizes, LSTM and GRU
    .venv/bin/python benchmarks/step.py --quick      # a smoke run

The model is the char-RNN of examples/char_rnn.rnn (`input tokens 128 embed=256`,
2-layer LSTM of 256, tied `logits` head), built with `rnnspec.instantiate`, and the
same spec with `cell gru`. Per token, at B=1, in eval under no_grad, each contender
maps a token id and the carried state to the next logits:

* `model.step(x, state)`: the step API (the cell math on the layer's weights);
* the cell loop: nn.Embedding, one nn.LSTMCell (nn.GRUCell) per layer and
  nn.Linear, holding the model's weights, written as a user would: the yardstick,
  embedding and head included as on the other side;
* `model(x[:, None], state)`: forward with T=1, what `rnnspec sample` ran per token
  before the step API, on impl auto (torch's fused kernel) and impl custom.

Before timing, all give the same logits on the same tokens. Each repeat runs every
contender over the same `--tokens` tokens, step and the cell loop back to back
(alternating which goes first), then the others in rotating order (a busy
neighbour slows all of them alike); repeats stop at --repeats or after --seconds
per cell, at least 3. The table gives the median time per token and the median
of the per-repeat ratios to the cell loop; one thread unless --threads says
otherwise.

With `--checkpoint RUN` (a run of `rnnspec train`), a second table times what
`rnnspec sample` runs on that model: `rnnspec.train.generate` (the prompt through
forward, then `model.step` per token) against a copy of the loop it replaced
(forward with T=1 and the carried state per token), both drawing `--length` tokens
(500, as `rnnspec sample`) after the prompt "def " at temperature 0.8 from the same
seed (checked to give the same tokens), in alternating order, for --seconds.
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

import rnnspec  # noqa: E402
from benchmarks.common import machine  # noqa: E402

TARGET = 1.2  # step / cell loop


def spec_text(cell: str, impl: str, vocab: int, size: int, layers: int) -> str:
    lines = [
        f"input tokens {vocab} embed={size}",
        f"cell {cell}",
        f"hidden {size}",
        f"layers {layers}",
        f"impl {impl}",
        "head logits tie=true",
    ]
    body = "".join(f"    {line}\n" for line in lines)
    return f"model Bench {{\n{body}}}\n"


class CellLoop(nn.Module):
    """The yardstick: embedding, one torch cell per layer, head; the model's weights."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        rnn = model.rnn
        cell = nn.LSTMCell if rnn.mode == "LSTM" else nn.GRUCell
        self.embedding = model.embedding
        self.head = model.head
        self.cells = nn.ModuleList()
        for k in range(rnn.num_layers):
            size = rnn.input_size if k == 0 else rnn.hidden_size
            one = cell(size, rnn.hidden_size)
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(one, name).data = getattr(rnn, f"{name}_l{k}").data
            self.cells.append(one)
        self.lstm = rnn.mode == "LSTM"

    def forward(self, x, state):
        """x (1,) token id; state a list of per-layer h or (h, c)."""
        x = self.embedding(x)
        new = []
        for cell, s in zip(self.cells, state):
            s = cell(x, s)
            new.append(s)
            x = s[0] if self.lstm else s
        return self.head(x), new

    def zero_state(self):
        h = torch.zeros(1, self.cells[0].hidden_size)
        return [(h, h) if self.lstm else h for _ in self.cells]


def contenders(cell: str, vocab: int, size: int, layers: int):
    """{name: (model, one-token function, initial state)}."""
    torch.manual_seed(0)
    (spec,) = rnnspec.parse(spec_text(cell, "auto", vocab, size, layers))
    auto = rnnspec.instantiate(spec).eval()
    (spec,) = rnnspec.parse(spec_text(cell, "custom", vocab, size, layers))
    custom = rnnspec.instantiate(spec).eval()
    custom.load_state_dict(auto.state_dict())
    loop = CellLoop(auto).eval()

    def forward(model):
        def one(x, state):
            out, state = model(x[:, None], None, state)
            return out[:, 0], state

        return one

    return {
        "step": (auto.step, None),
        "cell loop": (loop, loop.zero_state()),
        "forward T=1 (auto)": (forward(auto), None),
        "forward T=1 (custom)": (forward(custom), None),
    }


def run(one, state, tokens):
    """Logits of every token, the state carried: (T, V)."""
    outs = []
    for x in tokens:
        out, state = one(x, state)
        outs.append(out)
    return torch.cat(outs)


def check(named, tokens) -> None:
    """Every contender gives the cell loop's logits."""
    expected = run(*named["cell loop"], tokens)
    for name, (one, state) in named.items():
        torch.testing.assert_close(
            run(one, state, tokens), expected, atol=1e-5, rtol=1e-4, msg=name
        )


def time_per_token(named, tokens, repeats: int, seconds: float):
    """{name: [seconds per token]}, contenders interleaved: each repeat runs step
    and the cell loop back to back (alternating which goes first), so that their
    ratio compares neighbours in time, then the others in rotating order."""
    names = list(named)
    for name in names:  # warm-up
        run(*named[name], tokens[:20])
    times = {n: [] for n in names}
    pair, others = names[:2], names[2:]
    start = time.perf_counter()
    for r in range(repeats):
        if r >= 3 and time.perf_counter() - start > seconds:
            break
        k = r % len(others)
        order = (pair if r % 2 == 0 else pair[::-1]) + others[k:] + others[:k]
        for n in order:
            t = time.perf_counter()
            run(*named[n], tokens)
            times[n].append((time.perf_counter() - t) / len(tokens))
    return times


def generate_before(model, spec, prompt, length, generator, vocab_size):
    """`rnnspec.train.generate` before the step API, for a model without attention:
    forward with T=1 and the carried state at every token."""
    from rnnspec.train.model import forward_batch_first
    from rnnspec.train.sample import _pick

    x = torch.tensor([prompt])
    logits, state = forward_batch_first(model, spec, x, None)
    generated = []
    for i in range(length):
        scores = logits[0, -1, :vocab_size].float()
        token = _pick(scores, 0.8, None, generator)
        generated.append(token)
        if i == length - 1:
            break
        x = torch.tensor([[token]])
        logits, state = forward_batch_first(model, spec, x, None, state)
    return generated


def time_sampling(checkpoint: str, tokens: int, seconds: float) -> None:
    """Tokens per second of `generate` and of the loop it replaced, on a checkpoint."""
    from rnnspec.train import generate, load_checkpoint, model_from_checkpoint

    model, spec, vocab = model_from_checkpoint(load_checkpoint(checkpoint))
    prompt = vocab.encode("def ")[0]

    def now(seed):
        generator = torch.Generator().manual_seed(seed)
        return generate(
            model,
            spec,
            prompt,
            tokens,
            temperature=0.8,
            generator=generator,
            vocab_size=len(vocab),
        )

    def before(seed):
        generator = torch.Generator().manual_seed(seed)
        return generate_before(model, spec, prompt, tokens, generator, len(vocab))

    samplers = {"generate on model.step": now, "forward with T=1 (before)": before}
    with torch.no_grad():
        assert now(0) == before(0), "the same seed must give the same tokens"
        rates = {name: [] for name in samplers}
        start, r = time.perf_counter(), 0
        while r < 3 or time.perf_counter() - start < seconds:
            names = list(samplers) if r % 2 == 0 else list(samplers)[::-1]
            for name in names:
                t = time.perf_counter()
                samplers[name](r)
                rates[name].append(tokens / (time.perf_counter() - t))
            r += 1
    print(
        f"\n{checkpoint}: {spec.name}, {tokens} tokens per sample, {r} samples each\n"
    )
    print("| sampler | tokens/s | ratio |")
    print("|---|---:|---:|")
    base = rates["forward with T=1 (before)"]
    for name in samplers:
        ratio = statistics.median(a / b for a, b in zip(rates[name], base))
        tps = statistics.median(rates[name])
        print(f"| {name} | {tps:,.0f} | {ratio:.2f}× |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=41)
    parser.add_argument("--quick", action="store_true", help="3 repeats, 50 tokens")
    parser.add_argument("--tokens", type=int, default=100, help="tokens per repeat")
    parser.add_argument("--vocab", type=int, default=128)
    parser.add_argument("--size", type=int, default=256, help="embed = hidden size")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--seconds", type=float, default=40.0, help="time budget per cell"
    )
    parser.add_argument(
        "--checkpoint", metavar="RUN", help="also time sampling from this run"
    )
    parser.add_argument("--length", type=int, default=500, help="tokens per sample")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.repeats, args.tokens, args.length = 3, 50, 50

    print(f"machine: {machine()}")
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    print(
        f"B=1, vocab {args.vocab}, embed = hidden = {args.size}, {args.layers} "
        f"layers, tied logits head, float32, eval, no_grad, {args.tokens} tokens "
        "per repeat\n"
    )
    print("| cell | contender | µs per token | / cell loop | target | repeats |")
    print("|---|---|---:|---:|---|---:|")
    torch.manual_seed(1)
    tokens = list(torch.randint(0, args.vocab, (args.tokens, 1)))
    with torch.no_grad():
        for cell in ("lstm", "gru"):
            named = contenders(cell, args.vocab, args.size, args.layers)
            check(named, tokens)
            times = time_per_token(named, tokens, args.repeats, args.seconds)
            base = times["cell loop"]
            for name in named:
                us = 1e6 * statistics.median(times[name])
                ratio = statistics.median(a / b for a, b in zip(times[name], base))
                target = f"≤ {TARGET}×" if name == "step" else "—"
                print(
                    f"| {cell} | {name} | {us:.0f} | {ratio:.2f}× | {target} | "
                    f"{len(base)} |"
                )
        if args.checkpoint:
            time_sampling(args.checkpoint, args.length, args.seconds)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
