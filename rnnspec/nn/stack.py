"""What every from-scratch recurrent kernel shares: packed rows and the layer stack.

One module per cell, each with its `torch.autograd.Function` (hand-written backward),
its plain steps, its layer function and its module class: `rnn` (CustomRNN, tanh or
relu), `lstm` (CustomLSTM), `peephole` (PeepholeLSTM, a CustomLSTM) and `gru`
(CustomGRU). This module holds what they share: the packed-row bookkeeping of a
layer-direction and `KernelStackBase`, the layers, directions and packing of a stack.

Each public class subclasses torch's own module, so parameter names, shapes, gate
order and default initialisation are torch's by construction, and a torch state dict
loads as is. Constructor and inputs are torch's too (positional order, defaults with
batch_first=False, device/dtype, unbatched (T, I) input, empty batches, torch's
errors), so each is a drop-in for its torch class. They add a `lengths` argument
and keyword-only options: `impl`; `residual` (layers >= 2: layer k >= 1 outputs
layer_k(in_k) + in_k, in_k the dropped-out output of layer k-1; the states stay each
layer's own); `initial_state="learned"` (parameters `h0` (L*D, P or H) and, for LSTMs,
`c0` (L*D, H), zeros at init, used over the batch when no state is given). torch's
kernel runs them too, called a layer at a time for `residual`. Ours runs:

* layer-major: a layer (both directions) runs over the whole sequence before the next;
* the input contribution of a layer is one matmul before the time loop;
* every sequence batch is handled as packed rows, sorted by length, with the active
  batch shrinking (forward direction) or growing (reverse direction) step by step like
  `PackedSequence.batch_sizes`, so padding costs no compute; an unpadded batch is the
  case where every step has the full batch;
* in eager mode each layer-direction is a `torch.autograd.Function` with a hand-written
  backward: per-step gate gradients, then the weight gradient as one matmul over all
  steps (as cuDNN does). Under TorchScript, torch.compile and export the same steps
  run as plain autograd code: the same operations in the same order, so the results
  agree to rounding (BLAS may round differently with the buffers' alignment). Asked
  for a gradient with a graph (`create_graph=True`, as a gradient penalty is), the
  backward differentiates that plain code instead, so double backward is exact.

torch.compile is opt-in, for unpadded input (lengths make the step count data
dependent): dynamo skips nn.RNN subclasses unless told otherwise, so
    torch._dynamo.config.allow_rnn = True
    model = torch.compile(model)

Packed layout: the rows of step t are `data[off_t : off_t + batch_sizes[t]]`, sorted by
decreasing length, so a step's active sequences are always a prefix of the previous
step's.

Adding a cell: one module with the four pieces (its class mixes `KernelStackBase` in
before torch's module and defines `_kernel_layer`), its place in
`rnnspec.compile.nnsource._module_rank` and its re-export in `rnnspec/nn/__init__.py`.
"""

from typing import Callable, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# ---------------------------------------------------------------------------------
# Shared packed-row bookkeeping (every cell)
# ---------------------------------------------------------------------------------


def kernel_order(steps: int, reverse: bool) -> List[int]:
    """The steps in the order a direction runs them."""
    order = list(range(steps))
    if reverse:
        order.reverse()
    return order


def kernel_state_rows(
    prev: Tensor, init: Tensor, size: int, finished: List[Tensor]
) -> Tensor:
    """The (size, H) state a step starts from, given the previous step's (n, H) one.

    Forward direction: the batch shrinks, rows past `size` have ended and their state
    is final (appended to `finished`). Reverse direction: the batch grows, the new rows
    start from their initial state `init`.
    """
    n = prev.shape[0]
    if size < n:
        finished.append(prev[size:])
        return prev[:size]
    if size > n:
        return torch.cat([prev, init[n:size]])
    return prev


def kernel_final_rows(last: Tensor, finished: List[Tensor]) -> Tensor:
    """(B, H) final states: the last step's rows, then the rows that ended earlier."""
    parts = [last]
    for k in range(len(finished)):
        parts.append(finished[len(finished) - 1 - k])
    return torch.cat(parts)


