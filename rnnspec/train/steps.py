"""The arithmetic of training: batches, one optimizer step, evaluation, precision.

Each step's loss is the mean cross-entropy over every process's predicted tokens;
the learning rate is a function of the step (linear warmup), so a resumed run
continues exactly where it stopped.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnspec.lang.ir import ModelSpec
from rnnspec.train.batching import BucketBatchSampler
from rnnspec.train.errors import TrainError
from rnnspec.train.model import forward_batch_first
from rnnspec.train.run import Run, TrainState
from rnnspec.train.text import IGNORE, TextDataset

Batch = tuple[Tensor, Tensor, Tensor]  # inputs, targets, lengths (TextDataset.collate)


def resolve_amp(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of `--amp MODE` on `device`; None: full precision."""
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None
    if mode == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if mode == "bf16":
        return torch.bfloat16
    if mode == "fp16":
        if device.type != "cuda":
            raise TrainError("--amp fp16 needs CUDA; use bf16 or off on CPU")
        return torch.float16
    raise TrainError(f"amp must be auto, off, bf16 or fp16, got {mode!r}")


def autocast(
    device: torch.device, dtype: torch.dtype | None
) -> contextlib.AbstractContextManager:
    """`torch.autocast` to `dtype`, or nothing when it is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def batches(
    sampler: BucketBatchSampler, dataset: TextDataset, step: int
) -> Iterator[Batch]:
    """Batches from global step `step` on: epoch after epoch, the same on resume."""
    per_epoch = len(sampler)
    if per_epoch == 0:
        raise TrainError("not enough training data for one batch per process")
    epoch, skip = divmod(step, per_epoch)
    while True:
        sampler.set_epoch(epoch)
        for indices in itertools.islice(sampler, skip, None):
            yield dataset.collate(indices)
        epoch, skip = epoch + 1, 0


def train_step(
    run: Run,
    state: TrainState,
    step: int,
    batch: Batch,
    precision: contextlib.AbstractContextManager,
) -> tuple[float, float, dict[str, float]]:
    """One optimizer step on `batch`, in `precision` (an autocast or nothing).

    The loss minimised is the cross-entropy plus the AR and TAR terms (those on).
    Returns (the step's cross-entropy over every process's tokens, their number,
    {"ar": term, "tar": term} likewise for those on).
    """
    settings, optimizer, scaler = run.settings, state.optimizer, state.scaler
    x, y, lengths = batch
    x, y = x.to(run.device, non_blocking=True), y.to(run.device, non_blocking=True)
    regularizer = run.regularizer
    with precision, regularizer.capture(state.model):
        logits, _ = forward_batch_first(state.wrapped, run.spec, x, lengths)
    loss = F.cross_entropy(
        logits.float().flatten(0, 1), y.flatten(), ignore_index=IGNORE
    )
    terms = regularizer.terms(lengths)  # {} unless --ar or --tar
    total = loss + sum(terms.values()) if terms else loss
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(total).backward()
    if settings["clip"] > 0:
        scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(state.model.parameters(), settings["clip"])
    for group in optimizer.param_groups:  # a function of the step: resumable
        group["lr"] = settings["lr"] * min(1.0, step / max(settings["warmup"], 1))
    scaler.step(optimizer)
    scaler.update()
    means, tokens = _mean_over_processes(run, [loss, *terms.values()], lengths)
    return means[0], tokens, dict(zip(terms, means[1:], strict=True))


def _mean_over_processes(
    run: Run, values: list[Tensor], lengths: Tensor
) -> tuple[list[float], float]:
    """([mean of each value], tokens) over every process: each weighs by its
    tokens."""
    count = int(lengths.sum())
    totals = torch.tensor(
        [v.item() * count for v in values] + [float(count)], dtype=torch.float64
    )
    if run.dist.world > 1:
        import torch.distributed as tdist

        totals = totals.to(run.device)
        tdist.all_reduce(totals)
        totals = totals.cpu()
    means = [float(total / totals[-1]) for total in totals[:-1]]
    return means, totals[-1].item()


@torch.no_grad()
def evaluate(
    model: nn.Module,
    spec: ModelSpec,
    dataset: TextDataset,
    batch_size: int,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
) -> float:
    """Mean cross-entropy (nats per token) of `model` over `dataset`."""
    was_training = model.training
    model.eval()
    sampler = BucketBatchSampler(
        dataset.lengths, batch_size, shuffle=False, num_replicas=1, rank=0
    )
    total, count = 0.0, 0
    context = autocast(device, amp_dtype)
    for indices in sampler:
        x, y, lengths = dataset.collate(indices)
        with context:
            logits, _ = forward_batch_first(model, spec, x.to(device), lengths)
        total += F.cross_entropy(
            logits.float().flatten(0, 1),
            y.to(device).flatten(),
            ignore_index=IGNORE,
            reduction="sum",
        ).item()
        count += int(lengths.sum())
    model.train(was_training)
    return total / count
