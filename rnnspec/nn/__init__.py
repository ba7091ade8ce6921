"""Torch building blocks of every rnnspec model.

Each module here imports only torch and the standard library, so that the code
generator can inline the pieces a spec needs into a standalone file: this package
is the single source of truth for the math, shared by `instantiate` and `generate`.
The recurrent cells live one per module (`rnn`, `lstm`, `peephole`, `lnlstm`, `gru`,
`lngru`), on the helpers of `stack`; they are re-exported here.
"""

from .gru import CustomGRU
from .lngru import LayerNormGRU
from .lnlstm import LayerNormLSTM
from .lstm import CustomLSTM
from .peephole import PeepholeLSTM
from .rnn import CustomRNN

__all__ = [
    "CustomGRU",
    "CustomLSTM",
    "CustomRNN",
    "LayerNormGRU",
    "LayerNormLSTM",
    "PeepholeLSTM",
]