def kernel_prev_rows(
    seq: Tensor, init: Tensor, batch_sizes: List[int], reverse: bool
) -> Tensor:
    """(N, H): for every packed row, the state its step started from."""
    seqs = seq.split(batch_sizes)
    parts: List[Tensor] = [init] * len(seqs)
    unused: List[Tensor] = []
    prev = init[:0]
    for t in kernel_order(len(seqs), reverse):
        parts[t] = kernel_state_rows(prev, init, batch_sizes[t], unused)
        prev = seqs[t]
    return torch.cat(parts)


def kernel_state_rows_grad(
    grad: Tensor, final_grad: Tensor, size: int, init_grads: List[Tensor]
) -> Tensor:
    """Adjoint of `kernel_state_rows`, run backwards through the steps.

    `grad` is the gradient of the state the next-run step started from; returns the
    gradient of this step's (size, H) output state. Rows that ended here take their
    gradient from `final_grad`; rows that started at the next step pass theirs to the
    initial state (appended to `init_grads`, highest rows first).
    """
    n = grad.shape[0]
    if n < size:
        return torch.cat([grad, final_grad[n:size]])
    if n > size:
        init_grads.append(grad[size:])
        return grad[:size]
    return grad


def kernel_init_grad(init_grads: List[Tensor]) -> Tensor:
    """(B, H) initial-state gradient from the `kernel_state_rows_grad` pieces."""
    init_grads.reverse()
    return torch.cat(init_grads)


def kernel_project(x: Tensor, w_ih: Tensor, bias: Optional[Tensor]) -> Tensor:
    """(N, G) input contribution of every row at once: one matmul per layer."""
    if bias is None:
        return torch.mm(x, w_ih.t())
    return torch.addmm(bias, x, w_ih.t())


