from typing import Optional

from torch import Tensor, nn


def packed_torch_forward(
    rnn: nn.Module, x: Tensor, hx: Optional[object], lengths: Optional[Tensor]
):
    """Run a torch RNN/LSTM/GRU module (batch_first) on padded `x` with `lengths`.

    Uses `pack_padded_sequence(..., enforce_sorted=False)`, so initial and final
    states stay in the caller's batch order; padded output rows come back zero.
    """
    if lengths is None or x.shape[0] == 0:  # torch cannot pack an empty batch
        return rnn(x, hx)
    packed = nn.utils.rnn.pack_padded_sequence(
        x, lengths.cpu(), batch_first=True, enforce_sorted=False
    )
    output, state = rnn(packed, hx)
    output, _ = nn.utils.rnn.pad_packed_sequence(
        output, batch_first=True, total_length=x.shape[1]
    )
    return output, state
