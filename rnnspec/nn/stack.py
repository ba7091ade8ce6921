"""What every from-scratch recurrent kernel shares: the layer stack.

One module per cell, each with its `torch.autograd.Function` (hand-written backward),
its plain steps, its layer function and its module class: `rnn` (CustomRNN, tanh or
relu), `lstm` (CustomLSTM), `peephole` (PeepholeLSTM, a CustomLSTM), `lnlstm`, `gru`
(CustomGRU) and `lngru`. `kernel` holds the packed-row helpers of a layer-direction;
`torchkernel` the path through torch's fused kernel; this module holds
`KernelStackBase`: the layers, directions, packing, the options and the masks of
the regularizers of a stack.

Each public class subclasses torch's own module, so parameter names, shapes, gate
order and default initialisation are torch's by construction, and a torch state dict
loads as is. Constructor and inputs are torch's too (positional order, defaults with
batch_first=False, device/dtype, unbatched (T, I) input, empty batches, torch's
errors), so each is a drop-in for its torch class. They add a `lengths` argument
and keyword-only options: `impl`; `residual` (layers >= 2: layer k >= 1 outputs
layer_k(in_k) + in_k, in_k the dropped-out output of layer k-1; the states stay each
layer's own); `initial_state="learned"` (parameters `h0` (L*D, P or H) and, for LSTMs,
`c0` (L*D, H), zeros at init, used over the batch when no state is given); the
regularizers `recurrent_dropout`, `weight_drop`, `zoneout`, `zoneout_cell` and
`locked_dropout` (design section 9; `_kernel_options`). torch's kernel runs the
options that act around the step too, called a layer at a time where needed. Ours
runs:

* layer-major: a layer (both directions) runs over the whole sequence before the next;
* the input contribution of a layer is one matmul before the time loop;
* every sequence batch is handled as packed rows, sorted by length, with the active
  batch shrinking (forward direction) or growing (reverse direction) step by step like
  `PackedSequence.batch_sizes`, so padding costs no compute; an unpadded batch is the
  case where every step has the full batch;
* in eager mode each layer-direction is a `torch.autograd.Function` with a hand-written
  backward: per-step gate gradients, then the weight gradient as one matmul over all
  steps (as cuDNN does). Its products run on oneDNN for float32 on CPU (what torch's
  own LSTM runs on; `kernel_onednn`), its steps on one thread unless a step's
  product is large (a 17-MFLOP product split over threads stalls whenever another
  process holds a core; `kernel_threads`), and its backward writes the gate
  gradients over the gates it saved, a span of steps at a time, so that it needs
  little memory beyond what forward saved. Under TorchScript, torch.compile and
  export the same steps run as plain autograd code: the same operations, so the
  results agree to rounding (oneDNN and BLAS round differently). Asked
  for a gradient with a graph (`create_graph=True`, as a gradient penalty is), the
  backward differentiates that plain code instead, so double backward is exact.

torch.compile is opt-in, for unpadded input (lengths make the step count data
dependent): dynamo skips nn.RNN subclasses unless told otherwise, so
    torch._dynamo.config.allow_rnn = True
    model = torch.compile(model)

Packed layout (`rnnspec.nn.kernel`): the rows of step t are
`data[off_t : off_t + batch_sizes[t]]`, sorted by decreasing length.

Adding a cell: one module with the four pieces (its class mixes `KernelStackBase` in
before torch's module and defines `_kernel_layer`), its place in
`rnnspec.compile.nnsource.MODULE_ORDER` and its re-export in `rnnspec/nn/__init__.py`.
"""

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .kernel import (
    KernelThreads,
    kernel_bernoulli,
    kernel_check_lengths,
    kernel_check_rate,
    kernel_locked,
    kernel_packing_plan,
    kernel_runs_plain,
    kernel_threads,
    kernel_time_major_rows,
)
from .step import step_kernel_stack
from .torchkernel import KernelTorchPath


