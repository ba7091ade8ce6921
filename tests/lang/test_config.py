"""Specs in experiment configs: YAML, JSON, TOML and Hydra, and their error messages."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

import rnnspec
from rnnspec import ModelSpec, SpecError, from_config, spec_from_config

TAGGER = """\
# Small bidirectional LSTM tagger.
model Tagger {
    input      features 5
    cell       lstm
    hidden     8
    layers     2
    directions 2
    head       linear 4
}
"""

CLASSIFIER = """\
model Classifier {
    input      tokens 50 embed=8 padding=0
    cell       gru
    hidden     6
    head       classes 3
}
"""

TAGGER_FIELDS = {
    "name": "Tagger",
    "input": {"kind": "features", "size": 5},
    "cell": "lstm",
    "hidden": 8,
    "layers": 2,
    "directions": 2,
    "head": {"kind": "linear", "size": 4},
}

#: Wording of pydantic that must never reach a user.
PYDANTIC_WORDS = ("validation error", "Input should", "pydantic", "errors.pydantic.dev")


def assert_runs_as_tagger(model: torch.nn.Module) -> None:
    output, _ = model(torch.randn(2, 7, 5))
    assert output.shape == (2, 7, 4)


def assert_runs_as_classifier(model: torch.nn.Module) -> None:
    output, _ = model(torch.randint(0, 50, (2, 7)))
    assert output.shape == (2, 3)


def assert_clean(error: SpecError) -> None:
    text = str(error) + "".join(d.message for d in error.errors)
    for word in PYDANTIC_WORDS:
        assert word not in text


# -- the forms, from real config files ---------------------------------------------


def test_yaml_inline_spec_text():
    config = yaml.safe_load(
        "experiment: demo\n"
        "model:\n"
        "  spec: |\n" + textwrap.indent(CLASSIFIER, "    ") + "lr: 0.01\n"
    )
    assert_runs_as_classifier(from_config(config["model"], path="model"))


def test_yaml_path_relative_to_the_config_file(tmp_path, monkeypatch):
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "tagger.rnn").write_text(TAGGER)
    (tmp_path / "configs").mkdir()
    config_file = tmp_path / "configs" / "exp.yaml"
    config_file.write_text("model:\n  spec: ../specs/tagger.rnn\n")
    (tmp_path / "elsewhere").mkdir()  # the working directory is not the config's
    monkeypatch.chdir(tmp_path / "elsewhere")
    config = yaml.safe_load(config_file.read_text())
    model = from_config(config["model"], base_dir=config_file, path="model")
    assert_runs_as_tagger(model)
    # A folder works as base_dir too; a bare path string resolves the same way.
    spec = spec_from_config("../specs/tagger.rnn", base_dir=tmp_path / "configs")
    assert spec == rnnspec.parse(TAGGER)[0]


def test_yaml_ir_fields():
    config = yaml.safe_load(
        """
        model:
          name: Tagger
          input: {kind: features, size: 5}
          cell: lstm
          hidden: 8
          layers: 2
          directions: 2
          head: {kind: linear, size: 4}
        """
    )
    assert spec_from_config(config["model"]) == rnnspec.parse(TAGGER)[0]
    assert_runs_as_tagger(from_config(config["model"], path="model"))


def test_toml_ir_fields():
    tomllib = pytest.importorskip("tomllib")  # the standard library from 3.11
    config = tomllib.loads(
        textwrap.dedent(
            """
            [model]
            name = "Tagger"
            cell = "lstm"
            hidden = 8
            layers = 2
            directions = 2

            [model.input]
            kind = "features"
            size = 5

            [model.head]
            kind = "linear"
            size = 4
            """
        )
    )
    assert_runs_as_tagger(from_config(config["model"], path="model"))


def test_toml_spec_text():
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads(f'[model]\nspec = """\n{CLASSIFIER}"""\n')
    assert_runs_as_classifier(from_config(config["model"], path="model"))


def test_json_picks_one_model_of_several():
    text = json.dumps(
        {"model": {"spec": TAGGER + "\n" + CLASSIFIER, "model": "Tagger"}}
    )
    config = json.loads(text)
    assert_runs_as_tagger(from_config(config["model"], path="model"))
    # The caller may pick the model too.
    spec = spec_from_config(TAGGER + CLASSIFIER, model="Classifier")
    assert spec.name == "Classifier"


def test_json_ir_fields_are_the_dict_form():
    spec = rnnspec.parse(CLASSIFIER)[0]
    config = json.loads(json.dumps({"model": spec.model_dump(mode="json")}))
    assert spec_from_config(config["model"]) == spec
    assert_runs_as_classifier(from_config(config["model"]))


def test_spec_text_directly_and_a_model_spec_pass_through():
    spec = spec_from_config(TAGGER)
    assert spec_from_config(spec) is spec
    assert_runs_as_tagger(from_config(TAGGER))


# -- Hydra and OmegaConf -------------------------------------------------------------

HYDRA_CONFIG = """\
defaults:
  - _self_

