"""Experiment configs → models: the one entry point for YAML, JSON, TOML and Hydra.

A config value may be spec text, a path to a `.rnn` file, a mapping
`{"spec": TEXT_OR_PATH_OR_FIELDS, "model": NAME}`, or a mapping of IR fields (the dict
form of `ModelSpec`). OmegaConf containers are resolved to plain values first, so Hydra
configs (`_target_: rnnspec.from_config`) work whether Hydra passes the node's keys as
`spec=`/`model=` or as IR fields.

Every mistake becomes a `SpecError`: inline text reports the line inside the text (the
"file" is the config key holding it), a path reports the file, and IR fields report the
config key path (`model.attention.mask: unknown mask 'strictt'; ...`). No pydantic
wording reaches the user. This module does not import torch until a model is built.
"""

from __future__ import annotations

import os
import re
import reprlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from rnnspec.lang.diagnostics import Diagnostic, SpecError, did_you_mean, one_of
from rnnspec.lang.ir import ModelSpec, cross_field_problems
from rnnspec.lang.lower import _extra_hint, clean_loc, describe_error, parse
from rnnspec.lang.source import MAX_SPEC_BYTES, decode_spec, read_spec_bytes, spec_text
from rnnspec.lang.statements import field_help, node_help

if TYPE_CHECKING:
    pass

#: The "file" named by diagnostics that have no line (a key in a config).
CONFIG_FILENAME = "<config>"

#: Keys Hydra reserves, and the `$schema` editors read: ignored, so that a whole
#: config node (or a JSON file pointing at its schema) may be passed directly.
_IGNORED_KEYS = frozenset(
    {"_target_", "_convert_", "_recursive_", "_partial_", "$schema"}
)

#: Keys of the `{"spec": ..., "model": ..., "overrides": ...}` form.
_SPEC_KEYS = ("spec", "model", "overrides")

_OVERRIDES_NEED_SPEC = (
    "overrides apply to spec text or a .rnn file; change the fields themselves"
)

#: Where a value sits in the config: its keys, as the config spells them.
KeyPath = tuple[Any, ...]

#: A path in a config is read only if it names a file with this suffix: a config
#: never makes rnnspec read (and echo in an error) a file that is not a spec.
SPEC_SUFFIX = ".rnn"


#: How deeply a config value may nest, and how many values it may hold once YAML
#: aliases are expanded. A model's fields are three levels and a few dozen values.
MAX_CONFIG_DEPTH = 32
MAX_CONFIG_VALUES = 10_000


def spec_from_config(
    obj: Any = None,
    *,
    base_dir: str | os.PathLike[str] | None = None,
    model: str | None = None,
    path: str | Sequence[str] | None = None,
    overrides: Sequence[str] | Mapping[str, Any] | None = None,
    **fields: Any,
) -> ModelSpec:
    """The `ModelSpec` a config value describes; torch-free.

    `obj` is spec text, a `.rnn` path (relative paths resolve against `base_dir`, or
    its folder when it is a file such as the config itself; else the working
    directory), a `{"spec": ..., "model": NAME}` mapping, a mapping of IR fields, or
    a `ModelSpec`. Keyword `fields` stand in for a mapping (what Hydra passes).
    `model` picks one model of a multi-model spec. `path` is where the value sits in
    the config (`"model"` or `("experiment", "model")`); messages name keys under it,
    and name the config file when `base_dir` is that file. `overrides` change values
    of spec text or a spec file as `rnnspec build --set` does (`["hidden=1024"]` or
    `{"Wide.hidden": 1024}`); so does an `overrides` key next to `spec`.
    """
    try:
        return _spec(obj, base_dir, model, _key_path(path), fields, overrides)
    except SpecError as error:
        if error.filename != CONFIG_FILENAME or not _is_file(base_dir):
            raise
        raise SpecError(error.errors, filename=os.fspath(base_dir)) from None


def _is_file(base_dir: str | os.PathLike[str] | None) -> bool:
    return base_dir is not None and Path(base_dir).expanduser().is_file()