def kernel_input_grads(
    ctx, dz: Tensor, x: Tensor, w_ih: Tensor
) -> Tuple[Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
    """Gradients of x, w_ih and the bias from dz of every row: one matmul each.

    For the Functions whose first inputs are (x, w_ih, bias), as `kernel_project`.
    """
    need = ctx.needs_input_grad
    dx = dz @ w_ih if need[0] else None  # (N, input)
    d_wih = dz.t() @ x if need[1] else None  # (G, input)
    d_bias = dz.sum(0) if need[2] else None
    return dx, d_wih, d_bias


def kernel_recompute_grads(
    forward: Callable[..., Tuple[Tensor, ...]],
    inputs: List[Optional[Tensor]],
    needs: Tuple[bool, ...],
    grads: List[Tensor],
) -> List[Optional[Tensor]]:
    """The gradients of `inputs`, with a graph, through `forward` in plain torch ops.

    For a hand-written backward run under `create_graph=True`: recomputing the
    forward from the saved inputs makes the returned gradients differentiable, so
    double backward is exact. `needs` is `ctx.needs_input_grad` (tensors first).
    Each input is aliased by a view, so one tensor passed twice (h0 and c0, q and
    o) gets each of its two gradients once.
    """
    aliases = [
        x.view_as(x) if x is not None and need else x for x, need in zip(inputs, needs)
    ]
    outputs = forward(*aliases)
    used = [k for k in range(len(outputs)) if outputs[k].requires_grad]
    wanted = [a for a, need in zip(aliases, needs) if a is not None and need]
    found = iter(
        torch.autograd.grad(
            [outputs[k] for k in used],
            wanted,
            [grads[k] for k in used],
            create_graph=True,
            allow_unused=True,
        )
    )
    return [
        next(found) if a is not None and need else None
        for a, need in zip(aliases, needs)
    ]


def kernel_tanh(x: Tensor, out: Optional[Tensor] = None) -> Tensor:
    """tanh, as 2σ(2x) - 1 on CPU (within 2e-7 of torch.tanh); into `out` if given.

    torch's CPU tanh goes through VML: at one step's size it is ~5× slower than a
    sigmoid, and split over threads from 2048 elements, which stalls whenever another
    process holds a core. The plain and in-place forms compute the same numbers.
    """
    if x.device.type != "cpu":
        return torch.tanh(x) if out is None else torch.tanh(x, out=out)
    if out is None:
        return torch.sigmoid(x * 2) * 2 - 1
    return torch.mul(x, 2, out=out).sigmoid_().mul_(2).sub_(1)


def kernel_runs_plain(x: Tensor) -> bool:
    """Whether a layer runs its plain steps (left to autograd) in eager mode: under
    torch.compile and export, and for an empty batch, which the hand-written
    backward has no rows for. (TorchScript always does: checked where called,
    so that it compiles no autograd.Function.)"""
    return torch.compiler.is_compiling() or x.shape[0] == 0


def kernel_packing_plan(
    lengths: Tensor, steps: int, batch_first: bool, device: torch.device
) -> Tuple[List[int], Tensor, Tensor]:
    """Sort sequences by length once, as `pack_padded_sequence(enforce_sorted=False)`.

    Returns the batch size of every step (longest sequence first), the original index
    of each sorted sequence, and for each packed row its row in the padded input
    flattened to (B*T, N) if batch_first else (T*B, N).
    """
    lengths = lengths.to(device=torch.device("cpu"), dtype=torch.int64)
    batch = lengths.shape[0]
    order = torch.argsort(lengths, descending=True, stable=True)
    longest = int(lengths.max())
    valid = torch.arange(longest).unsqueeze(1) < lengths[order].unsqueeze(0)  # (T', B)
    batch_sizes: List[int] = valid.sum(1).tolist()
    step_rank = valid.nonzero()  # (sum(lengths), 2), step-major: the packed order
    t = step_rank[:, 0]
    b = order[step_rank[:, 1]]
    rows = b * steps + t if batch_first else t * batch + b
    return batch_sizes, order.to(device), rows.to(device)


# ---------------------------------------------------------------------------------
# Shared layer-major driver
# ---------------------------------------------------------------------------------


def kernel_check_lengths(lengths: Tensor, batch: int, steps: int) -> Tensor:
    """`lengths` as CPU int64, one per sequence in 1..steps: a length past the end
    would read the next sequence's rows."""
    if lengths.dim() != 1 or lengths.shape[0] != batch:
        raise ValueError(
            f"Expected lengths of shape ({batch},), got {list(lengths.shape)}"
        )
    lengths = lengths.to(device=torch.device("cpu"), dtype=torch.int64)
    if batch > 0 and (int(lengths.min()) < 1 or int(lengths.max()) > steps):
        values: List[int] = lengths.tolist()
        raise ValueError(f"Expected lengths in 1..{steps}, got {values}")
    return lengths


class KernelStackBase:
    """Layer/direction/packing logic shared by the four kernel modules.

    Mixed in before torch's module (`class CustomLSTM(KernelStackBase, nn.LSTM)`), it
    uses torch's attributes (`_flat_weights`, `num_layers`, ...) and asks the cell
    class for `_kernel_layer`: one direction of one layer over packed rows. States
    travel as a list of (L*D, B, width) tensors: [h], or [h, c] for LSTMs, widths
    `_kernel_state_sizes()` (h is P wide with proj). Each class's __init__ calls
    `_kernel_options` after torch's.
    """

    def _kernel_options(self, residual: bool, initial_state: str) -> None:
        """Check and keep the options every kernel class takes as keywords.

        Called by each class's __init__ after torch's, so that the learned initial
        states `h0` (L*D, P or H) and, for LSTMs, `c0` (L*D, H) come after torch's
        parameters and draw no random numbers (zeros): the same seed gives torch's
        weights. Without them `h0` and `c0` are None (no parameter).
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
        self, k: int
    ) -> Tuple[Tensor, Tensor, Optional[Tensor], Optional[Tensor]]:
        """w_ih, w_hh, b_ih, b_hh of layer-direction k (torch's flat order)."""
        n = self._kernel_weight_stride()
        w = self._flat_weights[k * n : k * n + n]
        if self.bias:
            return w[0], w[1], w[2], w[3]
        return w[0], w[1], None, None

    def _kernel_proj_weight(self, k: int) -> Optional[Tensor]:
        """w_hr (P, H) of layer-direction k; None without proj."""
        if self.proj_size == 0:
            return None
        n = self._kernel_weight_stride()
        return self._flat_weights[k * n + n - 1]

    def _kernel_stack(
        self, data: Tensor, hx: List[Tensor], batch_sizes: List[int]
    ) -> Tuple[Tensor, List[Tensor]]:
        """All layers over packed rows `data` (N, input): layer-major, as torch.

        Layer k > 0 reads both directions of layer k-1 (dropped out between layers)
        and, when residual, adds that input to its output.
        """
        num_directions = 2 if self.bidirectional else 1
        finals: List[List[Tensor]] = [[] for _ in hx]
        for layer in range(self.num_layers):
            outs: List[Tensor] = []
            for direction in range(num_directions):
                k = layer * num_directions + direction
                out, states = self._kernel_layer(
                    data, k, [h[k] for h in hx], batch_sizes, direction == 1
                )
                outs.append(out)
                for j in range(len(states)):
                    finals[j].append(states[j])
            out = outs[0] if num_directions == 1 else torch.cat(outs, 1)  # (N, D*H)
            data = out + data if self.residual and layer > 0 else out
            if self.training and self.dropout > 0 and layer + 1 < self.num_layers:
                data = F.dropout(data, self.dropout, True)
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
            data, [h.index_select(1, order) for h in hx], batch_sizes
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
        out, states = self._kernel_stack(data, hx, batch_sizes.tolist())
        if unsorted_indices is not None:
            states = [s.index_select(1, unsorted_indices) for s in states]
        packed = nn.utils.rnn.PackedSequence(
            out, batch_sizes, sorted_indices, unsorted_indices
        )
        return packed, states

    def _kernel_defers_to_torch(self, input, lengths: Optional[Tensor]) -> bool:
        """impl="auto": torch's fused kernel unless ours is faster (packed, on CPU)."""
        if self.impl != "auto":
            return self.impl == "torch"
        if self.proj_size > 0 and torch.compiler.is_compiling():
            return False  # export: torch's ONNX exporter mis-shapes LSTM projections
        packed = isinstance(input, nn.utils.rnn.PackedSequence)
        device = input.data.device if packed else input.device
        return not (packed or lengths is not None) or device.type != "cpu"

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

    def _kernel_torch_call(self, input, hx: Optional[List[Tensor]]):
        """torch's forward, or its kernel a layer at a time where the stack needs
        it (residual)."""
        if self.residual:
            return self._kernel_torch_layers(input, hx)
        out, state = super().forward(input, self._kernel_torch_state(hx))
        return out, list(state) if isinstance(state, tuple) else [state]

    def _kernel_torch_layers(self, input, hx: Optional[List[Tensor]]):
        """torch's fused kernel a layer at a time (both directions in one call) on a
        padded batch or a PackedSequence, with dropout between layers and the
        residual sums of `_kernel_stack`; torch infers proj from the state widths."""
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
        per_layer = dirs * self._kernel_weight_stride()
        finals: List[List[Tensor]] = [[] for _ in hx]
        for layer in range(self.num_layers):
            state = [h[layer * dirs : (layer + 1) * dirs] for h in hx]
            state = tuple(state) if len(state) == 2 else state[0]
            weights = self._flat_weights[layer * per_layer : (layer + 1) * per_layer]
            if packed:
                out, *states = kernel(data, batch_sizes, state, weights, *flags)
            else:
                out, *states = kernel(data, state, weights, *flags, self.batch_first)
            for j in range(len(states)):
                finals[j].append(states[j])
            data = out + data if layer > 0 else out
            if self.training and self.dropout > 0 and layer + 1 < self.num_layers:
                data = F.dropout(data, self.dropout, True)
        states = [torch.cat(f) for f in finals]
        if unsorted_indices is not None:
            states = [s.index_select(1, unsorted_indices) for s in states]
        if packed:
            return nn.utils.rnn.PackedSequence(
                data, batch_sizes, sorted_indices, unsorted_indices
            ), states
        return data, states

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

    def extra_repr(self) -> str:
        s = super().extra_repr() + f", impl={self.impl!r}"
        if self.residual:
            s += ", residual=True"
        if self.initial_state != "zeros":
            s += f", initial_state={self.initial_state!r}"
        return s


def kernel_check_impl(impl: str, allowed: Tuple[str, ...]) -> str:
    if impl not in allowed:
        raise ValueError(f"impl must be one of {allowed}, got {impl!r}")
    return impl
