from typing import List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .packing import packed_torch_forward
from .step import step_cells


class RecurrentModel(nn.Module):
    """A recurrent sequence model: embedding → recurrent stack → attention → head.

    `forward(x, lengths=None, state=None) -> (output, state)`:
      x        (B, T, N) floats for features, (B, T) int64 for tokens
               ((T, B, ...) when batch_first is False)
      lengths  B ints in 1..T (packing models only); steps past a sequence's length
               do not touch its state and their output rows are zero
      state    torch's layout: h0 (L*D, B, H), or (h0, c0) for an LSTM; None = zeros
      output   (B, T, F) per step, or (B, F) with a pooling (`classes`) head
    The returned state is in torch's layout and holds each sequence's last valid step.
    `step(x, state=None)` runs one step at a time (streaming, sampling; eval mode).
    """

    # Fixed per model, so torch.jit.script compiles only the branches it takes.
    __constants__ = ["torch_kernel", "is_lstm"]

    def __init__(
        self,
        embedding: Optional[nn.Embedding],
        rnn: nn.Module,
        attention: Optional[nn.Module],
        head: Optional[nn.Linear],
        input_dropout: float = 0.0,
        head_dropout: float = 0.0,
        pool: Optional[str] = None,
        tie: bool = False,
        packing: bool = False,
        batch_first: bool = True,
    ) -> None:
        super().__init__()
        if not rnn.batch_first:
            raise ValueError(
                "Expected rnn with batch_first=True (RecurrentModel runs batch-first "
                "inside), got batch_first=False"
            )
        self.embedding = embedding
        self.rnn = rnn
        self.attention = attention
        self.head = head
        if tie and head is not None and embedding is not None:
            head.weight = embedding.weight  # weight tying (Press & Wolf, 2017)
        self.input_dropout = input_dropout
        self.head_dropout = head_dropout
        self.pool = pool
        self.packing = packing
        self.batch_first = batch_first
        # torch's own module: packing goes through pack_padded_sequence here;
        # rnnspec's kernels take `lengths` themselves.
        self.torch_kernel = type(rnn) in (nn.RNN, nn.LSTM, nn.GRU)
        self.is_lstm = isinstance(rnn, nn.LSTM)
        self.num_directions = 2 if rnn.bidirectional else 1
        self.num_states = rnn.num_layers * self.num_directions
        # h is as wide as the outputs (proj_size for a projected LSTM), c as hidden
        self.h_width = getattr(rnn, "proj_size", 0) or rnn.hidden_size

    def forward(
        self,
        x: Tensor,
        lengths: Optional[Union[Tensor, List[int]]] = None,
        state: Optional[Union[Tensor, Tuple[Tensor, Tensor]]] = None,
    ):
        x = self._check_input(x)
        if not self.batch_first:
            x = x.transpose(0, 1)  # (B, T, ...) inside
        batch, steps = x.shape[0], x.shape[1]
        lens = self._check_lengths(lengths, batch, steps)
        state = self._check_state(state, batch)

        if self.embedding is not None:
            x = F.dropout(self.embedding(x), self.input_dropout, self.training)
        out, state = self._recurrent(x, state, lens)  # (B, T, D*H)
        if self.attention is not None:
            out = self.attention(out, lens)  # (B, T, D*H) or (B, T, 2*D*H)

        if self.pool is not None:
            out = self._pool(out, state, lens)  # (B, F)
        if self.head is not None:
            out = self.head(F.dropout(out, self.head_dropout, self.training))
            if self.pool is None and lens is not None:
                valid = _valid_steps(lens, steps, out.device)  # (B, T)
                out = out.masked_fill(~valid.unsqueeze(-1), 0.0)
        if self.pool is None and not self.batch_first:
            out = out.transpose(0, 1)
        return out, state

    def step(self, x: Tensor, state=None):
        """One step, for sampling and streaming: `(output, state)`; eval mode only.

          x       (B,) int64 tokens, or (B, N) floats for features
          state   None to start (zeros, or the learned initial state), then what the
                  previous step returned: h (L, B, H), or (h, c) for an LSTM, in
                  torch's layout as forward's; with attention the pair
                  (that, memory), memory holding the t steps so far (its form:
                  `rnnspec.nn.attention.step_attention`)
          output  (B, F): forward's output at that step
        Steps over x_1..x_T give forward's outputs on the whole sequence and its
        final state, at the cost of the cell math alone. Not for pooled (`classes`)
        heads, two directions (the second one starts at the end) or training mode
        (the regularizers draw their masks per sequence).
        """
        self._check_can_step()
        x = self._check_step_input(x)
        rnn, attention, head = self.rnn, self.attention, self.head
        memory: Optional[Tensor] = None
        if attention is not None and state is not None:
            pair = isinstance(state, tuple) and len(state) == 2
            if not pair or (self.is_lstm and not isinstance(state[0], tuple)):
                layout = "((h, c), memory)" if self.is_lstm else "(h, memory)"
                raise ValueError(
                    f"Expected the state of an attention model as {layout}, got "
                    f"{_described(state)}"
                )
            state, memory = state
        hx = self._check_state(state, x.shape[0])
        if self.embedding is not None:
            x = self.embedding(x)  # (B, E); its dropouts are the identity in eval
        states = None if hx is None else list(hx) if isinstance(hx, tuple) else [hx]
        if not self.torch_kernel:  # one of ours: its options, its own cell
            out, states = rnn._kernel_step(x, states)  # (B, W)
        else:
            if states is None:
                widths = [self.h_width, rnn.hidden_size][: 1 + self.is_lstm]
                states = [x.new_zeros(self.num_states, x.shape[0], w) for w in widths]
            out, states = step_cells(rnn, x, states)  # (B, W)
        new_state = (states[0], states[1]) if self.is_lstm else states[0]
        if attention is not None:
            out, memory = attention.step(out, memory)  # (B, F)
            new_state = (new_state, memory)
        if head is not None:
            out = head(out)
        return out, new_state

    def _recurrent(
        self,
        x: Tensor,
        state: Optional[Union[Tensor, Tuple[Tensor, Tensor]]],
        lengths: Optional[Tensor],
    ) -> Tuple[Tensor, Union[Tensor, Tuple[Tensor, Tensor]]]:
        """The recurrent stack: torch's module (packed here) or rnnspec's kernel.

        torch.jit.script types the state per cell and takes no module argument, so
        there the state is narrowed and `packed_torch_forward` inlined.
        """
        if not torch.jit.is_scripting():
            if self.torch_kernel:
                return packed_torch_forward(self.rnn, x, state, lengths)
            return self.rnn(x, state, lengths)
        steps = x.shape[1]
        if self.is_lstm:
            hx: Optional[Tuple[Tensor, Tensor]] = None
            if isinstance(state, tuple):
                hx = state
            if not self.torch_kernel:
                return self.rnn(x, hx, lengths)
            if lengths is None or x.shape[0] == 0:  # torch cannot pack B = 0
                return self.rnn(x, hx)
            out, hx_n = self.rnn(_pack(x, lengths), hx)
            return _unpack(out, steps), hx_n
        h0: Optional[Tensor] = None
        if isinstance(state, Tensor):
            h0 = state
        if not self.torch_kernel:
            return self.rnn(x, h0, lengths)
        if lengths is None or x.shape[0] == 0:
            return self.rnn(x, h0)
        out, h_n = self.rnn(_pack(x, lengths), h0)
        return _unpack(out, steps), h_n

    def _pool(
        self,
        out: Tensor,
        state: Union[Tensor, Tuple[Tensor, Tensor]],
        lengths: Optional[Tensor],
    ) -> Tensor:
        """(B, T, F) → (B, F) over each sequence's valid steps."""
        batch, steps = out.shape[0], out.shape[1]
        if self.pool == "last" and self.attention is None:
            # The top layer's final states, directions concatenated as in h_n.
            h_n = state if isinstance(state, Tensor) else state[0]
            top = h_n[-self.num_directions :]  # (D, B, H)
            return top.transpose(0, 1).flatten(1)  # (B, D*H), also for B = 0
        if lengths is None:
            lengths = torch.full((batch,), steps, dtype=torch.long)
        lengths = lengths.to(out.device)
        if self.pool == "last":
            return out[torch.arange(batch, device=out.device), lengths - 1]
        valid = _valid_steps(lengths, steps, out.device).unsqueeze(-1)  # (B, T, 1)
        if self.pool == "mean":
            total = out.masked_fill(~valid, 0.0).sum(1)
            return total / lengths.unsqueeze(1).to(out.dtype)
        return out.masked_fill(~valid, float("-inf")).amax(1)

    # -- argument checks: "Expected X, got Y" ---------------------------------------

    def _check_input(self, x: Tensor) -> Tensor:
        layout = "(B, T" if self.batch_first else "(T, B"
        if self.embedding is not None:
            if x.dim() != 2 or x.dtype != torch.long:
                raise ValueError(
                    f"Expected int64 token ids of shape {layout}), got "
                    f"{x.dtype} tensor of shape {_shape(x.shape)}"
                )
            return x
        size = self.rnn.input_size
        if x.dim() != 3 or x.shape[-1] != size or not x.is_floating_point():
            raise ValueError(
                f"Expected float features of shape {layout}, {size}), got "
                f"{x.dtype} tensor of shape {_shape(x.shape)}"
            )
        return x

    def _check_can_step(self) -> None:
        if self.training:
            raise ValueError(
                "Expected a model in eval mode for step (call model.eval(): in "
                "training the dropouts draw their masks per sequence), got training"
            )
        if self.pool is not None:
            raise ValueError(
                "Expected a model with an output per step for step (no head, linear "
                f"or logits), got a classes head (pool={self.pool})"
            )
        if self.num_directions != 1:
            raise ValueError(
                "Expected directions 1 for step (the second direction starts at the "
                "end of the sequence), got 2"
            )

    def _check_step_input(self, x: Tensor) -> Tensor:
        if self.embedding is not None:
            if not isinstance(x, Tensor) or x.dim() != 1 or x.dtype != torch.long:
                raise ValueError(
                    f"Expected int64 token ids of shape (B,), got {_described(x)}"
                )
            return x
        size = self.rnn.input_size
        if (
            not isinstance(x, Tensor)
            or x.dim() != 2
            or x.shape[1] != size
            or not x.is_floating_point()
        ):
            raise ValueError(
                f"Expected float features of shape (B, {size}), got {_described(x)}"
            )
        return x

    def _check_lengths(
        self, lengths: Optional[Union[Tensor, List[int]]], batch: int, steps: int
    ) -> Optional[Tensor]:
        if lengths is None:
            return None
        if not self.packing:
            raise ValueError(
                "Expected no lengths: this model was compiled without `packing true`"
            )
        lens = lengths if isinstance(lengths, Tensor) else torch.as_tensor(lengths)
        if lens.is_floating_point() or lens.dtype == torch.bool:
            raise ValueError(f"Expected integer lengths, got {lens.dtype}")
        lens = lens.to("cpu", torch.long)
        if lens.dim() != 1 or lens.shape[0] != batch:
            raise ValueError(
                f"Expected lengths of shape ({batch},), got {_shape(lens.shape)}"
            )
        if bool((lens < 1).any()) or bool((lens > steps).any()):
            values: List[int] = lens.tolist()
            raise ValueError(f"Expected lengths in 1..{steps}, got {values}")
        return lens

    def _check_state(
        self, state: Optional[Union[Tensor, Tuple[Tensor, Tensor]]], batch: int
    ) -> Optional[Union[Tensor, Tuple[Tensor, Tensor]]]:
        if state is None:
            return None
        shape = [self.num_states, batch, self.h_width]
        if self.is_lstm:
            got = _type_name(state)  # before narrowing: a loadable TorchScript
            if isinstance(state, (tuple, list)):
                if len(state) == 2:
                    _check_shape("h0", state[0], shape)
                    _check_shape("c0", state[1], shape[:2] + [self.rnn.hidden_size])
                    return (state[0], state[1])
            raise ValueError(
                f"Expected state (h0, c0) of shapes {_shape(shape)} for an LSTM, "
                f"got {got}"
            )
        if not isinstance(state, Tensor):
            raise ValueError(
                f"Expected h0 of shape {_shape(shape)}, got {_type_name(state)}"
            )
        _check_shape("h0", state, shape)
        return state


