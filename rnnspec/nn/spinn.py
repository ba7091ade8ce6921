"""SPINN: a shift-reduce TreeLSTM encoder batched over examples (seed 004).

A sentence arrives as its tokens and a sequence of transitions, 0 = SHIFT,
1 = REDUCE, 2 = no-op padding. SHIFT moves the next token of the example's buffer
onto its stack; REDUCE pops the top two entries (right = top, left = second) and
pushes their TreeLSTM composition. After the last transition the stack holds one
entry: the root, whose (h, c) encodes the sentence.

The whole batch advances one transition per step: every REDUCE row of the step goes
through one reduce call, every row through one tracker call. All stacks share one
table of [h; c] rows addressed by per-example stack pointers (a "thin stack"); the
pointers and every index the step loop needs are computed up front from the
transitions (_SpinnSchedule), so the loop does no per-example Python work. Writes to
the table are in place and reads save only their indices, so autograd keeps one
table, not one per step.
"""

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _spinn_tree_lstm(
    gates: Tensor, c_left: Tensor, c_right: Tensor
) -> Tuple[Tensor, Tensor]:
    """Binary TreeLSTM composition of two children.

    With gates (R, 5H) split in order a, i, f1, f2, o:
        c = tanh(a) σ(i) + σ(f1) c_left + σ(f2) c_right
        h = σ(o) tanh(c)
    """
    hid = c_left.shape[-1]
    a = torch.tanh(gates[..., :hid])
    i, f1, f2, o = torch.sigmoid(gates[..., hid:]).chunk(4, dim=-1)
    c = a * i + f1 * c_left + f2 * c_right
    h = o * torch.tanh(c)
    return h, c


class TreeLSTMReduce(nn.Module):
    """SPINN's reduce: a TreeLSTM over (left, right), optionally fed by a tracker.

        gates = W_l h_left + b + W_r h_right [+ W_t h_tracker]      (R, 5H)
        (h, c) = TreeLSTM(gates, c_left, c_right)

    Submodules: `left` (H→5H, with bias), `right` (H→5H, no bias) and, with a
    tracker, `track` (tracker→5H, no bias).
    """

    def __init__(self, hidden_size: int, tracker_size: int = 0):
        super().__init__()
        self.left = nn.Linear(hidden_size, 5 * hidden_size)
        self.right = nn.Linear(hidden_size, 5 * hidden_size, bias=False)
        self.track: Optional[nn.Linear] = None
        if tracker_size > 0:
            self.track = nn.Linear(tracker_size, 5 * hidden_size, bias=False)

    def forward(
        self,
        left: Tuple[Tensor, Tensor],
        right: Tuple[Tensor, Tensor],
        tracking: Optional[Tensor] = None,
    ) -> Tuple[Tensor, Tensor]:
        """(h, c) pairs of shape (R, H) each, tracking (R, T) → parent (h, c)."""
        gates = self.left(left[0]) + self.right(right[0])  # (R, 5H)
        if self.track is not None and tracking is not None:
            gates = gates + self.track(tracking)
        return _spinn_tree_lstm(gates, left[1], right[1])

    def stacked(self) -> Tuple[Tensor, Tensor]:
        """One weight for the three linears: gates = [h_l; h_r; t] W^T + b.

        Returns W = [W_l, W_r, W_t] (5H, 2H [+ T]) and b, so a batched caller can
        build W once per forward and run one matmul per step.
        """
        weights = [self.left.weight, self.right.weight]
        if self.track is not None:
            weights.append(self.track.weight)
        return torch.cat(weights, 1), self.left.bias


