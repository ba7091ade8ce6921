"""AWD-LSTM's activation regularizers (Merity et al. 2017), added to the training loss.

- AR  = A · mean(dropped_top²): the top layer's outputs after the output dropout,
  that is, what the model's `head` takes (the attended outputs, with attention), or
  for a head with locked dropout (`head.dropout`, a submodule), what that returns.
- TAR = B · mean((raw_top[:, t+1] − raw_top[:, t])²): the recurrent stack's own
  outputs (`model.rnn`'s, before any dropout and attention), over the pairs of steps
  that both lie within the sequence's length.

Each mean runs over the valid steps of the batch and every feature: padded steps never
count, whether or not the model packs. The two tensors come from the one training
forward: every model rnnspec makes, at runtime or generated, has the submodules `rnn`
and `head` (design section 5), so a forward hook on `rnn` (its output unpacked when
torch's module returns a PackedSequence) and a forward pre-hook on `head` catch them,
within `capture(model)` only. With A = B = 0 nothing is hooked and nothing is added.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from rnnspec.train.errors import TrainError


class ActivationRegularizer:
    """AR with weight `ar` and TAR with weight `tar` (0: off) of one forward at a time.

    with reg.capture(model):
        logits, _ = model(x, lengths)
    loss = cross_entropy + sum(reg.terms(lengths).values())
    """

    def __init__(self, ar: float = 0.0, tar: float = 0.0) -> None:
        self.ar = float(ar)
        self.tar = float(tar)
        self._raw: Tensor | None = None  # (B, T, D*H) model.rnn's output
        self._dropped: Tensor | None = None  # (B, T, F) model.head's input

    @property
    def active(self) -> bool:
        return self.ar > 0 or self.tar > 0

    @contextlib.contextmanager
    def capture(self, model: nn.Module) -> Iterator[None]:
        """Hook `model.rnn` (TAR) and `model.head` (AR) for the forwards inside."""
        self._raw = self._dropped = None
        if not self.active:
            yield
            return
        handles = []
        try:
            if self.tar > 0:
                rnn = _submodule(model, "rnn", "--tar")
                handles.append(rnn.register_forward_hook(self._keep_raw))
            if self.ar > 0:
                head = _submodule(model, "head", "--ar")
                inner = getattr(head, "dropout", None)
                if isinstance(inner, nn.Module):  # a locked head drops inside itself
                    hook = inner.register_forward_hook(self._keep_dropped_output)
                else:
                    hook = head.register_forward_pre_hook(self._keep_dropped)
                handles.append(hook)
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _keep_raw(self, module: nn.Module, args: Any, output: Any) -> None:
        out = output[0] if isinstance(output, tuple) else output
        if isinstance(out, PackedSequence):  # torch's module, fed packed rows
            out = pad_packed_sequence(out, batch_first=True)[0]
        self._raw = out

    def _keep_dropped(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        self._dropped = args[0]

    def _keep_dropped_output(
        self, module: nn.Module, args: Any, output: Tensor
    ) -> None:
        self._dropped = output

    def terms(self, lengths: Tensor | None = None) -> dict[str, Tensor]:
        """{"ar": A·mean, "tar": B·mean} of the forward just captured (those on).

        lengths: (B,) valid steps per sequence; None: every step is valid.
        """
        terms = {}
        if self.ar > 0:
            dropped = _taken(self._dropped, "head", "--ar")
            terms["ar"] = self.ar * _valid_mean_square(dropped, lengths, 0)
        if self.tar > 0:
            raw = _taken(self._raw, "rnn", "--tar")
            step = raw[:, 1:] - raw[:, :-1]  # (B, T-1, D*H)
            terms["tar"] = self.tar * _valid_mean_square(step, lengths, 1)
        self._raw = self._dropped = None
        return terms


def _valid_mean_square(x: Tensor, lengths: Tensor | None, drop: int) -> Tensor:
    """Mean of x² (x: (B, S, F), float32 at least) over rows s < length − drop.

    A batch without such rows (every sequence one step long, for TAR) gives 0.
    """
    x = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    if lengths is None:
        return x.pow(2).mean() if x.numel() else x.sum()
    steps = torch.arange(x.shape[1], device=x.device)
    valid = steps < (lengths.to(x.device) - drop).unsqueeze(1)  # (B, S)
    count = (valid.sum() * x.shape[-1]).clamp(min=1)  # a tensor: no device sync
    # A mask product, not x[valid]: no gather forward, no scatter backward.
    return (x.pow(2).sum(-1) * valid).sum() / count


def _submodule(model: nn.Module, name: str, option: str) -> nn.Module:
    module = getattr(model, name, None)
    if not isinstance(module, nn.Module):
        raise TrainError(
            f"{option} needs the model's `{name}` submodule (design section 5); "
            f"{type(model).__name__} has none"
        )
    return module


def _taken(value: Tensor | None, name: str, option: str) -> Tensor:
    """The (B, T, F) tensor caught at `name`, or a TrainError saying why not."""
    if value is None:
        raise TrainError(
            f"{option}: the model's `{name}` was not called in the forward just run"
        )
    if value.dim() != 3:
        raise TrainError(
            f"{option} needs per-step outputs (B, T, F) at the model's `{name}`, got "
            f"shape {tuple(value.shape)}"
        )
    return value
