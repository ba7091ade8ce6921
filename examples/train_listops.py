"""Train SPINN and a spec'd bidirectional LSTM on ListOps for the same CPU budget.

    .venv/bin/python examples/train_listops.py --budget 240

ListOps (Nangia & Bowman, 2018): nested expressions such as
`[MAX 2 9 [MIN 4 7 ] 0 ]`, labelled with their value 0-9. SPINN reads each
expression as its left-branching tree (rnnspec.train.trees); the LSTM reads the flat
token sequence. Both train on the same length-bucketed batches with Adam for
--budget seconds of process CPU time each (evaluation not counted), then report test
accuracy. Test expressions that also occur in the training set are dropped.
"""

import argparse
import platform
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import rnnspec  # noqa: E402
from rnnspec.nn.spinn import SpinnModel  # noqa: E402
from rnnspec.train.trees import (  # noqa: E402
    batch_sequences,
    batch_trees,
    generate_listops,
    listops_vocab,
)

SPINN_SPEC = """\
model ListOpsSPINN {{
    input      tokens {vocab} embed={embed} padding=0
    encoder    spinn
    hidden     {hidden}
{tracker}    head       classes 10
}}
"""

LSTM_SPEC = """\
model ListOpsLSTM {{
    input      tokens {vocab} embed={embed} padding=0
    cell       lstm
    hidden     {hidden}
    directions 2
    packing    true
    head       classes 10
}}
"""


def build_model(name, vocab_size, args):
    """Both contenders are rnnspec specs, compiled at runtime."""
    if name == "spinn":
        tracker = f"    tracker    {args.tracker}\n" if args.tracker else ""
        text = SPINN_SPEC.format(
            vocab=vocab_size, embed=args.embed, hidden=args.hidden, tracker=tracker
        )
    elif name == "lstm":
        text = LSTM_SPEC.format(
            vocab=vocab_size, embed=args.embed, hidden=args.lstm_hidden
        )
    else:
        raise SystemExit(f"unknown model {name!r}")
    print(text, end="")
    (spec,) = rnnspec.parse(text, f"<{name}>")
    return rnnspec.instantiate(spec)


def make_batches(examples, vocab, batch_size):
    """Length-bucketed batches, each as (spinn inputs, lstm inputs, labels)."""
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].tokens))
    batches = []
    for start in range(0, len(order), batch_size):
        chunk = [examples[i] for i in order[start : start + batch_size]]
        trees = batch_trees([(ex.tokens, ex.transitions) for ex in chunk], vocab)
        seqs = batch_sequences([ex.tokens for ex in chunk], vocab)
        labels = torch.tensor([ex.label for ex in chunk])
        batches.append((trees, seqs, labels))
    return batches


def run_model(model, inputs):
    if isinstance(model, SpinnModel):
        return model(*inputs[0])[0]  # tokens, transitions
    return model(*inputs[1])[0]  # token ids, lengths


def accuracy(model, batches):
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for batch in batches:
            pred = run_model(model, batch).argmax(1)
            correct += int((pred == batch[2]).sum())
            total += len(batch[2])
    model.train()
    return correct / total


def train(name, model, batches, test_batches, args):
    """Adam on shuffled batches for args.budget seconds; returns a result dict."""
    batches = list(batches)  # each model shuffles its own copy, from the same seed
    optim = torch.optim.Adam(model.parameters(), lr=args.lr)
    rng = random.Random(args.seed)
    steps = seen = 0
    loss_avg = None
    elapsed = 0.0
    bar = tqdm(
        total=args.budget, desc=name, mininterval=1.0,
        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s{postfix}",
    )  # fmt: skip
    while elapsed < args.budget:
        rng.shuffle(batches)
        for batch in batches:
            start = time.process_time()
            logits = run_model(model, batch)
            loss = F.cross_entropy(logits, batch[2])
            optim.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optim.step()
            step_time = time.process_time() - start
            elapsed += step_time
            steps += 1
            seen += len(batch[2])
            value = loss.item()
            loss_avg = value if loss_avg is None else 0.98 * loss_avg + 0.02 * value
            bar.set_postfix(
                loss=f"{loss_avg:.3f}", epochs=f"{seen / args.train:.2f}", refresh=False
            )
            bar.update(min(step_time, args.budget - bar.n))
            if elapsed >= args.budget:
                break
    bar.close()
    params = sum(p.numel() for p in model.parameters())
    return {
        "model": name,
        "params": params,
        "steps": steps,
        "epochs": seen / args.train,
        "train_loss": loss_avg,
        "test_acc": accuracy(model, test_batches),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=240.0, help="seconds per model")
    parser.add_argument("--train", type=int, default=20000)
    parser.add_argument("--test", type=int, default=2000)
    parser.add_argument("--max-depth", type=int, default=6)
    parser.add_argument("--max-args", type=int, default=5)
    parser.add_argument("--min-length", type=int, default=10)
    parser.add_argument("--max-length", type=int, default=100)
    parser.add_argument("--nest-prob", type=float, default=0.3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--embed", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--tracker", type=int, default=0, help="SPINN tracker size")
    parser.add_argument("--lstm-hidden", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", default="spinn,lstm")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    limits = dict(
        max_depth=args.max_depth,
        max_args=args.max_args,
        min_length=args.min_length,
        max_length=args.max_length,
        nest_prob=args.nest_prob,
    )
    train_set = generate_listops(args.train, seed=args.seed, **limits)
    seen = {ex.text for ex in train_set}
    test_set = [
        ex
        for ex in generate_listops(2 * args.test, seed=args.seed + 1, **limits)
        if ex.text not in seen
    ][: args.test]
    vocab = listops_vocab()
    batches = make_batches(train_set, vocab, args.batch)
    test_batches = make_batches(test_set, vocab, 256)
    counts = torch.bincount(torch.tensor([ex.label for ex in test_set]), minlength=10)
    mean_len = sum(len(ex.tokens) for ex in train_set) / len(train_set)
    print(
        f"ListOps: {len(train_set)} train / {len(test_set)} test, depth <= "
        f"{args.max_depth}, {args.min_length}-{args.max_length} tokens (mean "
        f"{mean_len:.1f}), nest_prob {args.nest_prob}; "
        f"majority class {counts.max().item() / len(test_set):.3f}"
    )
    print(
        f"torch {torch.__version__}, {platform.machine()}, {args.threads} thread(s), "
        f"budget {args.budget:.0f} s per model"
    )

    results = []
    for name in args.models.split(","):
        torch.manual_seed(args.seed)
        model = build_model(name, len(vocab), args)
        results.append(train(name, model, batches, test_batches, args))

    print("| model | params | steps | epochs | train loss | test accuracy |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['model']} | {r['params']:,} | {r['steps']} | {r['epochs']:.2f} "
            f"| {r['train_loss']:.3f} | {r['test_acc']:.3f} |"
        )


if __name__ == "__main__":
    main()