def _valid_steps(lengths: Tensor, steps: int, device: torch.device) -> Tensor:
    """(B, T) bool: True where step t < the sequence's length."""
    positions = torch.arange(steps, device=device)
    return positions.unsqueeze(0) < lengths.to(device).unsqueeze(1)


def _shape(shape: List[int]) -> str:
    """'(2, 3)': a shape written as a tuple (as torch.jit.script can write it)."""
    if len(shape) == 1:
        return f"({shape[0]},)"
    return "(" + ", ".join([str(n) for n in shape]) + ")"


def _check_shape(name: str, value: Tensor, shape: List[int]) -> None:
    if not isinstance(value, Tensor):
        raise ValueError(
            f"Expected {name} of shape {_shape(shape)}, got {_type_name(value)}"
        )
    if list(value.shape) != shape:
        raise ValueError(
            f"Expected {name} of shape {_shape(shape)}, got {_shape(value.shape)}"
        )


def _described(value: object) -> str:
    """'torch.float32 tensor of shape (2, 3)'; '(Tensor, tuple)' for a tuple; else
    the type of what is not a tensor."""
    if isinstance(value, Tensor):
        return f"{value.dtype} tensor of shape {_shape(value.shape)}"
    if isinstance(value, tuple):
        return "(" + ", ".join(type(v).__name__ for v in value) + ")"
    return type(value).__name__


