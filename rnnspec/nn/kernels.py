"""From-scratch recurrent kernels: RNN (tanh/relu), LSTM, GRU and peephole LSTM.

Each public class subclasses torch's own module, so parameter names, shapes, gate
order and default initialisation are torch's by construction, and a torch state dict
loads as is. Constructor and inputs are torch's too (positional order, defaults with
batch_first=False, device/dtype, unbatched (T, I) input, empty batches, torch's
errors), so each is a drop-in for its torch class. They add a keyword-only `impl`
and a `lengths` argument, and run our kernel:

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
"""

import math
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
    travel as a list of (L*D, B, H) tensors: [h], or [h, c] for LSTMs.
    """

    def _kernel_weights(
        self, k: int
    ) -> Tuple[Tensor, Tensor, Optional[Tensor], Optional[Tensor]]:
        """w_ih, w_hh, b_ih, b_hh of layer-direction k (torch's flat order)."""
        n = 4 if self.bias else 2
        w = self._flat_weights[k * n : k * n + n]
        if self.bias:
            return w[0], w[1], w[2], w[3]
        return w[0], w[1], None, None

    def _kernel_stack(
        self, data: Tensor, hx: List[Tensor], batch_sizes: List[int]
    ) -> Tuple[Tensor, List[Tensor]]:
        """All layers over packed rows `data` (N, input): layer-major, as torch.

        Layer k > 0 reads both directions of layer k-1; dropout between layers only.
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
            data = outs[0] if num_directions == 1 else torch.cat(outs, 1)  # (N, D*H)
            if self.training and self.dropout > 0 and layer + 1 < self.num_layers:
                data = F.dropout(data, self.dropout, True)
        return data, [torch.stack(f) for f in finals]

    def _kernel_check_states(
        self, input: Tensor, hx: List[Tensor], batch_sizes: Optional[Tensor]
    ) -> None:
        """torch's hidden-size check (and message), before any state is reordered."""
        expected = self.get_expected_hidden_size(input, batch_sizes)
        for k in range(len(hx)):
            which = "hidden" if len(hx) == 1 else "hidden[" + str(k) + "]"
            self.check_hidden_size(
                hx[k], expected, "Expected " + which + " size {}, got {}"
            )

    def _kernel_padded(
        self,
        input: Tensor,
        hx: Optional[List[Tensor]],
        lengths: Optional[Tensor],
        n: int,
    ) -> Tuple[Tensor, List[Tensor]]:
        """A padded 3-D batch or an unbatched 2-D sequence, checked as torch checks
        it; torch's kernel or ours. `n` states (h or h, c), in torch's layout."""
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
        if lengths is not None:
            lengths = kernel_check_lengths(lengths, input.shape[batch_dim], steps)
        output, states = self._kernel_run(input, hx, lengths, n)
        if dims == 2:
            return output.squeeze(batch_dim), [s.squeeze(1) for s in states]
        return output, states

    def _kernel_run(
        self,
        input: Tensor,
        hx: Optional[List[Tensor]],
        lengths: Optional[Tensor],
        n: int,
    ) -> Tuple[Tensor, List[Tensor]]:
        """Checked padded input to torch's kernel (impl) or ours."""
        if not torch.jit.is_scripting():
            if self._kernel_defers_to_torch(input, lengths):
                out, state = self._kernel_torch_forward(
                    input, self._kernel_torch_state(hx), lengths
                )
                return out, list(state) if isinstance(state, tuple) else [state]
        return self._kernel_forward(input, hx, lengths, n)

    def _kernel_forward(
        self,
        input: Tensor,
        hx: Optional[List[Tensor]],
        lengths: Optional[Tensor],
        n: int,
    ) -> Tuple[Tensor, List[Tensor]]:
        """Our kernel on a checked padded batch (lengths: CPU int64)."""
        if self.batch_first:
            batch, steps = input.shape[0], input.shape[1]
        else:
            steps, batch = input.shape[0], input.shape[1]
        size = input.shape[2]  # explicit sizes: reshape(0, -1) is ambiguous
        if hx is None:
            num_directions = 2 if self.bidirectional else 1
            zeros = input.new_zeros(
                self.num_layers * num_directions, batch, self.hidden_size
            )
            hx = [zeros for _ in range(n)]
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
        if self._kernel_defers_to_torch(input, None):
            out, state = self._kernel_torch_forward(
                input, self._kernel_torch_state(hx), None
            )
            return out, list(state) if isinstance(state, tuple) else [state]
        return self._kernel_packed_sequence(input, hx, n)

    def _kernel_packed_sequence(self, input, hx: Optional[List[Tensor]], n: int):
        """Our kernel on a checked `PackedSequence`: already our layout."""
        data, batch_sizes, sorted_indices, unsorted_indices = input
        if hx is None:
            num_directions = 2 if self.bidirectional else 1
            shape = (self.num_layers * num_directions, int(batch_sizes[0]))
            zeros = data.new_zeros(shape + (self.hidden_size,))
            hx = [zeros for _ in range(n)]
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
        """torch's forward (oneDNN / cuDNN), through packing when lengths are given."""
        batch = 0 if lengths is None else lengths.shape[0]
        if lengths is None or batch == 0:  # torch cannot pack an empty batch
            return super().forward(input, hx)  # the torch class after this mixin
        steps = input.shape[1] if self.batch_first else input.shape[0]
        packed = nn.utils.rnn.pack_padded_sequence(
            input, lengths, batch_first=self.batch_first, enforce_sorted=False
        )
        out, state = super().forward(packed, hx)
        out, _ = nn.utils.rnn.pad_packed_sequence(
            out, batch_first=self.batch_first, total_length=steps
        )
        return out, state

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
        return super().extra_repr() + f", impl={self.impl!r}"


def kernel_check_impl(impl: str, allowed: Tuple[str, ...]) -> str:
    if impl not in allowed:
        raise ValueError(f"impl must be one of {allowed}, got {impl!r}")
    return impl


# ---------------------------------------------------------------------------------
# Elman RNN (tanh / relu)
# ---------------------------------------------------------------------------------


class RNNKernelFunction(torch.autograd.Function):
    """One direction of one Elman layer: h_t = act(W_ih x_t + b + W_hh h_{t-1}).

    Forward projects every step's input into the output buffer, which each step then
    completes in place. Backward: act' is known from h alone (1 - h², or h > 0), so
    a step is one multiply and one matmul; each weight gradient is one matmul.
    """

    @staticmethod
    def forward(ctx, x, w_ih, bias, w_hh, h0, batch_sizes, reverse, relu):
        hs = kernel_project(x, w_ih, bias)  # (N, H): input part, then the outputs
        outs = hs.split(batch_sizes)
        w_t = w_hh.t()
        done: List[Tensor] = []
        h = h0[:0]
        for t in kernel_order(len(outs), reverse):
            h_prev = kernel_state_rows(h, h0, batch_sizes[t], done)
            h = outs[t].addmm_(h_prev, w_t)
            h = h.relu_() if relu else kernel_tanh(h, out=h)
        ctx.save_for_backward(x, w_ih, bias, w_hh, h0, hs)
        ctx.plan = (batch_sizes, reverse, relu)
        return hs, kernel_final_rows(h, done)

    @staticmethod
    def backward(ctx, d_hs, d_hn):
        x, w_ih, bias, w_hh, h0, hs = ctx.saved_tensors
        batch_sizes, reverse, relu = ctx.plan
        if torch.is_grad_enabled():  # create_graph=True: differentiate the plain steps

            def plain(x, w_ih, bias, w_hh, h0):
                xw = kernel_project(x, w_ih, bias)
                return rnn_kernel_plain(xw, w_hh, h0, batch_sizes, reverse, relu)

            inputs = [x, w_ih, bias, w_hh, h0]
            grads = kernel_recompute_grads(
                plain, inputs, ctx.needs_input_grad, [d_hs, d_hn]
            )
            return (*grads, None, None, None)
        # act'(z) for every step; each step multiplies its rows by dh in place
        dz = (hs > 0).to(hs.dtype) if relu else hs.mul(hs).neg_().add_(1)  # (N, H)
        d_outs, dzs = d_hs.split(batch_sizes), dz.split(batch_sizes)
        init_grads: List[Tensor] = []
        dh = d_hn[:0]  # gradient of the state the next-run step started from
        for t in kernel_order(len(dzs), not reverse):
            size = batch_sizes[t]
            dh = kernel_state_rows_grad(dh, d_hn, size, init_grads) + d_outs[t]
            dh = dzs[t].mul_(dh) @ w_hh  # (size, H)
        kernel_state_rows_grad(dh, d_hn, 0, init_grads)
        d_whh = dz.t() @ kernel_prev_rows(hs, h0, batch_sizes, reverse)  # (H, H)
        dx, d_wih, d_bias = kernel_input_grads(ctx, dz, x, w_ih)
        dh0 = kernel_init_grad(init_grads)
        return dx, d_wih, d_bias, d_whh, dh0, None, None, None


def rnn_kernel_plain(
    xw: Tensor,
    w_hh: Tensor,
    h0: Tensor,
    batch_sizes: List[int],
    reverse: bool,
    relu: bool,
) -> Tuple[Tensor, Tensor]:
    """RNNKernelFunction's forward step for step, left to autograd."""
    w_t = w_hh.t()
    xs = xw.split(batch_sizes)
    hs: List[Tensor] = []
    done: List[Tensor] = []
    h = h0[:0]
    for j in range(len(xs)):
        t = len(xs) - 1 - j if reverse else j
        h_prev = kernel_state_rows(h, h0, batch_sizes[t], done)
        z = torch.addmm(xs[t], h_prev, w_t)
        h = torch.relu(z) if relu else kernel_tanh(z)
        hs.append(h)
    if reverse:
        hs.reverse()
    return torch.cat(hs), kernel_final_rows(h, done)


def rnn_kernel_layer(
    x: Tensor,
    w_ih: Tensor,
    bias: Optional[Tensor],
    w_hh: Tensor,
    h0: Tensor,
    batch_sizes: List[int],
    reverse: bool,
    relu: bool,
) -> Tuple[Tensor, Tensor]:
    """(N, H) outputs and (B, H) final state of one Elman layer-direction."""
    if torch.jit.is_scripting() or kernel_runs_plain(x):
        xw = kernel_project(x, w_ih, bias)
        return rnn_kernel_plain(xw, w_hh, h0, batch_sizes, reverse, relu)
    out, h_n = RNNKernelFunction.apply(
        x, w_ih, bias, w_hh, h0, batch_sizes, reverse, relu
    )
    return out, h_n


class CustomRNN(KernelStackBase, nn.RNN):
    """`nn.RNN` with our kernel: h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh).

    act is tanh or relu. Same parameters as nn.RNN; `forward(input, hx, lengths)`.
    """

    impl: str

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device=None,
        dtype=None,
        *,
        impl: str = "custom",
    ):
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            nonlinearity=nonlinearity,
            bias=bias,
            batch_first=batch_first,
            dropout=dropout,
            bidirectional=bidirectional,
            device=device,
            dtype=dtype,
        )
        self.impl = kernel_check_impl(impl, ("custom", "auto", "torch"))

    def _kernel_layer(
        self,
        x: Tensor,
        k: int,
        state: List[Tensor],
        batch_sizes: List[int],
        reverse: bool,
    ) -> Tuple[Tensor, List[Tensor]]:
        w_ih, w_hh, b_ih, b_hh = self._kernel_weights(k)
        bias = b_ih + b_hh if b_ih is not None and b_hh is not None else None
        relu = self.nonlinearity == "relu"
        out, h_n = rnn_kernel_layer(
            x, w_ih, bias, w_hh, state[0], batch_sizes, reverse, relu
        )
        return out, [h_n]

    def forward(
        self,
        input: Tensor,
        hx: Optional[Tensor] = None,
        lengths: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Tensor]:
        return self._kernel_one_state_forward(input, hx, lengths)