class KernelStackBase(KernelTorchPath):
    """Layer/direction/packing logic shared by the four kernel modules.

    Mixed in before torch's module (`class CustomLSTM(KernelStackBase, nn.LSTM)`), it
    uses torch's attributes (`_flat_weights`, `num_layers`, ...) and asks the cell
    class for `_kernel_layer`: one direction of one layer over packed rows. States
    travel as a list of (L*D, B, width) tensors: [h], or [h, c] for LSTMs, widths
    `_kernel_state_sizes()` (h is P wide with proj). Each class's __init__ calls
    `_kernel_options` after torch's.
    """

    def _kernel_options(
        self,
        residual: bool = False,
        initial_state: str = "zeros",
        recurrent_dropout: float = 0.0,
        weight_drop: float = 0.0,
        zoneout: float = 0.0,
        zoneout_cell: Optional[float] = None,
        locked_dropout: bool = False,
    ) -> None:
        """Check and keep the options every kernel class takes as keywords.

        Called by each class's __init__ after torch's, so that the learned initial
        states `h0` (L*D, P or H) and, for LSTMs, `c0` (L*D, H) come after torch's
        parameters and draw no random numbers (zeros): the same seed gives torch's
        weights. Without them `h0` and `c0` are None (no parameter).

        The regularizers (design section 9), all off by default: `recurrent_dropout`
        (one mask per sequence over the recurrent input h_{t-1}), `weight_drop`
        (DropConnect on W_hh), `zoneout` (h keeps its previous value; `zoneout_cell`
        for an LSTM's c, default `zoneout`), `locked_dropout` (the dropout between
        layers draws one mask per sequence for all steps).
        """
        if residual is not True and residual is not False:
            raise ValueError(f"Expected residual True or False, got {residual!r}")
        if residual and self.num_layers < 2:
            raise ValueError(
                "Expected num_layers >= 2 with residual=True (layer k adds its "
                f"input to its output from k = 1), got {self.num_layers}"
            )
        if initial_state not in ("zeros", "learned"):
            raise ValueError(
                f"Expected initial_state 'zeros' or 'learned', got {initial_state!r}"
            )
        self.residual = residual
        self.initial_state = initial_state
        rows = self.num_layers * (2 if self.bidirectional else 1)
        like = self._flat_weights[0]
        sizes = self._kernel_state_sizes()
        for j, name in enumerate(("h0", "c0")):
            state = None
            if initial_state == "learned" and j < len(sizes):
                state = nn.Parameter(like.new_zeros(rows, sizes[j]))
            self.register_parameter(name, state)
        self.recurrent_dropout = kernel_check_rate(
            "recurrent_dropout", recurrent_dropout
        )
        self.weight_drop = kernel_check_rate("weight_drop", weight_drop)
        self.zoneout = kernel_check_rate("zoneout", zoneout)
        if zoneout_cell is not None and self.mode != "LSTM":
            raise ValueError(
                f"Expected zoneout_cell=None for {self.mode} (only an LSTM has a "
                f"cell state), got {zoneout_cell!r}"
            )
        if zoneout_cell is None:
            zoneout_cell = self.zoneout if self.mode == "LSTM" else 0.0
        self.zoneout_cell = kernel_check_rate("zoneout_cell", zoneout_cell)
        if locked_dropout is not True and locked_dropout is not False:
            raise ValueError(
                f"Expected locked_dropout True or False, got {locked_dropout!r}"
            )
        self.locked_dropout = locked_dropout
        if self.impl == "torch" and self._kernel_changes_step():
            raise ValueError(
                "Expected impl 'custom' or 'auto' with recurrent_dropout or zoneout "
                "(they change the recurrent step, which torch's kernel cannot), "
                "got 'torch'"
            )

    def _kernel_changes_step(self, training: bool = True) -> bool:
        """Whether an option changes the recurrent step (only our kernel runs it),
        in training or in eval (where recurrent dropout is the identity and zoneout
        blends by its rate)."""
        zoneout = self.zoneout > 0 or self.zoneout_cell > 0
        return zoneout or (training and self.recurrent_dropout > 0)

    def _kernel_state_sizes(self) -> List[int]:
        """Widths of the states: [h] or, for LSTMs, [h, c]; h is P wide with proj."""
        h_width = self.proj_size if self.proj_size > 0 else self.hidden_size
        if self.mode == "LSTM":
            return [h_width, self.hidden_size]
        return [h_width]

    def _kernel_learned_states(self, batch: int) -> Optional[List[Tensor]]:
        """The learned initial states copied over `batch`; None without them.

        Copied rather than expanded: torch's kernels take contiguous states (its
        ONNX decomposition, cuDNN); the copy is (L*D, B, H), once per call.
        """
        h0 = self.h0
        if h0 is None:
            return None
        states = [h0.unsqueeze(1).expand(-1, batch, -1).contiguous()]
        c0 = self.c0
        if c0 is not None:
            states.append(c0.unsqueeze(1).expand(-1, batch, -1).contiguous())
        return states

    def _kernel_weight_stride(self) -> int:
        """Flat weights per layer-direction: w_ih, w_hh, [b_ih, b_hh], [w_hr]."""
        n = 4 if self.bias else 2
        return n + 1 if self.proj_size > 0 else n

    def _kernel_weights(
        self, k: int, masks: Optional[List[Optional[Tensor]]] = None
    ) -> Tuple[Tensor, Tensor, Optional[Tensor], Optional[Tensor]]:
        """w_ih, w_hh, b_ih, b_hh of layer-direction k (torch's flat order).

        Given the masks `_kernel_stack` passes a layer, w_hh is the dropped one
        (masks[3]) when weight drop drew a mask: W_hh ⊙ M/(1-P), whose gradient
        reaches the registered weight_hh_l{k} through autograd.
        """
        n = self._kernel_weight_stride()
        w = self._flat_weights[k * n : k * n + n]
        w_hh = w[1]
        if masks is not None and len(masks) > 3:
            dropped = masks[3]
            if dropped is not None:
                w_hh = dropped
        if self.bias:
            return w[0], w_hh, w[2], w[3]
        return w[0], w_hh, None, None

    def _kernel_proj_weight(self, k: int) -> Optional[Tensor]:
        """w_hr (P, H) of layer-direction k; None without proj."""
        if self.proj_size == 0:
            return None
        n = self._kernel_weight_stride()
        return self._flat_weights[k * n + n - 1]

    def _kernel_weight_mask(self, k: int, w_hh: Tensor) -> Optional[Tensor]:
        """The weight-drop mask of layer-direction k: in training, M/(1-P) of
        w_hh's shape, M ~ Bernoulli(1-P), one per forward call shared by the whole
        batch and every step; drawn just before the step masks of k. None in eval
        or without weight_drop. Tests wrap this method to record the masks."""
        p = self.weight_drop
        if not self.training or p == 0:
            return None
        return kernel_bernoulli(w_hh, [w_hh.shape[0], w_hh.shape[1]], 1 - p).div_(1 - p)

    def _kernel_locked_mask(
        self, layer: int, batch: int, features: int, like: Tensor
    ) -> Tensor:
        """The locked dropout mask after `layer`: (B, features) Bernoulli(1-P)/(1-P)
        with torch's `dropout` P, one row per sequence (the caller's order), the
        same at every step (AWD's LockedDropout). Tests wrap this method."""
        p = self.dropout
        return kernel_bernoulli(like, [batch, features], 1 - p).div_(1 - p)

    def _kernel_drops_after(self, layer: int) -> bool:
        """Whether the dropout between layers acts after `layer` (as torch's)."""
        last = layer + 1 == self.num_layers
        return self.training and self.dropout > 0 and not last

    def _kernel_between(
        self,
        data: Tensor,
        layer: int,
        batch_sizes: List[int],
        order: Optional[Tensor],
    ) -> Tensor:
        """The dropout after `layer` on packed rows (N, F): torch's, one draw per
        element, or locked, one (B, F) mask per sequence (`order[j]`: the caller's
        index of the j-th longest sequence) for all its rows."""
        if not self._kernel_drops_after(layer):
            return data
        if not self.locked_dropout:
            return F.dropout(data, self.dropout, True)
        mask = self._kernel_locked_mask(layer, batch_sizes[0], data.shape[1], data)
        return kernel_locked(data, mask, batch_sizes, order)

    def _kernel_step_masks(
        self, k: int, batch: int, steps: int, like: Tensor
    ) -> List[Optional[Tensor]]:
        """The masks of layer-direction k that change the step, in sequence order.

        In training, drawn from torch's global RNG in this order, for each
        layer-direction just before it runs: the recurrent-dropout mask (B, W),
        Bernoulli(1-P)/(1-P), the same at every step; the zoneout masks of h
        (T, B, W) and of c (T, B, H), Bernoulli(P) (1: the unit keeps its previous
        value). W is h's width (P with proj). None where an option is off, and in
        eval (zoneout then blends by its rate: `_kernel_packed_masks`). Tests wrap
        this method to record the masks.
        """
        masks: List[Optional[Tensor]] = [None, None, None]
        if not self.training:
            return masks
        sizes = self._kernel_state_sizes()
        p = self.recurrent_dropout
        if p > 0:
            masks[0] = kernel_bernoulli(like, [batch, sizes[0]], 1 - p).div_(1 - p)
        if self.zoneout > 0:
            masks[1] = kernel_bernoulli(like, [steps, batch, sizes[0]], self.zoneout)
        if self.zoneout_cell > 0:
            c_size = sizes[len(sizes) - 1]
            masks[2] = kernel_bernoulli(like, [steps, batch, c_size], self.zoneout_cell)
        return masks

    def _kernel_packed_masks(
        self,
        masks: List[Optional[Tensor]],
        rows: int,
        order: Optional[Tensor],
        time_rows: Optional[Tensor],
    ) -> List[Optional[Tensor]]:
        """The step masks as the kernels take them: the recurrent mask sorted by
        length (B, W); the zoneout masks as (N, ·) packed rows, or in eval their
        rates broadcast over the rows (a view: nothing is drawn or stored)."""
        rec, zone_h, zone_c = masks[0], masks[1], masks[2]
        if rec is not None and order is not None:
            rec = rec.index_select(0, order)
        rates = [self.zoneout, self.zoneout_cell]
        zones = [zone_h, zone_c]
        sizes = self._kernel_state_sizes()
        for j in range(2):
            zone = zones[j]
            if zone is not None:
                flat = zone.reshape(-1, zone.shape[2])  # (T*B, ·), time-major
                if time_rows is not None:
                    flat = flat.index_select(0, time_rows.to(flat.device))
                zones[j] = flat
            elif not self.training and rates[j] > 0:
                width = sizes[len(sizes) - 1] if j == 1 else sizes[0]
                like = self._flat_weights[0]
                zones[j] = like.new_full((1, 1), rates[j]).expand(rows, width)
        return [rec, zones[0], zones[1]]

    def _kernel_stack(
        self,
        data: Tensor,
        hx: List[Tensor],
        batch_sizes: List[int],
        order: Optional[Tensor] = None,
    ) -> Tuple[Tensor, List[Tensor]]:
        """All layers over packed rows `data` (N, input): layer-major, as torch.

        Layer k > 0 reads both directions of layer k-1 (dropped out between layers)
        and, when residual, adds that input to its output. `order[j]` is the
        caller's index of the j-th longest sequence (None: already in that order).
        Per layer-direction the weight mask is drawn, then the step masks; the
        dropped W_hh travels to `_kernel_layer` as masks[3] (`_kernel_weights`).
        """
        num_directions = 2 if self.bidirectional else 1
        finals: List[List[Tensor]] = [[] for _ in hx]
        steps = len(batch_sizes)
        batch = batch_sizes[0] if steps > 0 else 0
        time_rows: Optional[Tensor] = None
        if self.training and (self.zoneout > 0 or self.zoneout_cell > 0):
            if order is not None or batch_sizes[steps - 1] != batch:
                time_rows = kernel_time_major_rows(batch_sizes, order, batch)
        for layer in range(self.num_layers):
            outs: List[Tensor] = []
            for direction in range(num_directions):
                k = layer * num_directions + direction
                w_hh = self._kernel_weights(k)[1]
                w_mask = self._kernel_weight_mask(k, w_hh)
                masks = self._kernel_step_masks(k, batch, steps, data)
                masks = self._kernel_packed_masks(
                    masks, data.shape[0], order, time_rows
                )
                if w_mask is not None:
                    masks.append(w_hh * w_mask)
                out, states = self._kernel_layer(
                    data, k, [h[k] for h in hx], batch_sizes, direction == 1, masks
                )
                outs.append(out)
                for j in range(len(states)):
                    finals[j].append(states[j])
            out = outs[0] if num_directions == 1 else torch.cat(outs, 1)  # (N, D*H)
            data = out + data if self.residual and layer > 0 else out
            data = self._kernel_between(data, layer, batch_sizes, order)
        return data, [torch.stack(f) for f in finals]

    def _kernel_check_states(
        self, input: Tensor, hx: List[Tensor], batch_sizes: Optional[Tensor]
    ) -> None:
        """torch's hidden-size check (and message), before any state is reordered;
        with proj, h is P wide and c is H wide."""
        rows, batch, _ = self.get_expected_hidden_size(input, batch_sizes)
        sizes = self._kernel_state_sizes()
        for k in range(len(hx)):
            which = "hidden" if len(hx) == 1 else "hidden[" + str(k) + "]"
            self.check_hidden_size(
                hx[k], (rows, batch, sizes[k]), "Expected " + which + " size {}, got {}"
            )

    def _kernel_padded(
        self,
        input: Tensor,
        hx: Optional[List[Tensor]],
        lengths: Optional[Tensor],
        n: int,
    ) -> Tuple[Tensor, List[Tensor]]:
        """A padded 3-D batch or an unbatched 2-D sequence, checked as torch checks
        it; torch's kernel or ours. `n` states (h or h, c), in torch's layout (the
        count is `_kernel_state_sizes`'s; `n` stays for the callers)."""
        self._update_flat_weights()  # as torch: weights swapped by functional_call
        dims = input.dim()
        if dims != 2 and dims != 3:
            raise ValueError(f"Expected 2-D (unbatched) or 3-D input, got {dims}-D")
        batch_dim = 0 if self.batch_first else 1
        if hx is not None:
            for h in hx:
                if h.dim() != dims:
                    raise RuntimeError(
                        f"Expected {dims}-D hidden states for {dims}-D input, "
                        f"got {h.dim()}-D"
                    )
            if dims == 2:  # torch's unbatched form: a batch of one
                hx = [h.unsqueeze(1) for h in hx]
        if dims == 2:
            input = input.unsqueeze(batch_dim)
            if lengths is not None and lengths.dim() == 0:
                lengths = lengths.reshape(1)
        steps = input.shape[1 - batch_dim]
        if steps == 0:
            raise RuntimeError("Expected sequence length to be larger than 0, got 0")
        self.check_input(input, None)
        if hx is not None:
            self._kernel_check_states(input, hx, None)
        else:
            hx = self._kernel_learned_states(input.shape[batch_dim])
        if lengths is not None:
            lengths = kernel_check_lengths(lengths, input.shape[batch_dim], steps)
        output, states = self._kernel_run(input, hx, lengths)
        if dims == 2:
            return output.squeeze(batch_dim), [s.squeeze(1) for s in states]
        return output, states

    def _kernel_run(
        self,
        input: Tensor,
        hx: Optional[List[Tensor]],
        lengths: Optional[Tensor],
    ) -> Tuple[Tensor, List[Tensor]]:
        """Checked padded input to torch's kernel (impl) or ours."""
        if not torch.jit.is_scripting():
            if self._kernel_defers_to_torch(input, lengths):
                return self._kernel_torch_forward(input, hx, lengths)
        return self._kernel_forward(input, hx, lengths)

    def _kernel_zero_states(self, like: Tensor, batch: int) -> List[Tensor]:
        """(L*D, batch, width) zero states, of `like`'s dtype and device."""
        rows = self.num_layers * (2 if self.bidirectional else 1)
        return [like.new_zeros(rows, batch, s) for s in self._kernel_state_sizes()]

    def _kernel_forward(
        self,
        input: Tensor,
        hx: Optional[List[Tensor]],
        lengths: Optional[Tensor],
    ) -> Tuple[Tensor, List[Tensor]]:
        """Our kernel on a checked padded batch (lengths: CPU int64)."""
        if self.batch_first:
            batch, steps = input.shape[0], input.shape[1]
        else:
            steps, batch = input.shape[0], input.shape[1]
        size = input.shape[2]  # explicit sizes: reshape(0, -1) is ambiguous
        if hx is None:
            hx = self._kernel_zero_states(input, batch)
        if lengths is None or batch == 0:  # an empty batch has nothing to pack
            if not torch.jit.is_scripting():
                if self.batch_first and kernel_batch_first_copies(input):
                    rows = KernelBatchFirst.apply(input, steps, batch)  # (T*B, N)
                    out, states = self._kernel_stack(rows, hx, [batch] * steps)
                    return KernelBatchFirst.apply(out, steps, batch), states
            x = input.transpose(0, 1) if self.batch_first else input
            out, states = self._kernel_stack(
                x.reshape(steps * batch, size), hx, [batch] * steps
            )
            output = out.view(steps, batch, out.shape[1])  # (T, B, D*H)
            if self.batch_first:
                output = output.transpose(0, 1)
            return output, states
        batch_sizes, order, rows = kernel_packing_plan(
            lengths, steps, self.batch_first, input.device
        )
        data = input.reshape(batch * steps, size).index_select(0, rows)  # (N, input)
        out, states = self._kernel_stack(
            data, [h.index_select(1, order) for h in hx], batch_sizes, order
        )
        padded = out.new_zeros(batch * steps, out.shape[1]).index_copy(0, rows, out)
        if self.batch_first:
            output = padded.view(batch, steps, out.shape[1])
        else:
            output = padded.view(steps, batch, out.shape[1])
        restore = torch.argsort(order)
        return output, [s.index_select(1, restore) for s in states]

    def _kernel_packed(
        self, input, hx: Optional[List[Tensor]], lengths: Optional[Tensor], n: int
    ):
        """A torch `PackedSequence` (eager only), checked as torch checks it, except
        that a state of another batch size raises instead of being sliced."""
        self._update_flat_weights()
        if lengths is not None:
            raise ValueError(
                "Expected lengths=None with a PackedSequence (it holds its lengths), "
                "got a tensor"
            )
        self.check_input(input.data, input.batch_sizes)
        if hx is not None:
            self._kernel_check_states(input.data, hx, input.batch_sizes)
        else:
            hx = self._kernel_learned_states(int(input.batch_sizes[0]))
        if self._kernel_defers_to_torch(input, None):
            return self._kernel_torch_forward(input, hx, None)
        return self._kernel_packed_sequence(input, hx)

    def _kernel_packed_sequence(self, input, hx: Optional[List[Tensor]]):
        """Our kernel on a checked `PackedSequence`: already our layout."""
        data, batch_sizes, sorted_indices, unsorted_indices = input
        if hx is None:
            hx = self._kernel_zero_states(data, int(batch_sizes[0]))
        elif sorted_indices is not None:
            hx = [h.index_select(1, sorted_indices) for h in hx]
        out, states = self._kernel_stack(data, hx, batch_sizes.tolist(), sorted_indices)
        if unsorted_indices is not None:
            states = [s.index_select(1, unsorted_indices) for s in states]
        packed = nn.utils.rnn.PackedSequence(
            out, batch_sizes, sorted_indices, unsorted_indices
        )
        return packed, states

    def _kernel_defers_to_torch(self, input, lengths: Optional[Tensor]) -> bool:
        """impl="auto": torch's fused kernel unless ours is faster (packed, on CPU)
        or an option changes the step (zoneout; recurrent dropout in training)."""
        if self.impl != "auto":
            return self.impl == "torch"
        if self._kernel_changes_step(self.training):
            return False
        if self.proj_size > 0 and torch.compiler.is_compiling():
            return False  # export: torch's ONNX exporter mis-shapes LSTM projections
        packed = isinstance(input, nn.utils.rnn.PackedSequence)
        device = input.data.device if packed else input.device
        return not (packed or lengths is not None) or device.type != "cpu"

    def _kernel_one_state_forward(
        self, input, hx: Optional[Tensor], lengths: Optional[Tensor]
    ) -> Tuple[Tensor, Tensor]:
        """forward of the cells whose state is h alone (RNN, GRU)."""
        states = None if hx is None else [hx]
        if not torch.jit.is_scripting():
            if isinstance(input, nn.utils.rnn.PackedSequence):
                out, s = self._kernel_packed(input, states, lengths, 1)
                return out, s[0]
        output, s = self._kernel_padded(input, states, lengths, 1)
        return output, s[0]

    def _kernel_step(
        self, x: Tensor, hx: Optional[List[Tensor]]
    ) -> Tuple[Tensor, List[Tensor]]:
        """One step of every layer, in eval, for `RecurrentModel.step`: x (B, I),
        states [h] or [h, c] of (L, B, ·) or None; see `step_kernel_stack`."""
        return step_kernel_stack(self, x, hx)

    def extra_repr(self) -> str:
        s = super().extra_repr() + f", impl={self.impl!r}"
        if self.residual:
            s += ", residual=True"
        if self.initial_state != "zeros":
            s += f", initial_state={self.initial_state!r}"
        for name in ("recurrent_dropout", "weight_drop", "zoneout"):
            if getattr(self, name) > 0:
                s += f", {name}={getattr(self, name)!r}"
        if self.mode == "LSTM" and self.zoneout_cell != self.zoneout:
            s += f", zoneout_cell={self.zoneout_cell!r}"
        if self.locked_dropout:
            s += ", locked_dropout=True"
        return s