def _type_name(value: Union[Tensor, Tuple[Tensor, Tensor]]) -> str:
    if torch.jit.is_scripting():
        return "Tensor" if isinstance(value, Tensor) else "tuple"
    return type(value).__name__


def _pack(x: Tensor, lengths: Tensor) -> nn.utils.rnn.PackedSequence:
    return nn.utils.rnn.pack_padded_sequence(
        x, lengths.cpu(), batch_first=True, enforce_sorted=False
    )


def _unpack(packed: nn.utils.rnn.PackedSequence, steps: int) -> Tensor:
    return nn.utils.rnn.pad_packed_sequence(
        packed, batch_first=True, total_length=steps
    )[0]


# -- AWD-LSTM's dropouts around the stack (design section 9) ------------------------
# Modules of their own, built only by specs that ask for them (a plain model's
# generated file does not carry them): the embedding and the head own the dropout
# of what they read or write, so RecurrentModel calls them as any embedding or head.


class LockedDropout(nn.Module):
    """AWD-LSTM's LockedDropout on batch-first (B, T, F): in training, one mask
    Bernoulli(1 - p) / (1 - p) of shape (B, 1, F), the same at every step of a
    sequence. A (B, F) input has one step: torch's plain dropout. Eval: identity."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Expected p in [0, 1), got {p!r}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.dim() != 3:
            return F.dropout(x, self.p, True)
        return x * self.mask([x.shape[0], 1, x.shape[2]], x)  # (B, T, F)

    def mask(self, shape: List[int], like: Tensor) -> Tensor:
        """Bernoulli(1 - p) / (1 - p) of `shape` from torch's global RNG; the one
        place the mask is drawn (tests wrap it to see it)."""
        return like.new_empty(shape).bernoulli_(1.0 - self.p).div_(1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class DropoutEmbedding(nn.Embedding):
    """nn.Embedding with AWD-LSTM's input regularizers, in training only.

    `word_dropout` (AWD's `embedded_dropout`): per call, each vocabulary row of the
    weight is zeroed with that probability and the others scaled by 1/(1 - P), so
    a dropped word is zero at every occurrence in the batch; the lookup goes
    through `F.embedding` with the dropped weight (the parameter is untouched).
    `locked_dropout`: then `LockedDropout` on the (B, T, E) output. Same parameters
    and state dict as nn.Embedding; the masks in that order from torch's RNG.
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        padding_idx: Optional[int] = None,
        *,
        word_dropout: float = 0.0,
        locked_dropout: float = 0.0,
    ) -> None:
        super().__init__(num_embeddings, embedding_dim, padding_idx)
        if not 0.0 <= word_dropout < 1.0:
            raise ValueError(f"Expected word_dropout in [0, 1), got {word_dropout!r}")
        self.word_dropout = word_dropout
        self.dropout = LockedDropout(locked_dropout)

    def forward(self, input: Tensor) -> Tensor:
        weight = self.weight  # (V, E)
        if self.training and self.word_dropout > 0.0:
            weight = weight * self.mask([weight.shape[0], 1], weight)
        out = F.embedding(
            input,
            weight,
            self.padding_idx,
            self.max_norm,
            self.norm_type,
            self.scale_grad_by_freq,
            self.sparse,
        )
        return self.dropout(out)

    def mask(self, shape: List[int], like: Tensor) -> Tensor:
        """The word-dropout mask (V, 1), Bernoulli(1 - P) / (1 - P)."""
        p = self.word_dropout
        return like.new_empty(shape).bernoulli_(1.0 - p).div_(1.0 - p)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s + f", word_dropout={self.word_dropout}" * (self.word_dropout > 0)


class DropoutLinear(nn.Linear):
    """nn.Linear that first applies `LockedDropout(locked_dropout)` to its input:
    the head of a spec with `dropout=P locked=true`. Same parameters and state dict
    as nn.Linear (a tied weight stays tied); `self.dropout`'s output is the dropped
    input the head reads."""

    def __init__(
        self, in_features: int, out_features: int, *, locked_dropout: float = 0.0
    ) -> None:
        super().__init__(in_features, out_features)
        self.dropout = LockedDropout(locked_dropout)

    def forward(self, input: Tensor) -> Tensor:
        return F.linear(self.dropout(input), self.weight, self.bias)
