"""IR → torch modules at runtime (stage 4a).

Evaluates the spec's constructor `Call`s (see `rnnspec.compile.plan`) with the
classes of `rnnspec.nn` — the very code that `rnnspec.compile.codegen` copies into
generated files.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch
from torch import nn

from rnnspec.compile.nnsource import module_of
from rnnspec.compile.plan import Call, model_call
from rnnspec.lang.ir import ModelSpec


def resolve(callee: str) -> Any:
    """'nn.LSTM' → torch.nn.LSTM; 'CustomLSTM' → rnnspec.nn.lstm.CustomLSTM."""
    if callee.startswith("nn."):
        return getattr(nn, callee[3:])
    try:
        module = importlib.import_module(f"rnnspec.nn.{module_of(callee)}")
    except KeyError:
        raise LookupError(f"rnnspec.nn defines no {callee!r}") from None
    return getattr(module, callee)


def evaluate(value: Any) -> Any:
    """Build a Call tree: arguments first, in keyword order (the RNG order)."""
    if not isinstance(value, Call):
        return value
    kwargs = {name: evaluate(arg) for name, arg in value.kwargs}
    return resolve(value.callee)(**kwargs)


def instantiate(spec: ModelSpec) -> torch.nn.Module:
    """The torch model of `spec`: same parameters, init and outputs as codegen."""
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"Expected a ModelSpec, got {type(spec).__name__}")
    return evaluate(model_call(spec))