def _spinn_check_transitions(transitions: Tensor, num_tokens: int) -> Tensor:
    """Validate a (B, S) batch of transitions; return each example's SHIFT count.

    An example is valid when its codes are in 0..2, no REDUCE finds fewer than two
    entries on the stack, exactly one entry remains at the end, and its tokens row
    has at least as many columns as the example has SHIFTs. Raises ValueError
    naming the first offending example.
    """
    bad = (transitions < 0) | (transitions > 2)
    if bool(bad.any()):
        b = int(bad.any(1).nonzero()[0])
        t = int(bad[b].nonzero()[0])
        raise ValueError(
            f"example {b}: transition code {int(transitions[b, t])} at step {t} "
            "is not 0 (SHIFT), 1 (REDUCE) or 2 (padding)"
        )
    shift = (transitions == 0).long()
    reduce = (transitions == 1).long()
    size_before = (shift - reduce).cumsum(1) - shift + reduce  # stack size, (B, S)
    underflow = (reduce == 1) & (size_before < 2)
    if bool(underflow.any()):
        b = int(underflow.any(1).nonzero()[0])
        t = int(underflow[b].nonzero()[0])
        size = int(size_before[b, t])
        raise ValueError(
            f"example {b}: REDUCE at step {t} with {size} "
            f"entr{'y' if size == 1 else 'ies'} on the stack (needs 2)"
        )
    final = (shift - reduce).sum(1)  # (B,)
    if bool((final != 1).any()):
        b = int((final != 1).nonzero()[0])
        raise ValueError(
            f"example {b}: {int(final[b])} entries left on the stack after the "
            "last transition (expected exactly 1)"
        )
    n_shifts = shift.sum(1)  # (B,)
    if bool((n_shifts > num_tokens).any()):
        b = int((n_shifts > num_tokens).nonzero()[0])
        raise ValueError(
            f"example {b}: {int(n_shifts[b])} SHIFTs but the tokens have only "
            f"{num_tokens} columns"
        )
    return n_shifts


def _spinn_check_batch(
    name: str, x: Tensor, shape: str, dtypes: Tuple[torch.dtype, ...]
) -> None:
    """Raise "Expected X, got Y" unless x has the rank of `shape` and a listed dtype."""
    if x.dim() != shape.count(",") + 1 or x.dtype not in dtypes:
        names = " or ".join(str(d) for d in dtypes)
        raise ValueError(
            f"Expected {name} of shape {shape} with dtype {names}, "
            f"got shape {tuple(x.shape)} with dtype {x.dtype}"
        )


def _spinn_check_tokens(tokens: Tensor, transitions: Tensor, vocab_size: int) -> Tensor:
    """Validate token ids and transitions; return the (B, N) mask of tokens read."""
    _spinn_check_batch("tokens", tokens, "(B, N)", (torch.int64,))
    _spinn_check_batch("transitions", transitions, "(B, S)", (torch.int64,))
    if tokens.shape[0] != transitions.shape[0]:
        raise ValueError(
            f"Expected transitions for {tokens.shape[0]} examples, "
            f"got {transitions.shape[0]}"
        )
    n_shifts = _spinn_check_transitions(transitions, tokens.shape[1])
    used = torch.arange(tokens.shape[1], device=tokens.device) < n_shifts[:, None]
    bad = used & ((tokens < 0) | (tokens >= vocab_size))
    if bool(bad.any()):
        b = int(bad.any(1).nonzero()[0])
        t = int(bad[b].nonzero()[0])
        raise ValueError(
            f"example {b}: expected token ids in [0, {vocab_size}), "
            f"got {int(tokens[b, t])} at position {t}"
        )
    return used