# ---------------------------------------------------------------------------------
# LSTM
# ---------------------------------------------------------------------------------


class LSTMKernelFunction(torch.autograd.Function):
    """One direction of one LSTM layer; gates i, f, g, o as torch.

    Forward projects every step's input into the gate buffer, which each step then
    completes in place; it saves the activated gates and c_t. Backward first forms,
    for all steps at once, every factor that does not depend on the recurrence
    (`lstm_backward_factors`):
        dz_{i,f,g} = dc_t P_{i,f,g},   dz_o = dh_t P_o,   dc_t += dh_t K
    so a step costs one matmul and five small elementwise ops; each weight gradient
    is then one matmul over all steps.
    """

    @staticmethod
    def forward(ctx, x, w_ih, bias, w_hh, h0, c0, batch_sizes, reverse):
        H = h0.shape[1]
        gates = kernel_project(x, w_ih, bias)  # (N, 4H): input part, then i, f, g, o
        cs = x.new_empty(gates.shape[0], H)  # (N, H) c_t
        hs = torch.empty_like(cs)  # (N, H) h_t: the output
        gs, css, outs = (t.split(batch_sizes) for t in (gates, cs, hs))
        w_t = w_hh.t()
        h_done: List[Tensor] = []
        c_done: List[Tensor] = []
        h, c = h0[:0], c0[:0]
        for t in kernel_order(len(gs), reverse):
            h_prev = kernel_state_rows(h, h0, batch_sizes[t], h_done)
            c_prev = kernel_state_rows(c, c0, batch_sizes[t], c_done)
            a = gs[t].addmm_(h_prev, w_t)  # (size, 4H) pre-activations
            i, f, g, o = a.chunk(4, 1)
            a[:, : 2 * H].sigmoid_()  # i, f
            kernel_tanh(g, out=g)
            o.sigmoid_()
            c = torch.mul(f, c_prev, out=css[t]).addcmul_(i, g)
            h = kernel_tanh(c, out=outs[t]).mul_(o)
        ctx.save_for_backward(x, w_ih, bias, w_hh, h0, c0, gates, cs, hs)
        ctx.plan = (batch_sizes, reverse)
        return hs, kernel_final_rows(h, h_done), kernel_final_rows(c, c_done)

    @staticmethod
    def backward(ctx, d_hs, d_hn, d_cn):
        x, w_ih, bias, w_hh, h0, c0, gates, cs, hs = ctx.saved_tensors
        batch_sizes, reverse = ctx.plan
        if torch.is_grad_enabled():  # create_graph=True: differentiate the plain steps

            def plain(x, w_ih, bias, w_hh, h0, c0):
                xw = kernel_project(x, w_ih, bias)
                return lstm_kernel_plain(xw, w_hh, h0, c0, batch_sizes, reverse)

            inputs = [x, w_ih, bias, w_hh, h0, c0]
            grads = kernel_recompute_grads(
                plain, inputs, ctx.needs_input_grad, [d_hs, d_hn, d_cn]
            )
            return (*grads, None, None)
        H = h0.shape[1]
        c_prev = kernel_prev_rows(cs, c0, batch_sizes, reverse)  # (N, H)
        dz, K = lstm_backward_factors(gates, c_prev, cs)  # dz holds P for now
        d_outs, dzs, Ks = (t.split(batch_sizes) for t in (d_hs, dz, K))
        fs = gates[:, H : 2 * H].split(batch_sizes)
        h_grads: List[Tensor] = []
        c_grads: List[Tensor] = []
        dh, dc = d_hn[:0], d_cn[:0]  # gradients of the next-run step's start state
        for t in kernel_order(len(dzs), not reverse):
            size, dzt = batch_sizes[t], dzs[t]  # (size, 4H)
            dh = kernel_state_rows_grad(dh, d_hn, size, h_grads) + d_outs[t]
            dc = kernel_state_rows_grad(dc, d_cn, size, c_grads).addcmul(dh, Ks[t])
            dzt[:, : 3 * H].view(size, 3, H).mul_(dc.unsqueeze(1))  # i, f, g
            dzt[:, 3 * H :].mul_(dh)  # o
            dh = dzt @ w_hh  # (size, H)
            dc = dc * fs[t]
        kernel_state_rows_grad(dh, d_hn, 0, h_grads)
        kernel_state_rows_grad(dc, d_cn, 0, c_grads)
        d_whh = dz.t() @ kernel_prev_rows(hs, h0, batch_sizes, reverse)  # (4H, H)
        dx, d_wih, d_bias = kernel_input_grads(ctx, dz, x, w_ih)
        dh0, dc0 = kernel_init_grad(h_grads), kernel_init_grad(c_grads)
        return dx, d_wih, d_bias, d_whh, dh0, dc0, None, None