def _spec(
    obj: Any,
    base_dir: str | os.PathLike[str] | None,
    model: str | None,
    key: KeyPath,
    fields: dict[str, Any],
    overrides: Any = None,
) -> ModelSpec:
    if fields:
        if obj is not None:
            raise _config_error(
                key, "give either one value or keyword fields, not both"
            )
        obj = fields
    obj = _resolved(obj, key)
    if isinstance(obj, (str, os.PathLike)):
        return _from_text_or_path(obj, key, base_dir, model, overrides)
    if isinstance(obj, Mapping) and "spec" in obj:
        data = {k: v for k, v in obj.items() if k not in _IGNORED_KEYS}
        return _from_spec_mapping(data, key, base_dir, model, overrides)
    if overrides:
        raise _config_error(key, _OVERRIDES_NEED_SPEC)
    if isinstance(obj, ModelSpec):
        return _check_name(obj, model, key)
    if isinstance(obj, Mapping):
        data = {k: v for k, v in obj.items() if k not in _IGNORED_KEYS}
        return _check_name(_from_fields(data, key), model, key)
    if obj is None:
        message = "no model given: expected spec text, a .rnn path or a mapping"
    else:
        message = (
            "expected spec text, a path to a .rnn file, or a mapping; "
            f"got {type(obj).__name__}"
        )
    raise _config_error(key, message)


# -- the forms -----------------------------------------------------------------------


def _from_spec_mapping(
    data: Mapping[str, Any],
    key: KeyPath,
    base_dir: str | os.PathLike[str] | None,
    model: str | None,
    overrides: Any = None,
) -> ModelSpec:
    """`{"spec": TEXT_OR_PATH_OR_FIELDS, "model": NAME?, "overrides": ...?}`."""
    expected = "; expected " + one_of(_SPEC_KEYS)
    problems = [
        Diagnostic(
            f"{_dotted(key + (name,))}: unknown key {_shown(name)}"
            f"{did_you_mean(_label(name), _SPEC_KEYS) or expected}"
        )
        for name in data
        if name not in _SPEC_KEYS
    ]
    if problems:
        raise SpecError(problems, filename=CONFIG_FILENAME)
    chosen = data.get("model")
    if chosen is not None and not isinstance(chosen, str):
        raise _config_error(
            key + ("model",), f"model must be a model name, got {_shown(chosen)}"
        )
    if chosen is not None and model is not None and chosen != model:
        raise _config_error(
            key + ("model",),
            f"the config picks model '{chosen}' but the caller asked for '{model}'",
        )
    name = chosen if chosen is not None else model
    spec_key = key + ("spec",)
    value = _resolved(data["spec"], spec_key)
    overrides = _override_list(overrides, key) + _override_list(
        data.get("overrides"), key + ("overrides",)
    )
    if isinstance(value, (str, os.PathLike)):
        return _from_text_or_path(value, spec_key, base_dir, name, overrides)
    if overrides:
        raise _config_error(key + ("overrides",), _OVERRIDES_NEED_SPEC)
    if isinstance(value, Mapping):
        return _check_name(_from_fields(value, spec_key), name, spec_key)
    raise _config_error(
        spec_key,
        "spec must be spec text, a path to a .rnn file, or a mapping of fields; "
        f"got {type(value).__name__}",
    )


def _override_list(value: Any, key: KeyPath) -> list[str]:
    """Overrides as `KEY=VALUE` texts: from a list of them or a mapping."""
    from rnnspec.lang.overrides import override_texts

    value = _plain(value, key)
    if value is None:
        return []
    if not isinstance(value, (Mapping, list, tuple, str)):
        raise _config_error(
            key,
            "overrides must be a list of KEY=VALUE or a mapping of KEY: VALUE, got "
            f"{type(value).__name__}",
        )
    return override_texts(value)


def _looks_like_text(value: str) -> bool:
    """Spec text has a brace or a line break; a path has neither."""
    return "{" in value or "}" in value or "\n" in value


def _from_text_or_path(
    value: str | os.PathLike[str],
    key: KeyPath,
    base_dir: str | os.PathLike[str] | None,
    model: str | None,
    overrides: Any = None,
) -> ModelSpec:
    overrides = overrides or None
    here = _resolve(Path("."), base_dir)  # imports of inline text: beside the config
    if isinstance(value, str) and _looks_like_text(value):
        name = _dotted(key) or "<spec>"
        specs = parse(value, name, base_dir=here, overrides=overrides, model=model)
        return _pick(specs, model, key)
    try:
        file = _resolve(Path(value), base_dir)
    except RuntimeError as exc:  # `~user` with no such user
        raise _cannot_read(key, value, str(exc).rstrip(".")) from None
    is_spec_path = file.suffix == SPEC_SUFFIX
    if isinstance(value, str) and re.match(r"\s*model\s", value):
        if not (is_spec_path and file.is_file()):  # "model A" without braces
            name = _dotted(key) or "<spec>"
            specs = parse(value, name, base_dir=here, overrides=overrides, model=model)
            return _pick(specs, model, key)
    if not is_spec_path:
        raise _config_error(
            key,
            f"{_shown_path(value)} is not a {SPEC_SUFFIX} spec file; "
            f"expected spec text or a path ending in {SPEC_SUFFIX}",
        )
    text = read_spec_file(file, key)
    specs = parse(
        text, str(file), base_dir=file.parent, overrides=overrides, model=model
    )
    return _pick(specs, model, key)


