"""`rnnspec train SPEC --data FILE`: train a spec'd language model on text.

Imports torch only inside `run`, so that the CLI's other commands start fast.
Under `torchrun --nproc_per_node=N -m rnnspec train ...` it trains with
DistributedDataParallel; see docs/training.md.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable

from rnnspec.cli.specs import add_set_argument


def integer(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in low..high (high None: no upper bound)."""
    expected = (
        f"an integer >= {low}" if high is None else f"an integer in {low}..{high}"
    )

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {expected}, got {text!r}"
            ) from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


def number(
    low: float, *, low_allowed: bool, high: float = math.inf
) -> Callable[[str], float]:
    """An argparse type: a finite float above `low` (or equal, with `low_allowed`)
    and below `high`; nan and inf never pass."""
    expected = (
        f"a finite number {'>=' if low_allowed else '>'} {low:g}"
        if high == math.inf
        else f"a number in ({low:g}, {high:g})"
    )

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {expected}, got {text!r}"
            ) from None
        above = value >= low if low_allowed else value > low
        if not (above and value < high and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


#: Seeds of torch's generators: below 2**63, so that seed + rank still fits.
SEED = integer(0, 2**63 - 1)

HELP = "train a spec'd language model on text"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Train the language model of SPEC (`input tokens`, `head logits`) on a text "
        "file. Settings left unset take their defaults, or the run's own on --resume."
    )
    parser.add_argument("spec", metavar="SPEC", help="a .rnn file")
    parser.add_argument(
        "--data",
        required=True,
        metavar="FILE",
        help="UTF-8 text to train on, or `stdlib`: ~1 MB of the running Python's "
        "standard-library sources",
    )
    parser.add_argument(
        "--model", metavar="NAME", help="the model, if SPEC has several"
    )
    parser.add_argument(
        "--steps", type=integer(1), metavar="N", default=300, help="total steps (300)"
    )
    parser.add_argument(
        "--batch",
        type=integer(1),
        metavar="B",
        dest="batch_size",
        help="sequences per step and process (32)",
    )
    parser.add_argument(
        "--seq-len",
        type=integer(1),
        metavar="T",
        help="tokens per sequence, at most (64)",
    )
    _add_optimizer_arguments(parser)
    parser.add_argument(
        "--tokens",
        choices=("char", "word"),
        help="characters, or whitespace words (char)",
    )
    parser.add_argument(
        "--seed", type=SEED, help="seeds weights, dropout and batches (0)"
    )
    parser.add_argument(
        "--val-fraction",
        type=number(0, low_allowed=False, high=1),
        metavar="F",
        help="held-out tail of the text (0.05)",
    )
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument(
        "--threads",
        type=integer(1),
        metavar="N",
        help="CPU threads (default: torch's, fewer on a busy machine: one per idle "
        "core)",
    )
    parser.add_argument(
        "--amp",
        default="auto",
        choices=("auto", "off", "bf16", "fp16"),
        help="autocast: auto = bf16 (or fp16 with a GradScaler) on CUDA, off on CPU",
    )
    parser.add_argument(
        "--checkpoint-every",
        type=integer(0),
        default=100,
        metavar="K",
        help="(100; 0: end only)",
    )
    parser.add_argument("--out", metavar="DIR", help="run directory (runs/<model>)")
    run_mode = parser.add_mutually_exclusive_group()
    run_mode.add_argument(
        "--resume", action="store_true", help="continue the run in --out to --steps"
    )
    run_mode.add_argument(
        "--force", action="store_true", help="start over in a --out that holds a run"
    )
    parser.add_argument(
        "--strict-vocab",
        action="store_true",
        help="fail when the data's vocabulary size is not the spec's VOCAB (default: "
        "build the model with the data's size and say so)",
    )
    parser.add_argument(
        "--generated",
        metavar="FILE",
        help="train the class that `rnnspec build SPEC` wrote to FILE (checked "
        "against the sha256 of SPEC and of every file it imports, and against "
        "--set) instead of building the model at runtime; the model keeps the "
        "spec's VOCAB",
    )
    add_set_argument(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--no-plot", action="store_true", help="no loss.png")


def _add_optimizer_arguments(parser: argparse.ArgumentParser) -> None:
    """What the optimizer does with the loss, and what the loss adds (AR, TAR)."""
    parser.add_argument(
        "--lr", type=number(0, low_allowed=False), help="AdamW learning rate (3e-3)"
    )
    parser.add_argument(
        "--weight-decay",
        type=number(0, low_allowed=True),
        metavar="WD",
        help="AdamW weight decay (0.01)",
    )
    parser.add_argument(
        "--clip",
        type=number(0, low_allowed=True),
        help="max gradient norm, 0: off (1.0)",
    )
    parser.add_argument(
        "--warmup",
        type=integer(0),
        metavar="N",
        help="steps of linear learning-rate warmup (20)",
    )
    parser.add_argument(
        "--ar",
        type=number(0, low_allowed=True),
        metavar="A",
        help="activation regularization (AWD-LSTM): adds A x the mean square of the "
        "top layer's outputs after the output dropout to the loss (0: off)",
    )
    parser.add_argument(
        "--tar",
        type=number(0, low_allowed=True),
        metavar="B",
        help="temporal activation regularization (AWD-LSTM): adds B x the mean "
        "square of the change of the recurrent stack's outputs from step to step, "
        "over valid steps (0: off)",
    )


def run(args: argparse.Namespace) -> int:
    from rnnspec.train.config import TrainConfig
    from rnnspec.train.errors import TrainError
    from rnnspec.train.loop import train

    config = TrainConfig(
        spec=args.spec,
        data=args.data,
        out=args.out,
        steps=args.steps,
        model=args.model,
        tokens=args.tokens,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        clip=args.clip,
        warmup=args.warmup,
        ar=args.ar,
        tar=args.tar,
        seed=args.seed,
        val_fraction=args.val_fraction,
        device=args.device,
        threads=args.threads,
        amp=args.amp,
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
        force=args.force,
        strict_vocab=args.strict_vocab,
        generated=args.generated,
        overrides=tuple(args.overrides),
        progress=not args.no_progress,
        plot=not args.no_plot,
    )
    code = 0
    try:
        train(config)
    except TrainError as exc:
        if os.environ.get("RANK", "0") == "0":
            print(f"rnnspec train: error: {exc}", file=sys.stderr)
        code = 1
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        _leave_worker(code)
    return code


def _leave_worker(code: int) -> None:
    """Ends a torchrun worker here, everything written and flushed. DDP keeps
    torch's gloo process group alive past destroy_process_group (its threads
    stay), and tearing that down at interpreter exit, after the other ranks have
    left, now and then aborts the process ("terminate called without an active
    exception", SIGABRT, ~1 run in 40 here): torchrun would call the run failed."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
