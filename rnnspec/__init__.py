"""rnnspec: a declarative model-spec compiler for recurrent neural networks.

`parse` → `ModelSpec` (pydantic IR) → `instantiate` (torch modules) or `generate`
(standalone PyTorch source). Importing rnnspec does not import torch: the compiler
front end (`rnnspec build`, `rnnspec check`) starts fast.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rnnspec.lang.diagnostics import Diagnostic, SpecError
from rnnspec.lang.ir import ModelSpec
from rnnspec.lang.lower import parse
from rnnspec.version import __version__

if TYPE_CHECKING:
    import torch


__all__ = [
    "Diagnostic",
    "ModelSpec",
    "SpecError",
    "__version__",
    "from_config",
    "generate",
    "instantiate",
    "parse",
    "parse_file",
    "spec_from_config",
]


def parse_file(
    path: str | Path, overrides: Sequence[str] | Mapping[str, Any] | None = None
) -> list[ModelSpec]:
    """Parse a `.rnn` file (and the files it imports); diagnostics name the file as
    given.

    `overrides` change values before validation, as `rnnspec build --set` does:
    `["Wide.hidden=1024", "Wide.attention.mask=strict"]` or
    `{"Wide.hidden": 1024}` (the model may be left out when the file has one).
    Bytes that are not UTF-8 raise `SpecError` at their line and column; a file that
    cannot be read raises `OSError`.
    """
    from rnnspec.lang.lower import load_file

    return load_file(path, overrides=overrides).specs


def instantiate(spec: ModelSpec) -> torch.nn.Module:
    """Build the torch model of `spec` (imports torch)."""
    from rnnspec.compile.runtime import instantiate as _instantiate

    return _instantiate(spec)


def generate(specs: ModelSpec | list[ModelSpec], **kwargs: Any) -> str:
    """Standalone PyTorch source for one spec or a list (one class per model)."""
    from rnnspec.compile.codegen import generate as _generate

    return _generate(specs, **kwargs)


def from_config(obj: Any = None, **kwargs: Any) -> torch.nn.Module:
    """A model from an experiment-config value: spec text, a path, or IR fields.

    `obj` may be omitted when the value comes as keywords (`hydra.utils.instantiate`
    passes a node's keys that way); `overrides=` (or an `overrides` key next to
    `spec`) changes values of a spec as `--set` does; see
    `rnnspec.lang.config.spec_from_config`.
    """
    return instantiate(spec_from_config(obj, **kwargs))


def spec_from_config(obj: Any = None, **kwargs: Any) -> ModelSpec:
    """The `ModelSpec` of an experiment-config value, without building it (no torch)."""
    from rnnspec.lang.config import spec_from_config as _spec_from_config

    return _spec_from_config(obj, **kwargs)
