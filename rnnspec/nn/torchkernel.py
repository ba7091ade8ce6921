"""torch's fused kernel behind the kernel classes: `KernelTorchPath`.

impl="torch", and "auto" where torch's kernel is the faster, run torch's own
kernel (oneDNN on CPU, cuDNN on GPU). The options that act around the recurrent
step run on it too: with `residual`, and in training with `weight_drop` or locked
dropout between layers, it is called a layer at a time (both directions in one
call), drawing the stack's masks in the stack's order (per layer-direction the
weight mask; after each layer but the last the dropout between layers), so under
the same seed both kernels draw the same masks and compute the same thing.

The dropped W_hh goes in functionally, in a copy of the layer's weight list that
torch's kernel takes as an argument: no registered parameter is ever swapped
(AWD's `WeightDrop` hack, which breaks on cuDNN and on every torch release).
"""

from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class KernelTorchPath:
    """torch's kernel for `KernelStackBase`, which mixes it in before torch's module
    (so `super().forward` is torch's) and provides the draws (`_kernel_weight_mask`,
    `_kernel_locked_mask`), `_kernel_zero_states` and `_kernel_weight_stride`."""

    @staticmethod
    def _kernel_torch_state(hx: Optional[List[Tensor]]):
        """Our list of states as torch's forward takes them: h, or (h, c)."""
        if hx is None or len(hx) == 1:
            return None if hx is None else hx[0]
        return hx[0], hx[1]

    def _kernel_torch_forward(self, input, hx, lengths: Optional[Tensor]):
        """torch's kernel (oneDNN / cuDNN) on a padded batch, through packing when
        lengths are given, or on a PackedSequence; states as our list."""
        batch = 0 if lengths is None else lengths.shape[0]
        if lengths is None or batch == 0:  # torch cannot pack an empty batch
            return self._kernel_torch_call(input, hx)
        steps = input.shape[1] if self.batch_first else input.shape[0]
        packed = nn.utils.rnn.pack_padded_sequence(
            input, lengths, batch_first=self.batch_first, enforce_sorted=False
        )
        out, states = self._kernel_torch_call(packed, hx)
        out, _ = nn.utils.rnn.pad_packed_sequence(
            out, batch_first=self.batch_first, total_length=steps
        )
        return out, states

    def _kernel_torch_by_layer(self) -> bool:
        """Whether torch's kernel runs a layer at a time: residual sums, and in
        training a dropped W_hh or a locked mask between layers."""
        if self.residual:
            return True
        if not self.training:
            return False  # weight drop and locked dropout are the identity
        locked = self.locked_dropout and self.dropout > 0 and self.num_layers > 1
        return self.weight_drop > 0 or locked

    def _kernel_torch_call(self, input, hx: Optional[List[Tensor]]):
        """torch's forward, or its kernel a layer at a time where the stack needs
        it (`_kernel_torch_by_layer`)."""
        if self._kernel_torch_by_layer():
            return self._kernel_torch_layers(input, hx)
        out, state = super().forward(input, self._kernel_torch_state(hx))
        return out, list(state) if isinstance(state, tuple) else [state]

    def _kernel_torch_weights(self, layer: int) -> List[Tensor]:
        """The flat weights of `layer` (both directions) as torch's kernel takes
        them: a new list, W_hh replaced by W_hh ⊙ M/(1-P) where weight drop draws
        a mask (per direction, in order); the parameters stay registered as is."""
        dirs = 2 if self.bidirectional else 1
        n = self._kernel_weight_stride()
        weights = list(self._flat_weights[layer * dirs * n : (layer + 1) * dirs * n])
        for d in range(dirs):
            w_hh = weights[d * n + 1]
            mask = self._kernel_weight_mask(layer * dirs + d, w_hh)
            if mask is not None:
                weights[d * n + 1] = w_hh * mask
        return weights

    def _kernel_torch_between(
        self,
        data: Tensor,
        layer: int,
        batch_sizes: Optional[Tensor],
        sorted_indices: Optional[Tensor],
    ) -> Tensor:
        """The dropout after `layer` on torch's layout: packed rows (as
        `_kernel_between`), or a padded (T, B, F) / batch-first (B, T, F) batch,
        whose locked mask (B, F) broadcasts over time."""
        if batch_sizes is not None:
            return self._kernel_between(
                data, layer, batch_sizes.tolist(), sorted_indices
            )
        if not self._kernel_drops_after(layer):
            return data
        if not self.locked_dropout:
            return F.dropout(data, self.dropout, True)
        batch_dim = 0 if self.batch_first else 1
        batch, features = data.shape[batch_dim], data.shape[2]
        mask = self._kernel_locked_mask(layer, batch, features, data)
        return data * mask.unsqueeze(1 - batch_dim)

    def _kernel_torch_layers(self, input, hx: Optional[List[Tensor]]):
        """torch's fused kernel a layer at a time (both directions in one call) on a
        padded batch or a PackedSequence, with the dropped weights, the dropout
        between layers and the residual sums of `_kernel_stack`; torch infers proj
        from the state widths."""
        packed = isinstance(input, nn.utils.rnn.PackedSequence)
        data, batch_sizes, sorted_indices, unsorted_indices = (
            input if packed else (input, None, None, None)
        )
        if hx is None:
            batch_dim = 0 if self.batch_first else 1
            batch = int(batch_sizes[0]) if packed else data.shape[batch_dim]
            hx = self._kernel_zero_states(data, batch)
        elif sorted_indices is not None:
            hx = [h.index_select(1, sorted_indices) for h in hx]
        kernel = {
            "LSTM": torch._VF.lstm,
            "GRU": torch._VF.gru,
            "RNN_TANH": torch._VF.rnn_tanh,
            "RNN_RELU": torch._VF.rnn_relu,
        }[self.mode]
        flags = (self.bias, 1, 0.0, self.training, self.bidirectional)
        dirs = 2 if self.bidirectional else 1
        finals: List[List[Tensor]] = [[] for _ in hx]
        for layer in range(self.num_layers):
            state = [h[layer * dirs : (layer + 1) * dirs] for h in hx]
            state = tuple(state) if len(state) == 2 else state[0]
            weights = self._kernel_torch_weights(layer)
            if packed:
                out, *states = kernel(data, batch_sizes, state, weights, *flags)
            else:
                out, *states = kernel(data, state, weights, *flags, self.batch_first)
            for j in range(len(states)):
                finals[j].append(states[j])
            data = out + data if self.residual and layer > 0 else out
            data = self._kernel_torch_between(data, layer, batch_sizes, sorted_indices)
        states = [torch.cat(f) for f in finals]
        if unsorted_indices is not None:
            states = [s.index_select(1, unsorted_indices) for s in states]
        if packed:
            return nn.utils.rnn.PackedSequence(
                data, batch_sizes, sorted_indices, unsorted_indices
            ), states
        return data, states
