"""Small specs for the language and compiler tests: text, errors, dict-form IR."""

import pytest

import rnnspec
from rnnspec import ModelSpec, SpecError


def spec_with(*lines: str) -> str:
    """A model M whose body is `lines`, one statement each."""
    body = "".join(f"    {line}\n" for line in lines)
    return f"model M {{\n{body}}}\n"


def error_text(source: str) -> str:
    """The SpecError text `source` raises, read as file m.rnn."""
    with pytest.raises(SpecError) as info:
        rnnspec.parse(source, "m.rnn")
    return str(info.value)


def one(**fields) -> ModelSpec:
    """A features-input model M of hidden 4, with `fields` added (dict form)."""
    data = {"name": "M", "input": {"kind": "features", "size": 3}, "hidden": 4}
    return ModelSpec.model_validate({**data, **fields})
