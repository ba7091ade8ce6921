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
