"""Shared helpers: the example specs, and loading generated source as a module."""

from __future__ import annotations

import importlib.util
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.rnn"))
GENERATED = ROOT / "generated"


def missing_classes(path: Path) -> list[str]:
    """The classes `path`'s models build that rnnspec.nn does not define (yet).

    An example may land before the classes it needs (issue 13's `ln_lstm.rnn` before
    `LayerNormLSTM`): tests that build or instantiate examples skip it until then.
    Read from rnnspec.nn's source index, so nothing is imported.
    """
    import rnnspec
    from rnnspec.compile.nnsource import index
    from rnnspec.compile.plan import model_call

    definitions, _ = index()
    return sorted(
        {
            callee
            for spec in rnnspec.parse_file(path)
            for callee in model_call(spec).callees()
            if not callee.startswith("nn.") and callee not in definitions
        }
    )


#: The examples every class of which rnnspec.nn defines: those that build.
BUILDABLE = [path for path in EXAMPLES if not missing_classes(path)]


def example_params() -> list:
    """EXAMPLES as parameters; one whose classes are missing skips, saying which."""
    params = []
    for path in EXAMPLES:
        missing = missing_classes(path)
        reason = f"rnnspec.nn has no {', '.join(missing)} yet"
        mark = pytest.mark.skipif(bool(missing), reason=reason)
        params.append(pytest.param(path, id=path.stem, marks=mark))
    return params


def load_source(source: str, tmp_path: Path, name: str = "gen"):
    """Import generated source from a file, as a user would."""
    path = tmp_path / f"{name}_{uuid.uuid4().hex[:8]}.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def load_generated(tmp_path):
    def load(source: str):
        return load_source(source, tmp_path)

    return load
