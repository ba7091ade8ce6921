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

    The prompt runs through the model once, then each new token is one
    `model.step`, which carries the state (and, with attention, the outputs kept so
    far). Attention models see at most the last `context` tokens: once the text
    outgrows that window, each token reruns the window from a fresh state, as
    training saw sequences. `temperature` 0 picks the most likely token, and so does
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
    window = math.inf if spec.attention is None else context
    scores, state = _prime(model, spec, ids, window, device)
    generated: list[int] = []
    for i in range(length):
        token = _pick(scores[:vocab_size].float(), temperature, top_k, generator)
        generated.append(token)
        ids.append(token)
        if i == length - 1:
            break
        if len(ids) <= window:
            out, state = model.step(torch.tensor([token], device=device), state)
            scores = out[0]  # (V,)
        else:  # the window slides: rerun it
            x = torch.tensor([ids[-context:]], device=device)
            scores = forward_batch_first(model, spec, x, None)[0][0, -1]
    return generated


def _prime(model: nn.Module, spec: ModelSpec, ids: list[int], window, device):
    """The scores (V,) after the prompt `ids`, and the state `model.step` goes on
    from (None once the prompt outgrows an attention model's window: then no step
    follows). Without attention one forward; with it one step per token, since
    forward does not return the outputs attention keeps."""
    if len(ids) > window:
        x = torch.tensor([ids[-int(window) :]], device=device)
        return forward_batch_first(model, spec, x, None)[0][0, -1], None
    if spec.attention is None:
        x = torch.tensor([ids], device=device)
        logits, state = forward_batch_first(model, spec, x, None)
        return logits[0, -1], state
    state = None
    for token in ids:
        out, state = model.step(torch.tensor([token], device=device), state)
    return out[0], state


def _pick(
    logits: Tensor,
    temperature: float,
    top_k: int | None,
    generator: torch.Generator | None,
) -> int:
    """A token drawn from softmax(logits / temperature); the likeliest at
    temperature 0 or where the scaled scores overflow. Finite scaled scores mean
    finite scores: one check per token in the usual case."""
    if temperature > 0:
        scaled = logits / temperature
        if bool(torch.isfinite(scaled).all()):
            if top_k is not None and 0 < top_k < scaled.numel():
                kth = torch.topk(scaled, top_k).values[-1]
                scaled = scaled.masked_fill(scaled < kth, -math.inf)
            probs = torch.softmax(scaled, -1).cpu()
            return int(torch.multinomial(probs, 1, generator=generator))
    if not bool(torch.isfinite(logits).all()):
        raise TrainError(
            "the model's scores are not finite (NaN or infinite): its weights have "
            "diverged; sample from an earlier checkpoint, or train with a lower --lr"
        )
    return int(logits.argmax())  # temperature 0, or so small the scores overflow


def start_token(vocab: Vocab) -> int:
    """The id a prompt-less sample starts from: a newline (or end-of-line)."""
    for token in ("\n", EOL):
        if token in vocab.index:
            return vocab.index[token]
    return 0
