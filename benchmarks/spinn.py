"""SPINN: batched vs one-example-at-a-time forward+backward on ListOps trees.

    .venv/bin/python benchmarks/spinn.py                      # the default grid
    .venv/bin/python benchmarks/spinn.py --hidden 128 --tracker 0,64 --repeats 7
    .venv/bin/python benchmarks/spinn.py --trees right   # deep stacks

For each (hidden, tracker) setting, one batch of B ListOps trees goes through a
SpinnModel with a 10-class head: forward, summed cross-entropy, backward. "batched"
runs the batch as one call; "one at a time" calls the model on each example alone
(B calls, each with its own backward, gradients accumulating). Both compute the
same gradients (checked). Reported: medians over --repeats runs of wall-clock and
of process CPU time (the latter is steadier on a shared machine), and their ratio.
"""

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import cpu_model  # noqa: E402
from rnnspec.nn.spinn import SpinnModel  # noqa: E402
from rnnspec.train.trees import (  # noqa: E402
    REDUCE,
    SHIFT,
    batch_trees,
    generate_listops,
    listops_vocab,
)


def timed(fn, repeats):
    """Median wall and CPU seconds of fn() over `repeats` runs, after one warm-up."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return statistics.median(wall), statistics.median(cpu)


def right_branching(args):
    """Deep stacks: ( a ( a ( a ... ) ) ) with min-max leaves, random labels."""
    rng = random.Random(args.seed)
    trees = []
    for _ in range(args.batch):
        n = rng.randint(args.min_length, args.max_length)
        trees.append((["5"] * n, [SHIFT] * n + [REDUCE] * (n - 1)))
    return trees, [rng.randrange(10) for _ in trees]


def run(args, hidden, tracker):
    if args.trees == "listops":
        examples = generate_listops(
            args.batch,
            seed=args.seed,
            max_depth=args.max_depth,
            min_length=args.min_length,
            max_length=args.max_length,
        )
        trees = [(ex.tokens, ex.transitions) for ex in examples]
        labels = torch.tensor([ex.label for ex in examples])
    else:
        trees, label_list = right_branching(args)
        labels = torch.tensor(label_list)
    vocab = listops_vocab()
    tokens, transitions = batch_trees(trees, vocab)
    singles = [batch_trees([tree], vocab) for tree in trees]
    torch.manual_seed(0)
    model = SpinnModel(
        len(vocab), args.embed, hidden, tracker_size=tracker,
        head="classes", head_size=10,
    )  # fmt: skip

    def batched():
        model.zero_grad()
        logits, _ = model(tokens, transitions)
        F.cross_entropy(logits, labels, reduction="sum").backward()

    def one_at_a_time():
        model.zero_grad()
        for b, (tok, trans) in enumerate(singles):
            logits, _ = model(tok, trans)
            F.cross_entropy(logits, labels[b : b + 1], reduction="sum").backward()

    batched()
    grads = [p.grad.clone() for p in model.parameters()]
    one_at_a_time()
    for g, p in zip(grads, model.parameters(), strict=True):
        torch.testing.assert_close(p.grad, g, atol=1e-4, rtol=1e-4)

    b_wall, b_cpu = timed(batched, args.repeats)
    s_wall, s_cpu = timed(one_at_a_time, args.repeats)
    lengths = [len(tok) for tok, _ in trees]
    return {
        "hidden": hidden,
        "tracker": tracker,
        "steps": transitions.shape[1],
        "mean_steps": sum(2 * n - 1 for n in lengths) / len(lengths),
        "batched": (b_wall, b_cpu),
        "single": (s_wall, s_cpu),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", choices=["listops", "right"], default="listops")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--embed", type=int, default=64)
    parser.add_argument("--hidden", default="64,128", help="comma-separated")
    parser.add_argument("--tracker", default="0,32", help="comma-separated, 0 = none")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-depth", type=int, default=6)
    parser.add_argument("--min-length", type=int, default=20)
    parser.add_argument("--max-length", type=int, default=100)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(
        f"# torch {torch.__version__}, {cpu_model()}, "
        f"{args.threads} thread(s); B={args.batch}, embed={args.embed}, "
        + (f"ListOps depth<={args.max_depth}, " if args.trees == "listops" else "")
        + f"{args.trees} trees of {args.min_length}-{args.max_length} tokens, "
        f"medians of {args.repeats}"
    )
    print(
        "| hidden | tracker | steps (max / mean) | batched wall / cpu (ms) "
        "| one at a time wall / cpu (ms) | speed-up wall / cpu |"
    )
    print("|---|---|---|---|---|---|")
    for hidden in [int(h) for h in args.hidden.split(",")]:
        for tracker in [int(t) for t in args.tracker.split(",")]:
            r = run(args, hidden, tracker)
            (bw, bc), (sw, sc) = r["batched"], r["single"]
            print(
                f"| {hidden} | {tracker or 'none'} "
                f"| {r['steps']} / {r['mean_steps']:.0f} "
                f"| {1e3 * bw:.0f} / {1e3 * bc:.0f} | {1e3 * sw:.0f} / {1e3 * sc:.0f} "
                f"| {sw / bw:.1f}× / {sc / bc:.1f}× |",
                flush=True,
            )


if __name__ == "__main__":
    main()
