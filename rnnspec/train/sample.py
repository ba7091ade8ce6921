"""Sampling: token ids that a trained language model generates after a prompt."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from rnnspec.lang.ir import ModelSpec
from rnnspec.train.errors import TrainError
from rnnspec.train.model import forward_batch_first
from rnnspec.train.text import EOL, Vocab


@torch.no_grad()
def generate(
    model: nn.Module,
    spec: ModelSpec,
    prompt: Sequence[int],
    length: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    context: int = 256,
    vocab_size: int | None = None,
) -> list[int]:
    """`length` token ids following `prompt` (at least one id).

    Models without attention carry their recurrent state from step to step; with
    attention, each step reruns the last `context` tokens (attention looks back
    over its input only). `temperature` 0 picks the most likely token, and so does
    one so small that the scaled scores overflow (the limit as it goes to 0). Only
    ids below `vocab_size` are drawn (a built model's VOCAB may exceed the data's).
    A model whose scores are NaN or infinite (diverged weights) raises TrainError.
    """
    if not prompt:
        raise ValueError("generate needs a prompt of at least one token")
    if not 0 <= temperature < math.inf:
        raise ValueError(
            f"expected temperature to be a finite number >= 0, got {temperature}"
        )
    model.eval()
    device = next(model.parameters()).device
    ids = list(prompt)
    stateful = spec.attention is None
    first = ids if stateful else ids[-context:]
    logits, state = forward_batch_first(
        model, spec, torch.tensor([first], device=device), None
    )
    generated: list[int] = []
    for i in range(length):
        scores = logits[0, -1, :vocab_size].float()  # (V,)
        token = _pick(scores, temperature, top_k, generator)
        generated.append(token)
        ids.append(token)
        if i == length - 1:
            break
        if stateful:
            x = torch.tensor([[token]], device=device)
            logits, state = forward_batch_first(model, spec, x, None, state)
        else:
            x = torch.tensor([ids[-context:]], device=device)
            logits, _ = forward_batch_first(model, spec, x, None)
    return generated


def _pick(
    logits: Tensor,
    temperature: float,
    top_k: int | None,
    generator: torch.Generator | None,
) -> int:
    if not bool(torch.isfinite(logits).all()):
        raise TrainError(
            "the model's scores are not finite (NaN or infinite): its weights have "
            "diverged; sample from an earlier checkpoint, or train with a lower --lr"
        )
    if temperature <= 0:
        return int(logits.argmax())
    scaled = logits / temperature
    if not bool(torch.isfinite(scaled).all()):  # overflow: temperature ~0, greedy
        return int(logits.argmax())
    logits = scaled
    if top_k is not None and 0 < top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, -math.inf)
    probs = torch.softmax(logits, -1).cpu()
    return int(torch.multinomial(probs, 1, generator=generator))


def start_token(vocab: Vocab) -> int:
    """The id a prompt-less sample starts from: a newline (or end-of-line)."""
    for token in ("\n", EOL):
        if token in vocab.index:
            return vocab.index[token]
    return 0