hidden: 8

model:
  _target_: rnnspec.from_config
  name: Tagger
  input: {kind: features, size: 5}
  cell: lstm
  hidden: ${hidden}
  layers: 2
  directions: 2
  head: {kind: linear, size: 4}

text_model:
  _target_: rnnspec.from_config
  spec: |
    model Classifier {
        input      tokens 50 embed=8 padding=0
        cell       gru
        hidden     6
        head       classes 3
    }
  model: Classifier
"""


@pytest.fixture
def hydra_config(tmp_path):
    (tmp_path / "train.yaml").write_text(HYDRA_CONFIG)

    def load(overrides=()):
        with initialize_config_dir(config_dir=str(tmp_path), version_base="1.3"):
            return compose(config_name="train", overrides=list(overrides))

    return load


def test_hydra_target_with_ir_fields_and_overrides(hydra_config):
    config = hydra_config(["hidden=12"])
    model = instantiate(config.model)
    assert_runs_as_tagger(model)
    # The override reached the model through the `${hidden}` interpolation.
    assert model.rnn.state_dict()["weight_hh_l0"].shape == (4 * 12, 12)


def test_hydra_target_with_spec_text(hydra_config):
    config = hydra_config()
    assert_runs_as_classifier(instantiate(config.text_model))


def test_hydra_errors_carry_the_spec_error(hydra_config):
    config = hydra_config(["model.cell=lstn"])
    with pytest.raises(InstantiationException) as caught:
        instantiate(config.model)
    cause = caught.value.__cause__
    assert isinstance(cause, SpecError)
    assert cause.errors[0].message == "cell: unknown cell 'lstn'; did you mean 'lstm'?"


def test_omegaconf_nodes_are_resolved():
    config = OmegaConf.create({"size": 5, "model": {**TAGGER_FIELDS, "input": None}})
    config.model.input = {"kind": "features", "size": "${size}"}
    assert spec_from_config(config.model) == rnnspec.parse(TAGGER)[0]
    assert spec_from_config({"spec": config.model}).name == "Tagger"
    broken = OmegaConf.create({"model": {**TAGGER_FIELDS, "hidden": "${missing}"}})
    with pytest.raises(SpecError, match="model: cannot resolve the config"):
        spec_from_config(broken.model, path="model")


# -- errors name the key path ---------------------------------------------------------


def config_error(obj, **kwargs) -> list[str]:
    with pytest.raises(SpecError) as caught:
        from_config(obj, **kwargs)
    assert_clean(caught.value)
    return [d.message for d in caught.value.errors]


def test_wrong_value_names_the_key_path():
    config = yaml.safe_load(
        """
        model:
          name: LM
          input: {kind: tokens, vocab: 100, embed: 16}
          cell: lstm
          hidden: 16
          attention: {kind: general, mask: strictt}
        """
    )
    with pytest.raises(SpecError) as caught:
        from_config(config["model"], path="model")
    assert str(caught.value) == (
        "<config>: error: model.attention.mask: unknown mask 'strictt'; "
        "did you mean 'strict'?"
    )
    assert_clean(caught.value)


def test_every_problem_is_reported_with_its_path():
    messages = config_error(
        {
            "name": "range",
            "input": {"kind": "featres", "size": 5},
            "cel": "lstm",
            "hidden": "8",
            "dropout": 1.5,
            "directions": 3,
            "head": {"kind": "classes", "size": 3, "pol": "max"},
        },
        path="experiment.model",
    )
    assert messages == [
        "experiment.model.name: model name 'range' shadows the Python builtin 'range'",
        "experiment.model.input.kind: unknown input kind 'featres'; "
        "did you mean 'features'?",
        "experiment.model.hidden: hidden must be an integer, got '8'",
        "experiment.model.directions: unknown directions 3; expected '1' or '2'",
        "experiment.model.dropout: dropout must be < 1.0, got 1.5",
        "experiment.model.head.pol: unknown key 'pol'; did you mean 'pool'?",
        "experiment.model.cel: unknown key 'cel'; did you mean 'cell'?",
        "experiment.model.cell: missing required key 'cell'",
    ]


def test_cross_field_rules_name_the_key():
    fields = {**TAGGER_FIELDS, "cell": "gru", "peephole": True}
    assert config_error(fields, path="model") == [
        "model.peephole: 'peephole true' needs cell lstm, got cell gru"
    ]
    fields = {**TAGGER_FIELDS, "input": {"kind": "features"}}
    assert config_error(fields, path=("model",)) == [
        "model.input.size: missing required key 'size'"
    ]


def test_inline_text_errors_give_the_line_inside_the_text():
    config = yaml.safe_load(
        "model:\n  spec: |\n"
        + textwrap.indent(TAGGER.replace("hidden ", "hiden  "), "    ")
    )
    with pytest.raises(SpecError) as caught:
        from_config(config["model"], path="model")
    error = caught.value
    assert (
        "model.spec:5:5: error: unknown statement 'hiden'; did you mean 'hidden'?"
        in str(error).splitlines()
    )
    assert "model.spec:2:1: error: missing required statement 'hidden'" in str(error)
    assert [(d.line, d.column) for d in error.errors] == [(2, 1), (5, 5)]


def test_errors_name_the_config_file_when_base_dir_is_it(tmp_path):
    config_file = tmp_path / "exp.yaml"
    config_file.write_text("model:\n  name: A\n  cel: gru\n")
    config = yaml.safe_load(config_file.read_text())
    with pytest.raises(SpecError) as caught:
        spec_from_config(config["model"], base_dir=config_file, path="model")
    assert str(caught.value).splitlines()[0] == (
        f"{config_file}: error: model.input: missing required key 'input'"
    )


def test_errors_in_a_spec_file_name_the_file(tmp_path):
    (tmp_path / "bad.rnn").write_text(TAGGER.replace("lstm", "lstn"))
    with pytest.raises(SpecError) as caught:
        from_config({"spec": "bad.rnn"}, base_dir=tmp_path)
    assert str(caught.value).startswith(f"{tmp_path / 'bad.rnn'}:4:16: error: ")


def test_several_models_without_a_name_are_listed():
    assert config_error({"spec": TAGGER + CLASSIFIER}, path="model") == [
        "model.spec: the spec defines 2 models, 'Tagger' and 'Classifier'; "
        "pick one with model=NAME (a 'model' key next to 'spec')"
    ]
    assert config_error({"spec": TAGGER + CLASSIFIER, "model": "Taggr"}) == [
        "spec: no model 'Taggr' in the spec; did you mean 'Tagger'?; "
        "it defines 'Tagger' and 'Classifier'"
    ]


def test_wrong_keys_next_to_spec():
    assert config_error({"spec": TAGGER, "modle": "Tagger"}, path="model") == [
        "model.modle: unknown key 'modle'; did you mean 'model'?"
    ]


def test_missing_file_and_wrong_types():
    assert config_error("nowhere.rnn", path="model") == [
        "model: cannot read spec file 'nowhere.rnn': No such file or directory"
    ]
    assert config_error(42, path="model") == [
        "model: expected spec text, a path to a .rnn file, or a mapping; got int"
    ]
    assert config_error({"spec": 42}) == [
        "spec: spec must be spec text, a path to a .rnn file, "
        "or a mapping of fields; got int"
    ]
    assert config_error(None) == [
        "no model given: expected spec text, a .rnn path or a mapping"
    ]
    assert config_error({**TAGGER_FIELDS, "input": 5, "head": "linear"}) == [
        "input: input must be a mapping with a 'kind', got 5",
        "head: head must be a mapping with a 'kind', got 'linear'",
    ]


def test_model_name_must_match_fields():
    assert config_error(TAGGER_FIELDS, model="Other") == [
        "model 'Other' was asked for, but the fields define 'Tagger'"
    ]


JUNK = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 300)
    | st.floats(allow_nan=False, width=32)
    | st.sampled_from(["lstm", "gru", "features", "tokens", "logits", "x", ""]),
    lambda inner: (
        st.lists(inner, max_size=2)
        | st.dictionaries(
            st.sampled_from(["kind", "size", "vocab", "embed", "mask", "pool", "tie"]),
            inner,
            max_size=4,
        )
    ),
    max_leaves=6,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        st.sampled_from([*ModelSpec.model_fields, "hiden", "spec_", "cel"]),
        JUNK,
        max_size=8,
    )
)
def test_junk_fields_never_leak_pydantic(fields):
    try:
        spec_from_config(fields, path="model")
    except SpecError as error:
        assert_clean(error)
        for diagnostic in error.errors:
            assert diagnostic.message.startswith("model")


def test_spec_from_config_does_not_import_torch():
    code = (
        "import sys, rnnspec\n"
        "rnnspec.spec_from_config({'spec': '''" + TAGGER + "'''})\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_exported():
    assert "spec_from_config" in rnnspec.__all__
    assert "from_config" in rnnspec.__all__
