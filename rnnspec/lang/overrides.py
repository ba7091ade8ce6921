"""Overrides: `--set Wide.hidden=1024 --set Wide.attention.mask=strict`.

An override is `[MODEL.]STATEMENT[.OPTION]=VALUE`: the model may be left out when the
file defines one model; `OPTION` is an option of the statement as a spec writes it
(`dropout.locked`, `cell.nonlinearity`, `zoneout.cell`, `attention.mask`), or a
field of a nested statement's object (`input.vocab`, `head.size`); `input=tokens`,
`attention=general` set a nested statement's kind (`attention=none` removes it). A
dict-form field name (`dropout_locked`) works too. VALUE is read as a spec reads a
value: an integer, a number, `true`/`false`, or a word.

An override replaces one value of the model as resolved (after `extends`), before it
is validated: it is checked like a written value, and a problem with it is reported at
the `--set` argument (a pseudo-file whose lines are the arguments).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rnnspec.lang.diagnostics import Diagnostic, Span, did_you_mean, one_of
from rnnspec.lang.ir import ModelSpec
from rnnspec.lang.printer import SCALAR_OPTIONS
from rnnspec.lang.syntax import MAX_DIGITS, Scalar

#: Statements that are a nested object in the dict form, with a kind first.
NESTED = ("input", "attention", "head")
#: The statements an override may name (everything but the model's name).
NAMES = tuple(name for name in ModelSpec.model_fields if name != "name")

# The grammar's literals (grammars/rnnspec.lark), for values given as text.
_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?([0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)([eE][+-]?[0-9]+)?")


@dataclass(frozen=True)
class Override:
    """One `--set` argument, read: which model, which dict-form location, what value.

    `line` is its place among the arguments (1-based): the line of the pseudo-file
    diagnostics point into; the spans are columns of `label + " " + text`.
    """

    text: str
    line: int
    model: str
    loc: tuple[str, ...]
    value: Scalar
    key_span: Span
    value_span: Span
    path: str = ""  # the key after the model, as written: `attention.mask`

    def shown(self, label: str) -> str:
        return f"{label} {self.text}"

    @property
    def canonical(self) -> str:
        """`MODEL.PATH=VALUE`, the model named even where the text leaves it out."""
        return f"{self.model}.{self.path}={self.text.partition('=')[2]}"


def scalar(text: str) -> Scalar:
    """A value as the spec language reads it."""
    if text in ("true", "false"):
        return text == "true"
    if _INT.fullmatch(text) and len(text.lstrip("+-")) <= MAX_DIGITS:
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    return text


def override_texts(overrides: Iterable[str] | Mapping[str, Any] | None) -> list[str]:
    """`["Wide.hidden=1024"]` or `{"Wide.hidden": 1024}` → the argument texts."""
    if overrides is None:
        return []
    if isinstance(overrides, str):
        return [overrides]
    if isinstance(overrides, Mapping):
        return [f"{key}={_text(value)}" for key, value in overrides.items()]
    return [str(item) for item in overrides]


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_overrides(
    texts: Sequence[str],
    models: Sequence[str],
    label: str,
    spec: str,
    default: str | None = None,
) -> tuple[list[Override], list[Diagnostic]]:
    """Read every argument against the models of the file `spec`; problems with the
    arguments themselves (no `=`, unknown model or statement) as diagnostics. An
    argument naming no model is for `default`, or for the file's only model."""
    found: list[Override] = []
    errors: list[Diagnostic] = []
    for line, text in enumerate(texts, start=1):
        result = _parse_one(text, line, models, label, spec, default)
        if isinstance(result, Override):
            found.append(result)
        else:
            errors.append(result)
    return found, errors