def _spinn_schedule(transitions: Tensor, n_shifts: Tensor) -> Tuple:
    """Index tensors of a batch's shift-reduce run, computed up front.

    Stacks live in one (B*D, 2H) table: slot k of example b is row b*D + k. Slots
    0 and 1 stay zero, so reading below the bottom of a stack gives zeros; with
    `size` entries on the stack, s2 sits at slot `size` and s1 at `size + 1`. SHIFT
    writes slot size + 2, REDUCE overwrites slot `size` (where s2 was), a padding
    step writes the spare slot D - 1, which is never read.

    Returns (buffer, depth, read, write, reduce_rows, reduce_read, active,
    all_active); all but the first two are per-step lists:
        buffer          (S*B,) rows of the (B*(N+1), 2H) leaf table, step-major;
                        row b*(N+1) + N holds the empty buffer's zeros
        depth           D, slots per example
        read[t]         (2B,) table rows of [s2, s1] for every example
        write[t]        (B,) the table row each example writes
        reduce_rows[t]  (R,) the examples that REDUCE
        reduce_read[t]  (2R,) table rows of their [s2, s1]
        active[t]       (B, 1) bool, not padding; all_active[t] a Python bool
    """
    batch, steps = transitions.shape
    num_tokens = int(n_shifts.max())
    shift = (transitions == 0).long()
    reduce = (transitions == 1).long()
    active = transitions != 2
    size = (shift - reduce).cumsum(1) - shift + reduce  # before each step, (B, S)
    rows = torch.arange(batch, device=transitions.device)[:, None]  # (B, 1)

    buf_pos = shift.cumsum(1) - shift  # tokens shifted so far
    buf_pos = torch.where(buf_pos < n_shifts[:, None], buf_pos, num_tokens)
    buffer = (rows * (num_tokens + 1) + buf_pos).t().reshape(-1)

    depth = 3 + int((size + shift).max())
    read = torch.stack([size, size + 1], -1) + rows[..., None] * depth  # (B, S, 2)
    write = torch.where(transitions == 0, size + 2, size)
    write = torch.where(active, write, depth - 1) + rows * depth  # (B, S)

    counts = reduce.sum(0).tolist()
    step_row = reduce.t().nonzero()  # (R_total, 2) as [t, b], grouped by step
    reduce_read = read[step_row[:, 1], step_row[:, 0]].reshape(-1)  # (2 R_total,)
    return (
        buffer,
        depth,
        read.transpose(0, 1).reshape(steps, 2 * batch).unbind(0),
        write.t().unbind(0),
        step_row[:, 1].split(counts),
        reduce_read.split([2 * n for n in counts]),
        active.t()[..., None].unbind(0),
        active.all(0).tolist(),
    )


class _spinn_table_read(torch.autograd.Function):
    """rows = table[index] from the shared stack table `store` = [table, grad].

    The table is written in place between reads, so autograd cannot track it;
    instead reads and writes pass a `token` (an empty tensor, one per table
    version) that orders their backward passes: a read adds its gradient into
    store[1], the write that produced those rows takes it out (table_write). Each
    step thus costs O(rows touched) forward and backward, not O(table).
    """

    @staticmethod
    def forward(ctx, token: Tensor, index: Tensor, store: List) -> Tensor:
        ctx.save_for_backward(index)
        ctx.store = store
        return store[0].index_select(0, index)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (index,) = ctx.saved_tensors
        if ctx.store[1] is None:
            ctx.store[1] = torch.zeros_like(ctx.store[0])
        ctx.store[1].index_add_(0, index, grad)
        return grad.new_zeros(0), None, None


class _spinn_table_write(torch.autograd.Function):
    """table[index] = values in place; returns the token of the new table version.

    Backward hands the written rows the gradient that later reads left in
    store[1] and clears it there: the rows' earlier contents never reach a read
    after this write.
    """

    @staticmethod
    def forward(ctx, token: Tensor, values: Tensor, index: Tensor, store: List):
        ctx.save_for_backward(index)
        ctx.store = store
        store[0].index_copy_(0, index, values)
        return token.new_empty(0)

    @staticmethod
    def backward(ctx, grad_token: Tensor):
        (index,) = ctx.saved_tensors
        grad = ctx.store[1]
        if grad is None:  # nothing read since
            return grad_token, None, None, None
        values_grad = None
        if ctx.needs_input_grad[1]:
            values_grad = grad.index_select(0, index)
        grad.index_fill_(0, index, 0)  # always: older contents end here
        return grad_token, values_grad, None, None


