"""`rnnspec schema`: a strict JSON Schema that every valid dict form satisfies."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings

import rnnspec
from rnnspec.cli import main
from rnnspec.lang.config import json_schema
from tests.conftest import EXAMPLES

from .test_fmt import IDENTITY, model_specs

SPECS = [
    (f"{path.stem}:{spec.name}", spec)
    for path in [*EXAMPLES, *IDENTITY]
    for spec in rnnspec.parse_file(path)
]


@pytest.fixture(scope="module")
def validator():
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_schema_has_dialect_and_title():
    schema = json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "rnnspec model"
    assert schema["required"] == ["name", "input", "hidden"]


def test_every_object_forbids_unknown_keys():
    def objects(node):
        if isinstance(node, dict):
            if node.get("type") == "object":
                yield node
            for value in node.values():
                yield from objects(value)
        elif isinstance(node, list):
            for value in node:
                yield from objects(value)

    found = list(objects(json_schema()))
    assert len(found) == 7  # the model, two inputs, attention, three heads
    assert all(node["additionalProperties"] is False for node in found)


@pytest.mark.parametrize("spec", [s for _, s in SPECS], ids=[n for n, _ in SPECS])
def test_examples_dict_forms_validate(validator, spec):
    validator.validate(spec.model_dump(mode="json"))
    # The short form a config holds (defaults left out) validates too.
    validator.validate(spec.model_dump(mode="json", exclude_defaults=True))


def test_examples_exist():
    assert EXAMPLES and SPECS


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model_specs())
def test_random_dict_forms_validate(spec):
    jsonschema.validate(spec.model_dump(mode="json"), json_schema())


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda d: d.update(hiden=3), []),
        (lambda d: d["input"].update(embedd=3), ["input"]),
        (
            lambda d: d.update(attention={"kind": "dot", "maks": "strict"}),
            ["attention"],
        ),
        (
            lambda d: d.update(head={"kind": "classes", "size": 2, "pol": "max"}),
            ["head"],
        ),
        (lambda d: d.update(cell="lstn"), ["cell"]),
        (lambda d: d.update(directions=3), ["directions"]),
        (lambda d: d.update(dropout=1.0), ["dropout"]),
        (lambda d: d.update(hidden=0), ["hidden"]),
        (lambda d: d.pop("hidden"), []),
        (lambda d: d.update(input={"kind": "featres", "size": 3}), ["input"]),
    ],
)
def test_wrong_keys_and_values_are_rejected(validator, change, where):
    data = rnnspec.parse_file(EXAMPLES[0])[0].model_dump(mode="json")
    change(data)
    errors = list(validator.iter_errors(data))
    assert errors
    assert any(list(error.absolute_path)[: len(where)] == where for error in errors)


def test_command_prints_the_schema(capsys):
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == json_schema()


def test_command_writes_a_file_deterministically(tmp_path, capsys):
    target = tmp_path / "schemas" / "rnnspec.schema.json"
    assert main(["schema", "--output", str(target)]) == 0
    first = target.read_bytes()
    assert json.loads(first) == json_schema()
    assert main(["schema", "-o", str(target)]) == 0
    assert target.read_bytes() == first
    assert target.stat().st_mode & 0o044  # readable by others, not a private tmpfile


def test_command_does_not_import_torch():
    code = (
        "import sys\n"
        "from rnnspec.cli import main\n"
        "main(['schema'])\n"
        "assert 'torch' not in sys.modules\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert json.loads(result.stdout)["title"] == "rnnspec model"


def test_yaml_config_checked_like_an_editor_would(validator, tmp_path):
    yaml = pytest.importorskip("yaml")
    text = Path(tmp_path / "model.yaml")
    text.write_text(
        "# yaml-language-server: $schema=rnnspec.schema.json\n"
        "name: Tagger\n"
        "input: {kind: features, size: 40}\n"
        "cell: lstm\n"
        "hidden: 128\n"
        "head: {kind: linear, size: 12, pool: max}\n"
    )
    errors = list(validator.iter_errors(yaml.safe_load(text.read_text())))
    assert errors and all(list(e.absolute_path)[:1] == ["head"] for e in errors)


def test_schema_and_target_keys_are_allowed_and_ignored(validator):
    data = {"$schema": "./rnnspec.schema.json", "_target_": "rnnspec.from_config"}
    data.update(rnnspec.parse_file(EXAMPLES[0])[0].model_dump(mode="json"))
    validator.validate(data)
    assert rnnspec.spec_from_config(data) == rnnspec.parse_file(EXAMPLES[0])[0]
    assert list(validator.iter_errors({**data, "_target_": "torch.nn.LSTM"}))
