"""Training spec'd models: text data, batches, the loop, checkpoints and sampling.

Train a spec'd language model on a text file, checkpoint it, sample from it. The
pieces, each usable alone (all importable from `rnnspec.train`):

- `text`: `load_text(data)` (a text file, or `"stdlib"`), `Vocab`, `TextDataset`.
- `batching`: `BucketBatchSampler`, batches of similar-length sequences, sharded.
- `model`: which spec is a language model, its VOCAB fitted to the data
  (`fit_vocab`), the class `rnnspec build` wrote (`load_generated`).
- `config`: `TrainConfig` and the values each setting may take.
- `loop`: `train(TrainConfig(...))`, built from `run` (every check, the model,
  resume), `steps` (one optimizer step, `evaluate`), `checkpoint`, `rundir` (OUT's
  files and `RunLock`), `distributed` (torchrun, devices, threads), `plots`.
- `regularize`: `ActivationRegularizer`, AWD-LSTM's AR and TAR (`--ar`, `--tar`),
  caught from the one training forward by hooks on `model.rnn` and `model.head`.
- `checkpoint`: `load_checkpoint`, `save_checkpoint`, `model_from_checkpoint`.
- `sample`: `generate`, `start_token`.
- `trees`: SPINN's binary trees and ListOps.

Importing this package imports no torch: each name below is loaded from its module
when first used (so `rnnspec.train.batching` alone stays light).
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public name → the module of this package that defines it.
_EXPORTS = {
    "ActivationRegularizer": "regularize",
    "Distributed": "distributed",
    "RunLock": "rundir",
    "TextDataset": "text",
    "TrainConfig": "config",
    "TrainError": "errors",
    "TrainResult": "loop",
    "Vocab": "text",
    "evaluate": "steps",
    "fit_vocab": "model",
    "generate": "sample",
    "load_checkpoint": "checkpoint",
    "load_spec": "model",
    "load_text": "text",
    "model_from_checkpoint": "checkpoint",
    "plot_losses": "plots",
    "save_checkpoint": "checkpoint",
    "start_token": "sample",
    "stdlib_corpus": "text",
    "token_lines": "text",
    "train": "loop",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