class SPINN(nn.Module):
    """Shift-reduce encoder: TreeLSTM reduce, optional LSTM-cell tracker.

    Leaves: [h; c] = projection(x_j), a linear map E→2H of each token's input.
    At each step, with s1 the stack top, s2 the entry below and b1 the buffer top
    (zeros when empty), every non-padding row first updates its tracker
        (t_h, t_c) = LSTMCell([b1.h; s1.h; s2.h], (t_h, t_c))
    then SHIFT pushes b1, REDUCE pops s1, s2 and pushes reduce(s2, s1, t_h); a
    padding row (code 2) changes neither its stack nor its tracker.

    Submodules: `projection` (E→2H), `reduce` (TreeLSTMReduce), `tracker`
    (nn.LSTMCell(3H, tracker_size), only when tracker_size > 0).
    """

    def __init__(self, input_size: int, hidden_size: int, tracker_size: int = 0):
        super().__init__()
        self.hidden_size = hidden_size
        self.tracker_size = tracker_size
        self.projection = nn.Linear(input_size, 2 * hidden_size)
        self.reduce = TreeLSTMReduce(hidden_size, tracker_size)
        self.tracker: Optional[nn.LSTMCell] = None
        if tracker_size > 0:
            self.tracker = nn.LSTMCell(3 * hidden_size, tracker_size)

    def forward(self, x: Tensor, transitions: Tensor) -> Tuple[Tensor, Tensor]:
        """x (B, N, E) token inputs, transitions (B, S) int64 → root (h, c), (B, H).

        Example b's buffer is x[b, :n_b], n_b = its number of SHIFTs; columns past
        n_b are never read.
        """
        floats = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
        size = self.projection.in_features
        _spinn_check_batch("x", x, f"(B, N, {size})", floats)
        if x.shape[2] != size:
            raise ValueError(
                f"Expected x of shape (B, N, {size}), got shape {tuple(x.shape)}"
            )
        _spinn_check_batch("transitions", transitions, "(B, S)", (torch.int64,))
        if x.shape[0] != transitions.shape[0]:
            raise ValueError(
                f"Expected transitions for {x.shape[0]} examples, "
                f"got {transitions.shape[0]}"
            )
        if x.shape[0] == 0:
            raise ValueError("Expected at least one example, got an empty batch")
        n_shifts = _spinn_check_transitions(transitions, x.shape[1])
        batch, hid = x.shape[0], self.hidden_size

        # Drop padding columns no example needs.
        steps = int(transitions.ne(2).any(0).nonzero().max()) + 1
        transitions = transitions[:, :steps]  # (B, S)
        num_tokens = int(n_shifts.max())
        x = x[:, :num_tokens]  # (B, N, E)

        buffer, depth, read, write, reduce_rows, reduce_read, active, all_active = (
            _spinn_schedule(transitions, n_shifts)
        )

        # Leaves [h; c] and, in one gather, the buffer top b1 of every step.
        leaves = self.projection(x)  # (B, N, 2H)
        leaves = torch.cat([leaves, leaves.new_zeros(batch, 1, 2 * hid)], 1)
        buffer_tops = leaves.reshape(-1, 2 * hid).index_select(0, buffer)
        buffer_tops = buffer_tops.view(steps, batch, 2 * hid).unbind(0)

        # Each module's weights are stacked once, so a step costs one matmul each.
        reduce_w, reduce_b = self.reduce.stacked()  # (5H, 2H [+ T]), (5H,)
        store = [x.new_zeros(batch * depth, 2 * hid), None]  # [table, its grad]
        token = x.new_zeros(0)  # needs grad once a written value does
        track_h: Optional[Tensor] = None
        track_c: Optional[Tensor] = None
        if self.tracker is not None:
            track_w = torch.cat([self.tracker.weight_ih, self.tracker.weight_hh], 1)
            track_b = self.tracker.bias_ih + self.tracker.bias_hh  # (4T,)
            track_h = x.new_zeros(batch, self.tracker_size)
            track_c = x.new_zeros(batch, self.tracker_size)
        for t in range(steps):
            new = buffer_tops[t]  # (B, 2H): what a SHIFT pushes
            if self.tracker is not None:
                tops = _spinn_table_read.apply(token, read[t], store)
                tops = tops.view(batch, 2, 2 * hid)
                track_in = torch.cat(
                    [new[:, :hid], tops[:, 1, :hid], tops[:, 0, :hid], track_h], 1
                )  # [b1.h; s1.h; s2.h; t_h], (B, 3H + T)
                gates = torch.addmm(track_b, track_in, track_w.t())  # (B, 4T)
                h_new, c_new = _spinn_lstm_cell(gates, track_c)
                if all_active[t]:
                    track_h, track_c = h_new, c_new
                else:  # padding rows keep their state
                    track_h = torch.where(active[t], h_new, track_h)
                    track_c = torch.where(active[t], c_new, track_c)
            r = reduce_rows[t]  # (R,)
            if r.numel() > 0:
                pair = _spinn_table_read.apply(token, reduce_read[t], store)
                left, right = pair.view(-1, 2, 2 * hid).unbind(1)  # (R, 2H) each
                reduce_in = [left[:, :hid], right[:, :hid]]
                if track_h is not None:
                    reduce_in.append(track_h.index_select(0, r))
                gates = torch.addmm(reduce_b, torch.cat(reduce_in, 1), reduce_w.t())
                h, c = _spinn_tree_lstm(gates, left[:, hid:], right[:, hid:])
                new = new.index_copy(0, r, torch.cat([h, c], 1))
            token = _spinn_table_write.apply(token, new, write[t], store)
        root_rows = torch.arange(batch, device=x.device) * depth + 2
        root = _spinn_table_read.apply(token, root_rows, store)  # the one entry left
        return root[:, :hid], root[:, hid:]


