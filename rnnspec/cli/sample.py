"""`rnnspec sample CHECKPOINT`: generate text from a model trained by `rnnspec train`.

Imports torch only inside `run`.
"""

from __future__ import annotations

import argparse
import sys

from rnnspec.cli.train import SEED, integer, number

HELP = "generate text from a checkpoint"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Generate text from a checkpoint written by `rnnspec train`."
    parser.add_argument(
        "checkpoint", metavar="CHECKPOINT", help="checkpoint.pt, or the run directory"
    )
    parser.add_argument(
        "--length",
        type=integer(0),
        metavar="N",
        default=500,
        help="tokens to generate (500)",
    )
    parser.add_argument(
        "--prompt", default="", metavar="TEXT", help="text to continue (a newline)"
    )
    parser.add_argument(
        "--temperature",
        type=number(0, low_allowed=True),
        metavar="T",
        default=0.8,
        help="0 (or a temperature so small that the scores overflow): always the "
        "likeliest (0.8)",
    )
    parser.add_argument(
        "--top-k", type=integer(1), metavar="K", help="sample from the k likeliest only"
    )
    parser.add_argument("--seed", type=SEED, default=0)
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))


def run(args: argparse.Namespace) -> int:
    import torch

    from rnnspec.train.checkpoint import load_checkpoint, model_from_checkpoint
    from rnnspec.train.distributed import Distributed, cpu_threads, resolve_device
    from rnnspec.train.errors import TrainError
    from rnnspec.train.sample import generate, start_token

    try:
        device = resolve_device(args.device, Distributed())
        if device.type == "cpu":
            torch.set_num_threads(cpu_threads())
        model, spec, vocab = model_from_checkpoint(
            load_checkpoint(args.checkpoint), device
        )
    except TrainError as exc:
        print(f"rnnspec sample: error: {exc}", file=sys.stderr)
        return 1
    prompt, unknown = vocab.encode(args.prompt)
    if unknown:
        shown = ", ".join(repr(t) for t in sorted(set(unknown))[:10])
        print(
            f"note: left out of the prompt, not in the vocabulary: {shown}",
            file=sys.stderr,
        )
    text = vocab.decode(prompt)
    if not prompt:
        prompt = [start_token(vocab)]
    generator = torch.Generator().manual_seed(args.seed)
    try:
        ids = generate(
            model,
            spec,
            prompt,
            args.length,
            temperature=args.temperature,
            top_k=args.top_k,
            generator=generator,
            vocab_size=len(vocab),
        )
    except TrainError as exc:
        print(f"rnnspec sample: error: {exc}", file=sys.stderr)
        return 1
    sep = " " if vocab.mode == "word" and text and not text.endswith("\n") else ""
    sys.stdout.write(text + sep + vocab.decode(ids) + "\n")
    return 0