def lstm_backward_factors(
    gates: Tensor, c_prev: Tensor, cs: Tensor
) -> Tuple[Tensor, Tensor]:
    """P (N, 4H) and K (N, H) of the LSTM backward, for all steps at once.

    P = [g σ'(i), c_{t-1} σ'(f), i tanh'(g), tanh(c_t) σ'(o)], K = o tanh'(c_t),
    with σ'(a) = a - a² and tanh'(a) = 1 - a² in terms of the activations.
    """
    i, f, g, o = gates.chunk(4, 1)
    P = torch.addcmul(gates, gates, gates, value=-1)  # a - a²: σ' of i, f, o
    p_i, p_f, p_g, p_o = P.chunk(4, 1)
    p_i.mul_(g)
    p_f.mul_(c_prev)
    p_g.sub_(g).add_(1).mul_(i)  # (g - g²) - g + 1 = 1 - g²
    K = kernel_tanh(cs)  # tanh(c_t) ...
    p_o.mul_(K)
    K.mul_(K).neg_().add_(1).mul_(o)  # ... then o (1 - tanh²(c_t))
    return P, K


def lstm_kernel_plain(
    xw: Tensor,
    w_hh: Tensor,
    h0: Tensor,
    c0: Tensor,
    batch_sizes: List[int],
    reverse: bool,
) -> Tuple[Tensor, Tensor, Tensor]:
    """LSTMKernelFunction's forward step for step, left to autograd."""
    H = h0.shape[1]
    w_t = w_hh.t()
    xs = xw.split(batch_sizes)
    hs: List[Tensor] = []
    h_done: List[Tensor] = []
    c_done: List[Tensor] = []
    h, c = h0[:0], c0[:0]
    for j in range(len(xs)):
        t = len(xs) - 1 - j if reverse else j
        h_prev = kernel_state_rows(h, h0, batch_sizes[t], h_done)
        c_prev = kernel_state_rows(c, c0, batch_sizes[t], c_done)
        a = torch.addmm(xs[t], h_prev, w_t)  # (size, 4H)
        i, f = a[:, : 2 * H].sigmoid().chunk(2, 1)
        g = kernel_tanh(a[:, 2 * H : 3 * H])
        o = a[:, 3 * H :].sigmoid()
        c = torch.addcmul(f * c_prev, i, g)
        h = kernel_tanh(c) * o
        hs.append(h)
    if reverse:
        hs.reverse()
    return torch.cat(hs), kernel_final_rows(h, h_done), kernel_final_rows(c, c_done)