class KernelBatchFirst(torch.autograd.Function):
    """A batch-first (B, T, N) batch as time-major rows (T*B, N), or such rows
    back as a batch-first (B, T, F) tensor: a copy either way (backward too), on
    the threads its size earns (`kernel_threads`). Left to autograd, the backward's
    copies would split over all of torch's threads, which stalls whenever another
    process holds a core. Eager only."""

    @staticmethod
    def forward(ctx, x: Tensor, steps: int, batch: int) -> Tensor:
        ctx.plan = (steps, batch, x.dim() == 3)
        return kernel_batch_first_copy(x, steps, batch, x.dim() == 3)

    @staticmethod
    def backward(ctx, grad: Tensor):
        steps, batch, to_rows = ctx.plan
        return kernel_batch_first_copy(grad, steps, batch, not to_rows), None, None


def kernel_batch_first_copies(input: Tensor) -> bool:
    """Whether a padded batch-first input goes through `KernelBatchFirst`: in
    eager mode, from 2^15 elements (below, torch copies on one thread anyway)."""
    return input.numel() >= 2**15 and not kernel_runs_plain(input)


def kernel_batch_first_copy(x: Tensor, steps: int, batch: int, to_rows: bool) -> Tensor:
    """(B, T, N) to (T*B, N) rows if `to_rows`, else back: always a new tensor
    (never a view of x, which a Function must not return)."""
    with KernelThreads(kernel_threads(80.0 * x.numel())):  # ~ a product's time
        if to_rows:
            rows = x.new_empty(steps, batch, x.shape[2])
            return rows.copy_(x.transpose(0, 1)).view(steps * batch, x.shape[2])
        out = x.new_empty(batch, steps, x.shape[1])
        return out.copy_(x.reshape(steps, batch, x.shape[1]).transpose(0, 1))


def kernel_check_impl(impl: str, allowed: Tuple[str, ...]) -> str:
    if impl not in allowed:
        raise ValueError(f"impl must be one of {allowed}, got {impl!r}")
    return impl