def read_spec_file(file: Path, key: KeyPath = ()) -> str:
    """The text of the spec file a config names: the one place this module reads one.

    Only a regular file is read (a FIFO or a device would hang or never end), at most
    `MAX_SPEC_BYTES`, as UTF-8 (a BOM is allowed). Problems are `SpecError`s: reading
    ones under the config key, a decoding one at its line and column in the file.
    """
    try:
        data = read_spec_bytes(file, regular_only=True)
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        raise _cannot_read(key, file, getattr(exc, "strerror", None) or exc) from None
    if len(data) > MAX_SPEC_BYTES:
        limit = f"{MAX_SPEC_BYTES // (1 << 20)} MiB"
        raise _cannot_read(key, file, f"larger than {limit}, the most a spec may be")
    return spec_text(decode_spec(data, str(file)))


def _cannot_read(key: KeyPath, file: str | os.PathLike[str], why: object) -> SpecError:
    return _config_error(key, f"cannot read spec file {_shown_path(file)}: {why}")


def _resolve(file: Path, base_dir: str | os.PathLike[str] | None) -> Path:
    file = file.expanduser()
    if file.is_absolute() or base_dir is None:
        return file
    base = Path(base_dir).expanduser()
    if base.is_file():  # the config file itself: resolve next to it
        base = base.parent
    return base / file


def _from_fields(data: Mapping[str, Any], key: KeyPath) -> ModelSpec:
    """IR fields → `ModelSpec`, every problem reported under its config key.

    Values under unknown keys are rejected unseen: never converted, never shown.
    """
    data = _resolved(data, key)
    known = _plain({k: v for k, v in data.items() if k in ModelSpec.model_fields}, key)
    data = {k: known.get(k) for k in data if k not in _IGNORED_KEYS}
    problems: list[tuple[tuple[str, ...], str]] = []
    try:
        spec = ModelSpec.model_validate(data, context={"problems": problems})
    except ValidationError as exc:
        spec = None
        errors: list[Diagnostic] = []
        bad: set[str] = set()
        for error in exc.errors():
            loc = clean_loc(error["loc"])
            if loc:
                bad.add(loc[0])
            if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
                where = loc + ("kind",)
            else:
                where = loc
            message = _describe(error, loc, data)
            errors.append(Diagnostic(f"{_dotted(key + where)}: {message}"))
        partial = {k: v for k, v in data.items() if k not in bad}
        problems = cross_field_problems(partial, frozenset(bad))
    else:
        errors = []
    for loc, message in problems:
        message = message.replace("required statement", "required key")
        errors.append(Diagnostic(f"{_dotted(key + loc)}: {message}"))
    if errors or spec is None:
        raise SpecError(errors, filename=CONFIG_FILENAME)
    return spec


def _describe(error: Mapping[str, Any], loc: KeyPath, data: Mapping[str, Any]) -> str:
    """`describe_error` in a config's words: keys, not statements and options."""
    kind = error["type"]
    name = _label(loc[-1]) if loc else ""
    if not loc and kind in ("model_type", "dict_type"):
        got = type(error["input"]).__name__
        return f"expected a mapping of model fields, got {got}"
    if kind == "missing":
        return f"missing required key '{name}'"
    if kind == "extra_forbidden":
        if len(loc) == 1:
            allowed = [f for f in ModelSpec.model_fields]
            hint = did_you_mean(name, allowed)
        else:
            node = data.get(loc[0])
            tag = node.get("kind") if isinstance(node, Mapping) else None
            # `_extra_hint` looks the kind up in a table: only a word can be a kind.
            safe = {**data, loc[0]: {"kind": tag if isinstance(tag, str) else None}}
            hint = _extra_hint(loc, safe)
        return f"unknown key {_shown(loc[-1])}{hint}"
    if kind == "string_type":
        return f"{name} must be a string, got {_shown(error['input'])}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"{name} must be a mapping with a 'kind', got {_shown(error['input'])}"
    if isinstance(error.get("input"), (Mapping, list, tuple)):
        error = {**error, "input": _Brief(error["input"])}
    message = describe_error(error, loc)
    if kind == "spec_rule" or kind in _DESCRIBED:
        return message
    return f"invalid value {_shown(error.get('input'))} for {name}"