def lstm_kernel_layer(
    x: Tensor,
    w_ih: Tensor,
    bias: Optional[Tensor],
    w_hh: Tensor,
    h0: Tensor,
    c0: Tensor,
    batch_sizes: List[int],
    reverse: bool,
) -> Tuple[Tensor, Tensor, Tensor]:
    """(N, H) outputs and (B, H) final h, c of one LSTM layer-direction."""
    if torch.jit.is_scripting() or kernel_runs_plain(x):
        xw = kernel_project(x, w_ih, bias)
        return lstm_kernel_plain(xw, w_hh, h0, c0, batch_sizes, reverse)
    out, h_n, c_n = LSTMKernelFunction.apply(
        x, w_ih, bias, w_hh, h0, c0, batch_sizes, reverse
    )
    return out, h_n, c_n


class CustomLSTM(KernelStackBase, nn.LSTM):
    """`nn.LSTM` with our kernel; gates as torch (x = input, h = previous state):

    i = σ(W_ii x + b_ii + W_hi h + b_hi)    f = σ(W_if x + b_if + W_hf h + b_hf)
    g = tanh(W_ig x + b_ig + W_hg h + b_hg) o = σ(W_io x + b_io + W_ho h + b_ho)
    c' = f ⊙ c + i ⊙ g                      h' = o ⊙ tanh(c')
    """

    impl: str

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device=None,
        dtype=None,
        *,
        impl: str = "custom",
    ):
        if proj_size != 0:
            raise ValueError(
                "Expected proj_size=0 (the custom kernels have no projection; "
                f"use nn.LSTM), got {proj_size}"
            )
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias=bias,
            batch_first=batch_first,
            dropout=dropout,
            bidirectional=bidirectional,
            device=device,
            dtype=dtype,
        )
        self.impl = kernel_check_impl(impl, self._kernel_impls())

    def _kernel_impls(self) -> Tuple[str, ...]:
        return ("custom", "auto", "torch")

    def _kernel_layer(
        self,
        x: Tensor,
        k: int,
        state: List[Tensor],
        batch_sizes: List[int],
        reverse: bool,
    ) -> Tuple[Tensor, List[Tensor]]:
        w_ih, w_hh, b_ih, b_hh = self._kernel_weights(k)
        bias = b_ih + b_hh if b_ih is not None and b_hh is not None else None
        out, h_n, c_n = lstm_kernel_layer(
            x, w_ih, bias, w_hh, state[0], state[1], batch_sizes, reverse
        )
        return out, [h_n, c_n]

    def forward(
        self,
        input: Tensor,
        hx: Optional[Tuple[Tensor, Tensor]] = None,
        lengths: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Tuple[Tensor, Tensor]]:
        states = None if hx is None else [hx[0], hx[1]]
        if not torch.jit.is_scripting():
            if isinstance(input, nn.utils.rnn.PackedSequence):
                out, s = self._kernel_packed(input, states, lengths, 2)
                return out, (s[0], s[1])
        output, s = self._kernel_padded(input, states, lengths, 2)
        return output, (s[0], s[1])


