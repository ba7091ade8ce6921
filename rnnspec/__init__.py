"""rnnspec: a declarative model-spec compiler for recurrent neural networks.

`parse` → `ModelSpec` (pydantic IR) → `instantiate` (torch modules) or `generate`
(standalone PyTorch source). Importing rnnspec does not import torch: the compiler
front end (`rnnspec build`, `rnnspec check`) starts fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rnnspec.errors import Diagnostic, SpecError
from rnnspec.ir import ModelSpec
from rnnspec.lower import parse

if TYPE_CHECKING:
    import torch

__version__ = "0.1.0"

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


def parse_file(path: str | Path) -> list[ModelSpec]:
    """Parse a `.rnn` file; diagnostics name the file as given.

    Bytes that are not UTF-8 raise `SpecError` at their line and column; a file that
    cannot be read raises `OSError`.
    """
    from rnnspec.specfile import read_spec_file

    path = Path(path)
    return parse(read_spec_file(path), filename=str(path))


def instantiate(spec: ModelSpec) -> torch.nn.Module:
    """Build the torch model of `spec` (imports torch)."""
    from rnnspec.runtime import instantiate as _instantiate

    return _instantiate(spec)


def generate(specs: ModelSpec | list[ModelSpec], **kwargs: Any) -> str:
    """Standalone PyTorch source for one spec or a list (one class per model)."""
    from rnnspec.codegen import generate as _generate

    return _generate(specs, **kwargs)


def from_config(obj: Any = None, **kwargs: Any) -> torch.nn.Module:
    """A model from an experiment-config value: spec text, a path, or IR fields.

    `obj` may be omitted when the value comes as keywords (`hydra.utils.instantiate`
    passes a node's keys that way); see `rnnspec.config.spec_from_config`.
    """
    from rnnspec.config import from_config as _from_config

    return _from_config(obj, **kwargs)


def spec_from_config(obj: Any = None, **kwargs: Any) -> ModelSpec:
    """The `ModelSpec` of an experiment-config value, without building it (no torch)."""
    from rnnspec.config import spec_from_config as _spec_from_config

    return _spec_from_config(obj, **kwargs)