#: Error types `describe_error` words itself (anything else gets a generic message).
_DESCRIBED = frozenset(
    {
        "greater_than_equal",
        "greater_than",
        "less_than",
        "less_than_equal",
        "int_type",
        "int_parsing",
        "int_from_float",
        "float_type",
        "float_parsing",
        "finite_number",
        "bool_type",
        "bool_parsing",
        "literal_error",
        "union_tag_invalid",
        "union_tag_not_found",
        "model_name",
    }
)


# -- helpers -------------------------------------------------------------------------


def _pick(specs: list[ModelSpec], model: str | None, key: KeyPath) -> ModelSpec:
    """One model of a spec: the named one, or the only one."""
    names = [spec.name for spec in specs]
    if model is None:
        if len(specs) == 1:
            return specs[0]
        raise _config_error(
            key,
            f"the spec defines {len(specs)} models, {_all_of(names)}; "
            "pick one with model=NAME (a 'model' key next to 'spec')",
        )
    for spec in specs:
        if spec.name == model:
            return spec
    hint = did_you_mean(model, names)
    raise _config_error(
        key, f"no model '{model}' in the spec{hint}; it defines {_all_of(names)}"
    )


def _check_name(spec: ModelSpec, model: str | None, key: KeyPath) -> ModelSpec:
    if model is not None and spec.name != model:
        raise _config_error(
            key, f"model '{model}' was asked for, but the fields define '{spec.name}'"
        )
    return spec


def _resolved(value: Any, key: KeyPath) -> Any:
    """An OmegaConf container as plain containers, interpolations resolved."""
    if not type(value).__module__.startswith("omegaconf"):
        return value
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.to_container(value, resolve=True)
    except OmegaConfBaseException as exc:
        raise _config_error(key, f"cannot resolve the config: {exc}") from None
    except RecursionError:
        raise _config_error(key, _TOO_DEEP) from None


_TOO_DEEP = f"nested more than {MAX_CONFIG_DEPTH} levels deep"


def _plain(value: Any, key: KeyPath) -> Any:
    """OmegaConf containers (resolved) and other mappings → plain dicts and lists.

    A YAML alias is one object referred to many times; it stays one object here
    (converted once, by identity), so nested aliases (a "billion laughs") cost what
    the YAML text does, never what it expands to. Deep nesting, a value holding more
    than `MAX_CONFIG_VALUES` values once expanded, or one containing itself is an error.
    """
    return _Plainer().convert(value, key, 0)[0]


class _Plainer:
    """`_plain`'s walk: each container converted once; sizes counted as if expanded."""

    def __init__(self) -> None:
        # id → (the original, kept alive so its id stays its own; the copy; its size).
        self.done: dict[int, tuple[Any, Any, int]] = {}
        self.open: set[int] = set()

    def convert(self, value: Any, key: KeyPath, depth: int) -> tuple[Any, int]:
        value = _resolved(value, key)
        if not isinstance(value, (Mapping, list, tuple)):
            return value, 1
        ident = id(value)
        if ident in self.done:
            _, copy, size = self.done[ident]
            return copy, size
        if ident in self.open:
            raise _config_error(key, "the value contains itself (a recursive alias?)")
        if depth >= MAX_CONFIG_DEPTH:
            raise _config_error(key, _TOO_DEEP)
        self.open.add(ident)
        size = 1
        copy: Any
        if isinstance(value, Mapping):
            copy = {}
            for k, v in value.items():
                copy[k], n = self.convert(v, key + (k,), depth + 1)
                size += n
        else:
            copy = []
            for v in value:
                item, n = self.convert(v, key, depth + 1)
                copy.append(item)
                size += n
        if size > MAX_CONFIG_VALUES:
            raise _config_error(
                key,
                f"holds more than {MAX_CONFIG_VALUES} values once aliases are "
                "expanded; a model needs a few dozen",
            )
        self.open.discard(ident)
        self.done[ident] = (value, copy, size)
        return copy, size