# ---------------------------------------------------------------------------------
# Peephole LSTM
# ---------------------------------------------------------------------------------


class PeepholeKernelFunction(torch.autograd.Function):
    """One direction of one peephole LSTM layer (equations in PeepholeLSTM).

    As LSTMKernelFunction, plus the peephole paths in backward: dc_t += dz_o p_o and
    dc_{t-1} += dz_i p_i + dz_f p_f; the peephole gradients are reductions over all
    steps after the loop.
    """

    @staticmethod
    def forward(ctx, x, w_ih, bias, w_hh, peep, h0, c0, batch_sizes, reverse):
        H = h0.shape[1]
        p_if, p_o = peep[: 2 * H].view(2, H), peep[2 * H :]
        gates = kernel_project(x, w_ih, bias)  # (N, 4H): input part, then i, f, g, o
        cs = x.new_empty(gates.shape[0], H)  # (N, H) c_t
        hs = torch.empty_like(cs)  # (N, H) h_t: the output
        gs, css, outs = (t.split(batch_sizes) for t in (gates, cs, hs))
        w_t = w_hh.t()
        h_done: List[Tensor] = []
        c_done: List[Tensor] = []
        h, c = h0[:0], c0[:0]
        for t in kernel_order(len(gs), reverse):
            size = batch_sizes[t]
            h_prev = kernel_state_rows(h, h0, size, h_done)
            c_prev = kernel_state_rows(c, c0, size, c_done)
            a = gs[t].addmm_(h_prev, w_t)  # (size, 4H) pre-activations
            i, f, g, o = a.chunk(4, 1)
            a_if = a[:, : 2 * H].view(size, 2, H)
            a_if.addcmul_(c_prev.unsqueeze(1), p_if).sigmoid_()  # i, f see c_{t-1}
            kernel_tanh(g, out=g)
            c = torch.mul(f, c_prev, out=css[t]).addcmul_(i, g)
            o.addcmul_(c, p_o).sigmoid_()  # o sees c_t
            h = kernel_tanh(c, out=outs[t]).mul_(o)
        ctx.save_for_backward(x, w_ih, bias, w_hh, peep, h0, c0, gates, cs, hs)
        ctx.plan = (batch_sizes, reverse)
        return hs, kernel_final_rows(h, h_done), kernel_final_rows(c, c_done)

    @staticmethod
    def backward(ctx, d_hs, d_hn, d_cn):
        x, w_ih, bias, w_hh, peep, h0, c0, gates, cs, hs = ctx.saved_tensors
        batch_sizes, reverse = ctx.plan
        if torch.is_grad_enabled():  # create_graph=True: differentiate the plain steps

            def plain(x, w_ih, bias, w_hh, peep, h0, c0):
                xw = kernel_project(x, w_ih, bias)
                return peephole_kernel_plain(
                    xw, w_hh, peep, h0, c0, batch_sizes, reverse
                )

            inputs = [x, w_ih, bias, w_hh, peep, h0, c0]
            grads = kernel_recompute_grads(
                plain, inputs, ctx.needs_input_grad, [d_hs, d_hn, d_cn]
            )
            return (*grads, None, None)
        H = h0.shape[1]
        p_i, p_f, p_o = peep.chunk(3)
        c_prev = kernel_prev_rows(cs, c0, batch_sizes, reverse)  # (N, H)
        dz, K = lstm_backward_factors(gates, c_prev, cs)  # dz holds P for now
        d_outs, dzs, Ks = (t.split(batch_sizes) for t in (d_hs, dz, K))
        fs = gates[:, H : 2 * H].split(batch_sizes)
        h_grads: List[Tensor] = []
        c_grads: List[Tensor] = []
        dh, dc = d_hn[:0], d_cn[:0]  # gradients of the next-run step's start state
        for t in kernel_order(len(dzs), not reverse):
            size, dzt = batch_sizes[t], dzs[t]  # (size, 4H)
            dh = kernel_state_rows_grad(dh, d_hn, size, h_grads) + d_outs[t]
            dz_o = dzt[:, 3 * H :].mul_(dh)
            dc = kernel_state_rows_grad(dc, d_cn, size, c_grads).addcmul(dh, Ks[t])
            dc.addcmul_(dz_o, p_o)  # o saw c_t
            dzt[:, : 3 * H].view(size, 3, H).mul_(dc.unsqueeze(1))  # i, f, g
            dh = dzt @ w_hh  # (size, H)
            dc = dc * fs[t]  # i and f saw c_{t-1}:
            dc.addcmul_(dzt[:, :H], p_i).addcmul_(dzt[:, H : 2 * H], p_f)
        kernel_state_rows_grad(dh, d_hn, 0, h_grads)
        kernel_state_rows_grad(dc, d_cn, 0, c_grads)
        d_whh = dz.t() @ kernel_prev_rows(hs, h0, batch_sizes, reverse)  # (4H, H)
        d_peep = torch.cat(
            [
                (dz[:, :H] * c_prev).sum(0),
                (dz[:, H : 2 * H] * c_prev).sum(0),
                (dz[:, 3 * H :] * cs).sum(0),
            ]
        )
        dx, d_wih, d_bias = kernel_input_grads(ctx, dz, x, w_ih)
        dh0, dc0 = kernel_init_grad(h_grads), kernel_init_grad(c_grads)
        return dx, d_wih, d_bias, d_whh, d_peep, dh0, dc0, None, None