def _spinn_lstm_cell(gates: Tensor, c: Tensor) -> Tuple[Tensor, Tensor]:
    """LSTM cell update from pre-activations (B, 4T) in torch's order i, f, g, o:
    c' = σ(f) c + σ(i) tanh(g), h' = σ(o) tanh(c')."""
    size = c.shape[-1]
    i, f, _, o = torch.sigmoid(gates).chunk(4, dim=-1)
    c = f * c + i * torch.tanh(gates[..., 2 * size : 3 * size])
    return o * torch.tanh(c), c


def _spinn_pad_cat(a: Tensor, b: Tensor, fill: int) -> Tensor:
    """Right-pad two (B, L) int tensors to a common width with `fill`, stack rows."""
    width = max(a.shape[1], b.shape[1])
    a = F.pad(a, (0, width - a.shape[1]), value=fill)
    b = F.pad(b, (0, width - b.shape[1]), value=fill)
    return torch.cat([a, b], 0)


class SpinnModel(nn.Module):
    """A SPINN sentence encoder over token ids, with an optional classifier head.

    Submodules: `embedding` (nn.Embedding), `encoder` (SPINN), `head` (only with
    head="classes").

    `forward(tokens, transitions)` takes tokens (B, N) int64 and transitions
    (B, S) int64, both right-padded (0 SHIFT, 1 REDUCE, 2 padding), and returns
    `(output, (h, c))`: output is the root's h (B, H) with head="none", the head's
    logits (B, head_size) with head="classes"; (h, c) is the root's state.

    head="classes" is an MLP: dropout(head_dropout), then `mlp_layers` (default 1)
    hidden layers Linear → ReLU → Dropout(head_dropout) of width `mlp_hidden`
    (0, the default, means hidden_size), then Linear to head_size. With
    pair=True, `forward(tokens_a, transitions_a, tokens_b, transitions_b)`
    encodes both sides with the one encoder and feeds [p; q; p − q; p ⊙ q]
    (4H) to the MLP; it returns `(logits, ((h_a, c_a), (h_b, c_b)))`. The head is
    an nn.Sequential, so hidden layer k is `head.{3k+1}` and the output layer
    `head.{3K+1}` for K = mlp_layers. `input_dropout` applies to the embeddings.
    """

    def __init__(
        self,
        vocab_size: int,
        embed_size: int,
        hidden_size: int,
        tracker_size: int = 0,
        padding_idx: Optional[int] = None,
        input_dropout: float = 0.0,
        head: str = "none",
        head_size: int = 0,
        head_dropout: float = 0.0,
        pair: bool = False,
        mlp_layers: int = 1,
        mlp_hidden: int = 0,
    ):
        super().__init__()
        for name, value in [
            ("vocab_size", vocab_size),
            ("embed_size", embed_size),
            ("hidden_size", hidden_size),
        ]:
            if value < 1:
                raise ValueError(f"Expected {name} >= 1, got {value}")
        for name, value in [
            ("tracker_size", tracker_size),
            ("mlp_layers", mlp_layers),
            ("mlp_hidden", mlp_hidden),
        ]:
            if value < 0:
                raise ValueError(f"Expected {name} >= 0, got {value}")
        for name, p in [
            ("input_dropout", input_dropout),
            ("head_dropout", head_dropout),
        ]:
            if not 0.0 <= p < 1.0:
                raise ValueError(f"Expected {name} in [0, 1), got {p}")
        if padding_idx is not None and not 0 <= padding_idx < vocab_size:
            raise ValueError(
                f"Expected padding_idx in [0, {vocab_size}), got {padding_idx}"
            )
        if head not in ("none", "classes"):
            raise ValueError(f"Expected head 'none' or 'classes', got {head!r}")
        if head == "classes" and head_size < 1:
            raise ValueError(f"Expected head_size >= 1 for classes, got {head_size}")
        if pair and head != "classes":
            raise ValueError("Expected head='classes' with pair=True, got 'none'")
        self.vocab_size = vocab_size
        self.input_dropout = input_dropout
        self.pair = pair
        self.embedding = nn.Embedding(vocab_size, embed_size, padding_idx=padding_idx)
        self.encoder = SPINN(embed_size, hidden_size, tracker_size)
        self.head: Optional[nn.Sequential] = None
        if head == "classes":
            width = 4 * hidden_size if pair else hidden_size
            layers: List[nn.Module] = [nn.Dropout(head_dropout)]
            for _ in range(mlp_layers):
                hidden = mlp_hidden or hidden_size
                layers += [
                    nn.Linear(width, hidden),
                    nn.ReLU(),
                    nn.Dropout(head_dropout),
                ]
                width = hidden
            layers.append(nn.Linear(width, head_size))
            self.head = nn.Sequential(*layers)

    def encode(self, tokens: Tensor, transitions: Tensor) -> Tuple[Tensor, Tensor]:
        """tokens (B, N), transitions (B, S) → root (h, c), each (B, H)."""
        used = _spinn_check_tokens(tokens, transitions, self.vocab_size)
        x = self.embedding(torch.where(used, tokens, 0))  # (B, N, E)
        x = F.dropout(x, self.input_dropout, self.training)
        return self.encoder(x, transitions)

    def forward(
        self,
        tokens: Tensor,
        transitions: Tensor,
        tokens_b: Optional[Tensor] = None,
        transitions_b: Optional[Tensor] = None,
    ):
        if not self.pair:
            if tokens_b is not None or transitions_b is not None:
                raise ValueError("Expected 2 inputs for a model without pair=true")
            h, c = self.encode(tokens, transitions)
            out = h if self.head is None else self.head(h)
            return out, (h, c)
        if tokens_b is None or transitions_b is None or self.head is None:
            raise ValueError(
                "Expected 4 inputs (tokens_a, transitions_a, tokens_b, "
                "transitions_b) for a pair model"
            )
        # Each side is checked on its own, so that errors name the right example;
        # then both run as one batch through the shared encoder.
        for side, tok, trans in [
            ("a", tokens, transitions),
            ("b", tokens_b, transitions_b),
        ]:
            try:
                _spinn_check_tokens(tok, trans, self.vocab_size)
            except ValueError as err:
                raise ValueError(f"input {side}: {err}") from None
        if tokens.shape[0] != tokens_b.shape[0]:
            raise ValueError(
                f"Expected {tokens.shape[0]} examples in input b, "
                f"got {tokens_b.shape[0]}"
            )
        batch = tokens.shape[0]
        h, c = self.encode(
            _spinn_pad_cat(tokens, tokens_b, 0),
            _spinn_pad_cat(transitions, transitions_b, 2),
        )  # (2B, H) each
        p, q = h[:batch], h[batch:]
        features = torch.cat([p, q, p - q, p * q], 1)  # (B, 4H)
        return self.head(features), ((p, c[:batch]), (q, c[batch:]))

    def step(self, *args, **kwargs):
        """No streaming: SPINN reduces a whole tree at once (RecurrentModel.step)."""
        raise ValueError(
            "Expected a recurrent model with an output per step for step, got SPINN "
            "(it encodes a whole tree at once)"
        )