def _repr(items: int, chars: int) -> reprlib.Repr:
    shorten = reprlib.Repr()  # keyword arguments need Python 3.12
    shorten.maxlevel = 2
    shorten.maxtuple = shorten.maxlist = shorten.maxdict = shorten.maxset = items
    shorten.maxstring = shorten.maxother = chars
    return shorten


#: `repr` for values echoed in messages: a few items, a few levels, short strings.
_REPR = _repr(items=4, chars=80)
#: `repr` for paths: whole, unless absurdly long.
_PATH_REPR = _repr(items=4, chars=1000)


def _shown(value: Any) -> str:
    """A value as messages show it: Python's repr, cut short."""
    return _REPR.repr(value)


def _shown_path(path: str | os.PathLike[str]) -> str:
    """A path as messages show it: quoted, control characters escaped."""
    return _PATH_REPR.repr(os.fspath(path))


class _Brief:
    """A container as `describe_error` shows it (with `repr`): cut short."""

    def __init__(self, value: Any) -> None:
        self.text = _shown(value)

    def __repr__(self) -> str:
        return self.text


def _label(key: Any) -> str:
    """A config key as a message names it: as is when it is printable text."""
    if isinstance(key, str) and key.isprintable() and len(key) <= 80:
        return key
    return _shown(key)


def _all_of(names: Sequence[str]) -> str:
    """'A', 'B' and 'C'."""
    return one_of(names).rsplit(" or ", 1)[0] + (
        f" and '{names[-1]}'" if len(names) > 1 else ""
    )


def _key_path(path: str | Sequence[str] | None) -> KeyPath:
    if path is None:
        return ()
    if isinstance(path, str):
        return tuple(part for part in path.split(".") if part)
    return tuple(str(part) for part in path)


def _dotted(key: KeyPath) -> str:
    return ".".join(_label(part) for part in key)


def _config_error(key: KeyPath, message: str) -> SpecError:
    text = f"{_dotted(key)}: {message}" if key else message
    return SpecError([Diagnostic(text)], filename=CONFIG_FILENAME)


# -- JSON Schema -----------------------------------------------------------------------

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the IR's dict form, strict: no unknown key anywhere.

    `extra="forbid"` already gives `additionalProperties: false` on every object;
    enforcing it here keeps the schema strict even if a node forgets. The rules that
    tie fields together (peephole needs lstm, ...) are left to rnnspec itself.
    """
    body = ModelSpec.model_json_schema()

    def strict(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" or "properties" in node:
                node["additionalProperties"] = False
            for value in node.values():
                strict(value)
        elif isinstance(node, list):
            for value in node:
                strict(value)

    strict(body)
    properties = body["properties"]
    # What each field means, for editors that show descriptions on hover: from the
    # statement table, the one source of the language's documentation.
    for name, text in field_help().items():
        if name in properties:
            properties[name]["description"] = text
    _describe_nodes(body)
    # Keys `from_config` ignores, so that editors accept JSON files that name their
    # schema and Hydra config-group files that name their target.
    properties["$schema"] = {
        "type": "string",
        "description": "Where this schema is, for editors; ignored by rnnspec.",
    }
    properties["_target_"] = {
        "enum": ["rnnspec.from_config"],
        "description": "For hydra.utils.instantiate; ignored by rnnspec.",
    }
    body.pop("title", None)
    body.pop("description", None)
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "title": "rnnspec model",
        "description": (
            "One rnnspec model in the dict form experiment configs use "
            "(rnnspec.ModelSpec); rnnspec.from_config builds it."
        ),
        **body,
    }


def _describe_nodes(body: dict[str, Any]) -> None:
    """The fields of `input`, `attention` and `head`'s objects, described by kind."""
    for keyword in ("input", "attention", "head"):
        node = body["properties"][keyword]
        refs: dict[str | None, str] = {}  # kind (None: every kind) → its definition
        for alternative in (node, *node.get("anyOf", ())):
            refs.update(alternative.get("discriminator", {}).get("mapping", {}))
            if "$ref" in alternative:
                refs[None] = alternative["$ref"]
        for kind, ref in refs.items():
            definition = body["$defs"][ref.rsplit("/", 1)[-1]]
            for name, field in definition["properties"].items():
                text = node_help(keyword, kind, name)
                if text:
                    field["description"] = text