def peephole_kernel_plain(
    xw: Tensor,
    w_hh: Tensor,
    peep: Tensor,
    h0: Tensor,
    c0: Tensor,
    batch_sizes: List[int],
    reverse: bool,
) -> Tuple[Tensor, Tensor, Tensor]:
    """PeepholeKernelFunction's forward step for step, left to autograd."""
    H = h0.shape[1]
    p_if, p_o = peep[: 2 * H].view(2, H), peep[2 * H :]
    w_t = w_hh.t()
    xs = xw.split(batch_sizes)
    hs: List[Tensor] = []
    h_done: List[Tensor] = []
    c_done: List[Tensor] = []
    h, c = h0[:0], c0[:0]
    for j in range(len(xs)):
        t = len(xs) - 1 - j if reverse else j
        size = batch_sizes[t]
        h_prev = kernel_state_rows(h, h0, size, h_done)
        c_prev = kernel_state_rows(c, c0, size, c_done)
        a = torch.addmm(xs[t], h_prev, w_t)  # (size, 4H)
        a_if = a[:, : 2 * H].view(size, 2, H).addcmul(c_prev.unsqueeze(1), p_if)
        i, f = a_if.sigmoid().view(size, 2 * H).chunk(2, 1)
        g = kernel_tanh(a[:, 2 * H : 3 * H])
        c = torch.addcmul(f * c_prev, i, g)
        o = a[:, 3 * H :].addcmul(c, p_o).sigmoid()
        h = kernel_tanh(c) * o
        hs.append(h)
    if reverse:
        hs.reverse()
    return torch.cat(hs), kernel_final_rows(h, h_done), kernel_final_rows(c, c_done)


def peephole_kernel_layer(
    x: Tensor,
    w_ih: Tensor,
    bias: Optional[Tensor],
    w_hh: Tensor,
    peep: Tensor,
    h0: Tensor,
    c0: Tensor,
    batch_sizes: List[int],
    reverse: bool,
) -> Tuple[Tensor, Tensor, Tensor]:
    """(N, H) outputs and (B, H) final h, c of one peephole layer-direction."""
    if torch.jit.is_scripting() or kernel_runs_plain(x):
        xw = kernel_project(x, w_ih, bias)
        return peephole_kernel_plain(xw, w_hh, peep, h0, c0, batch_sizes, reverse)
    out, h_n, c_n = PeepholeKernelFunction.apply(
        x, w_ih, bias, w_hh, peep, h0, c0, batch_sizes, reverse
    )
    return out, h_n, c_n