def _parse_one(
    text: str,
    line: int,
    models: Sequence[str],
    label: str,
    spec: str,
    default: str | None,
) -> Override | Diagnostic:
    start = len(label) + 2  # the column after `label `

    def at(column: int, end: int, message: str) -> Diagnostic:
        return Diagnostic.at(Span(line, start + column, start + end, label), message)

    key, equals, value = text.partition("=")
    if not equals or not key:
        return at(0, len(text), "expected [MODEL.]STATEMENT[.OPTION]=VALUE")
    if not value:
        return at(len(text), len(text) + 1, f"'{key}' needs a value after '='")
    parts = key.split(".")
    if not all(parts):
        return at(0, len(key), f"'{key}' is not a dotted name")
    model, path, offset = _model_of(parts, models, default)
    if model is None:
        return _which_model(parts, models, spec, at)
    if model not in models:
        width = len(model)
        return at(0, width, f"no model '{model}' in {spec}{_hint(model, models)}")
    loc = _location(path)
    key_span = Span(line, start + offset, start + len(key), label)
    value_span = Span(line, start + len(key) + 1, start + len(text), label)
    if isinstance(loc, str):
        return Diagnostic.at(key_span, loc)
    return Override(
        text, line, model, loc, scalar(value), key_span, value_span, ".".join(path)
    )


def _model_of(
    parts: list[str], models: Sequence[str], default: str | None
) -> tuple[str | None, list[str], int]:
    """(the model named, the rest of the path, its column offset in the key)."""
    first = parts[0]
    if len(parts) >= 2 and (first in models or first not in NAMES):
        return first, parts[1:], len(first) + 1
    if default is not None:
        return default, parts, 0
    if len(models) == 1:
        return models[0], parts, 0
    return None, parts, 0


def _which_model(parts, models, spec, at) -> Diagnostic:
    key = ".".join(parts)
    example = f"{models[0]}.{key}" if models else key
    return at(
        0,
        len(key),
        f"{spec} defines {len(models)} models ({', '.join(models)}); name one: "
        f"{example}",
    )


def _hint(word: str, choices: Sequence[str]) -> str:
    return did_you_mean(word, choices) or f"; it defines {one_of(choices)}"


def _location(path: list[str]) -> tuple[str, ...] | str:
    """The dict-form location of a statement path, or why there is none."""
    keyword, rest = path[0], path[1:]
    if keyword == "name":
        return "the model's name cannot be overridden"
    if keyword not in NAMES:
        hint = did_you_mean(keyword, NAMES)
        return f"unknown statement '{keyword}'{hint}"
    if not rest:
        return (keyword, "kind") if keyword in NESTED else (keyword,)
    if len(rest) > 1:
        return f"'{'.'.join(path)}' is too deep: STATEMENT.OPTION at most"
    option = rest[0]
    if keyword in NESTED:
        return (keyword, option)
    if keyword == "cell":
        if option != "nonlinearity":
            return f"unknown option '{option}' for 'cell'" + did_you_mean(
                option, ["nonlinearity"]
            )
        return ("nonlinearity",)
    options = SCALAR_OPTIONS.get(keyword)
    if not options:
        return f"'{keyword}' takes no options"
    if option not in options:
        return f"unknown option '{option}' for '{keyword}'" + did_you_mean(
            option, list(options)
        )
    return (options[option],)


def apply_override(
    override: Override,
    data: dict[str, Any],
    spans: dict[tuple[str, ...], Span],
    label: str,
) -> Diagnostic | None:
    """Set the value in `data` (a model's dict form) and its span in `spans`."""
    loc, value = override.loc, override.value
    if len(loc) == 1:
        data[loc[0]] = value
        spans[loc] = override.value_span
        return None
    keyword, field = loc
    node = data.get(keyword)
    if field == "kind":
        if value == "none" and keyword != "input":
            data[keyword] = None
            spans[(keyword,)] = override.value_span
            return None
        if not isinstance(node, dict):
            spans[(keyword,)] = override.value_span
            node = {}
        data[keyword] = {**node, "kind": value}
        spans[(keyword, "kind")] = override.value_span
        return None
    if not isinstance(node, dict):
        return Diagnostic.at(
            override.key_span,
            f"model {override.model} has no '{keyword}' to set '{field}' in; "
            f"give it one first: {label} {override.model}.{keyword}=KIND",
        )
    data[keyword] = {**node, field: value}
    spans[loc] = override.value_span
    spans[(keyword, "@" + field)] = override.key_span
    return None


def pseudo_file(overrides: Sequence[str], label: str) -> str:
    """The text diagnostics about overrides point into: one argument a line."""
    return "\n".join(f"{label} {text}" for text in overrides)