class PeepholeLSTM(CustomLSTM):
    """LSTM with peephole connections (after Gers & Schmidhuber), c = previous cell:

        i = σ(W_ii x + b_ii + W_hi h + b_hi + p_i ⊙ c)
        f = σ(W_if x + b_if + W_hf h + b_hf + p_f ⊙ c)
        g = tanh(W_ig x + b_ig + W_hg h + b_hg)
        c' = f ⊙ c + i ⊙ g
        o = σ(W_io x + b_io + W_ho h + b_ho + p_o ⊙ c')
        h' = o ⊙ tanh(c')

    torch's LSTM parameters plus `weight_ch_l{k}[_reverse]` (3H,) = [p_i, p_f, p_o],
    drawn U(-1/√H, 1/√H) after torch's own init. A plain nn.LSTM state dict loads
    (peepholes set to zero): it then computes exactly that LSTM. Always our kernel.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device=None,
        dtype=None,
        *,
        impl: str = "custom",
    ):
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            proj_size,
            device,
            dtype,
            impl=impl,
        )
        suffixes = ["", "_reverse"] if bidirectional else [""]
        names = [f"weight_ch_l{k}{s}" for k in range(num_layers) for s in suffixes]
        self._peephole_names = names
        bound = 1.0 / math.sqrt(hidden_size)
        for name in names:
            weight = nn.Parameter(
                torch.empty(3 * hidden_size, device=device, dtype=dtype)
            )
            nn.init.uniform_(weight, -bound, bound)
            setattr(self, name, weight)
        self._init_flat_weights()

    def _kernel_impls(self) -> Tuple[str, ...]:
        return ("custom", "auto")  # torch has no peephole LSTM

    def _init_flat_weights(self) -> None:
        # torch refreshes its weight list here (init, .to(), changed weights); keep
        # ours with it, as a plain list so that TorchScript sees List[Tensor]
        super()._init_flat_weights()
        names = getattr(self, "_peephole_names", [])
        self._flat_peepholes = [getattr(self, n) for n in names if hasattr(self, n)]

    def _weights_have_changed(self) -> bool:
        peepholes = zip(self._flat_peepholes, self._peephole_names, strict=True)
        replaced = any(p is not getattr(self, n) for p, n in peepholes)
        return replaced or super()._weights_have_changed()

    def _load_from_state_dict(
        self,
        state_dict,
        prefix,
        local_metadata,
        strict,
        missing_keys,
        unexpected_keys,
        error_msgs,
    ):
        # a plain LSTM's state dict has no peepholes: load it as p = 0
        super()._load_from_state_dict(
            state_dict,
            prefix,
            local_metadata,
            strict,
            missing_keys,
            unexpected_keys,
            error_msgs,
        )
        for name in self._peephole_names:
            if prefix + name in missing_keys:
                missing_keys.remove(prefix + name)
                with torch.no_grad():
                    getattr(self, name).zero_()

    def _kernel_defers_to_torch(self, input, lengths: Optional[Tensor]) -> bool:
        return False

    def _kernel_layer(
        self,
        x: Tensor,
        k: int,
        state: List[Tensor],
        batch_sizes: List[int],
        reverse: bool,
    ) -> Tuple[Tensor, List[Tensor]]:
        w_ih, w_hh, b_ih, b_hh = self._kernel_weights(k)
        bias = b_ih + b_hh if b_ih is not None and b_hh is not None else None
        peep = self._flat_peepholes[k]
        out, h_n, c_n = peephole_kernel_layer(
            x, w_ih, bias, w_hh, peep, state[0], state[1], batch_sizes, reverse
        )
        return out, [h_n, c_n]


# ---------------------------------------------------------------------------------
# GRU
# ---------------------------------------------------------------------------------


class GRUKernelFunction(torch.autograd.Function):
    """One direction of one GRU layer; gates r, z, n as torch.

    Forward projects every step's input into the gate buffer, which each step then
    completes in place. Backward: with a = W_hh h_{t-1} + b_hh, every gradient of a
    step is dh_t times a factor known from the forward (da = dh_t q_a), so a step
    costs two elementwise ops and one matmul; the input side follows for all steps.
    """

    @staticmethod
    def forward(ctx, x, w_ih, b_ih, w_hh, b_hh, h0, batch_sizes, reverse):
        H = h0.shape[1]
        gates = kernel_project(x, w_ih, b_ih)  # (N, 3H): input part, then r, z, n
        hws = torch.empty_like(gates)  # (N, 3H) W_hh h_{t-1} + b_hh
        hs = x.new_empty(gates.shape[0], H)  # (N, H) outputs
        gs, hws_, outs = (t.split(batch_sizes) for t in (gates, hws, hs))
        w_t = w_hh.t()
        done: List[Tensor] = []
        h = h0[:0]
        for t in kernel_order(len(gs), reverse):
            h_prev = kernel_state_rows(h, h0, batch_sizes[t], done)
            if b_hh is None:
                hw = torch.mm(h_prev, w_t, out=hws_[t])  # (size, 3H)
            else:
                hw = torch.addmm(b_hh, h_prev, w_t, out=hws_[t])
            a = gs[t]
            r, z = a[:, : 2 * H].add_(hw[:, : 2 * H]).sigmoid_().chunk(2, 1)
            n = a[:, 2 * H :].addcmul_(r, hw[:, 2 * H :])
            kernel_tanh(n, out=n)
            h = torch.addcmul(n, z, h_prev - n, out=outs[t])  # (1 - z) n + z h
        ctx.save_for_backward(x, w_ih, b_ih, w_hh, b_hh, h0, gates, hws, hs)
        ctx.plan = (batch_sizes, reverse)
        return hs, kernel_final_rows(h, done)

    @staticmethod
    def backward(ctx, d_hs, d_hn):
        x, w_ih, b_ih, w_hh, b_hh, h0, gates, hws, hs = ctx.saved_tensors
        batch_sizes, reverse = ctx.plan
        if torch.is_grad_enabled():  # create_graph=True: differentiate the plain steps

            def plain(x, w_ih, b_ih, w_hh, b_hh, h0):
                xw = kernel_project(x, w_ih, b_ih)
                return gru_kernel_plain(xw, w_hh, b_hh, h0, batch_sizes, reverse)

            inputs = [x, w_ih, b_ih, w_hh, b_hh, h0]
            grads = kernel_recompute_grads(
                plain, inputs, ctx.needs_input_grad, [d_hs, d_hn]
            )
            return (*grads, None, None)
        H = h0.shape[1]
        r, z, n = gates.chunk(3, 1)
        h_prev = kernel_prev_rows(hs, h0, batch_sizes, reverse)  # (N, H)
        q_n = (1 - z) * (1 - n * n)  # d pre-tanh n / dh_t
        da = torch.cat(  # da / dh_t; each step multiplies its rows by dh in place
            [q_n * hws[:, 2 * H :] * r * (1 - r), (h_prev - n) * z * (1 - z), q_n * r],
            1,
        )  # (N, 3H)
        dhs = torch.empty_like(hs)  # (N, H) total gradient of each h_t
        d_outs, das, dhs_, zs = (t.split(batch_sizes) for t in (d_hs, da, dhs, z))
        init_grads: List[Tensor] = []
        dh = d_hn[:0]  # gradient of the state the next-run step started from
        for t in kernel_order(len(das), not reverse):
            size = batch_sizes[t]
            dh = torch.add(
                kernel_state_rows_grad(dh, d_hn, size, init_grads),
                d_outs[t],
                out=dhs_[t],
            )
            das[t].view(size, 3, H).mul_(dh.unsqueeze(1))
            dh = torch.addmm(dh * zs[t], das[t], w_hh)  # (size, H)
        kernel_state_rows_grad(dh, d_hn, 0, init_grads)
        d_whh = da.t() @ h_prev  # (3H, H)
        d_bhh = da.sum(0) if ctx.needs_input_grad[4] else None
        torch.mul(dhs, q_n, out=da[:, 2 * H :])  # da is now the input side's gradient
        dx, d_wih, d_bih = kernel_input_grads(ctx, da, x, w_ih)
        dh0 = kernel_init_grad(init_grads)
        return dx, d_wih, d_bih, d_whh, d_bhh, dh0, None, None


def gru_kernel_plain(
    xw: Tensor,
    w_hh: Tensor,
    b_hh: Optional[Tensor],
    h0: Tensor,
    batch_sizes: List[int],
    reverse: bool,
) -> Tuple[Tensor, Tensor]:
    """GRUKernelFunction's forward step for step, left to autograd."""
    H = h0.shape[1]
    w_t = w_hh.t()
    xs = xw.split(batch_sizes)
    hs: List[Tensor] = []
    done: List[Tensor] = []
    h = h0[:0]
    for j in range(len(xs)):
        t = len(xs) - 1 - j if reverse else j
        h_prev = kernel_state_rows(h, h0, batch_sizes[t], done)
        if b_hh is None:
            hw = torch.mm(h_prev, w_t)  # (size, 3H)
        else:
            hw = torch.addmm(b_hh, h_prev, w_t)
        x = xs[t]
        r, z = torch.add(x[:, : 2 * H], hw[:, : 2 * H]).sigmoid().chunk(2, 1)
        n = kernel_tanh(torch.addcmul(x[:, 2 * H :], r, hw[:, 2 * H :]))
        h = torch.addcmul(n, z, h_prev - n)
        hs.append(h)
    if reverse:
        hs.reverse()
    return torch.cat(hs), kernel_final_rows(h, done)


def gru_kernel_layer(
    x: Tensor,
    w_ih: Tensor,
    b_ih: Optional[Tensor],
    w_hh: Tensor,
    b_hh: Optional[Tensor],
    h0: Tensor,
    batch_sizes: List[int],
    reverse: bool,
) -> Tuple[Tensor, Tensor]:
    """(N, H) outputs and (B, H) final state of one GRU layer-direction."""
    if torch.jit.is_scripting() or kernel_runs_plain(x):
        xw = kernel_project(x, w_ih, b_ih)
        return gru_kernel_plain(xw, w_hh, b_hh, h0, batch_sizes, reverse)
    out, h_n = GRUKernelFunction.apply(
        x, w_ih, b_ih, w_hh, b_hh, h0, batch_sizes, reverse
    )
    return out, h_n


class CustomGRU(KernelStackBase, nn.GRU):
    """`nn.GRU` with our kernel; gates as torch (x = input, h = previous state):

    r = σ(W_ir x + b_ir + W_hr h + b_hr)    z = σ(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
    h' = (1 - z) ⊙ n + z ⊙ h
    """

    impl: str

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device=None,
        dtype=None,
        *,
        impl: str = "custom",
    ):
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias=bias,
            batch_first=batch_first,
            dropout=dropout,
            bidirectional=bidirectional,
            device=device,
            dtype=dtype,
        )
        self.impl = kernel_check_impl(impl, ("custom", "auto", "torch"))

    def _kernel_layer(
        self,
        x: Tensor,
        k: int,
        state: List[Tensor],
        batch_sizes: List[int],
        reverse: bool,
    ) -> Tuple[Tensor, List[Tensor]]:
        w_ih, w_hh, b_ih, b_hh = self._kernel_weights(k)
        # b_hh stays inside r ⊙ (W_hn h + b_hn)
        out, h_n = gru_kernel_layer(
            x, w_ih, b_ih, w_hh, b_hh, state[0], batch_sizes, reverse
        )
        return out, [h_n]

    def forward(
        self,
        input: Tensor,
        hx: Optional[Tensor] = None,
        lengths: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Tensor]:
        return self._kernel_one_state_forward(input, hx, lengths)
