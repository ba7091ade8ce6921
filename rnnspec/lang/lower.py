"""Statements → IR (stage 3): the statement table, and errors mapped back to positions.

Each statement becomes a field (or a nested object) of the dict form; the dict is
validated by `ModelSpec`, and every pydantic error is translated into a compiler
diagnostic at the statement, value or option it came from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from rnnspec.lang.diagnostics import (
    Diagnostic,
    Span,
    SpecError,
    did_you_mean,
    one_of,
    printable,
)
from rnnspec.lang.ir import (
    CELL_OPTIONS,
    RECURRENT_ONLY,
    ModelSpec,
    cross_field_problems,
)
from rnnspec.lang.printer import SCALAR_OPTIONS
from rnnspec.lang.rules import REGULARIZERS
from rnnspec.lang.source import spec_text
from rnnspec.lang.syntax import ModelBlock, Option, Statement, Value, parse_syntax

#: Statements taking exactly one value: keyword == field name. Only those in
#: `SCALAR_OPTIONS` take options, each a top-level field of its own.
SCALAR_STATEMENTS = (
    "hidden",
    "layers",
    "directions",
    "peephole",
    *CELL_OPTIONS,
    "bias",
    "dropout",
    *REGULARIZERS,
    "packing",
    "batch_first",
    "impl",
    "encoder",
    "tracker",
)
#: Statements with a kind word first and a nested object in the IR.
NESTED_STATEMENTS = ("input", "attention", "head")
STATEMENTS = ("cell", *SCALAR_STATEMENTS, *NESTED_STATEMENTS)

#: Second positional value of a nested statement, by kind.
_SIZE_FIELD = {
    ("input", "features"): "size",
    ("input", "tokens"): "vocab",
    ("head", "linear"): "size",
    ("head", "classes"): "size",
}


@dataclass
class Lowered:
    """A model block as the dict form, with where each field was written."""

    block: ModelBlock
    data: dict[str, Any] = field(default_factory=dict)
    spans: dict[tuple[str, ...], Span] = field(default_factory=dict)
    statements: dict[str, Statement] = field(default_factory=dict)
    errors: list[Diagnostic] = field(default_factory=list)

    def error(self, span: Span | None, message: str) -> None:
        self.errors.append(Diagnostic.at(span, message))

    def span_of(self, loc: tuple[str, ...]) -> Span:
        """The most specific place written for `loc`; the model line if none."""
        for end in range(len(loc), 0, -1):
            if loc[:end] in self.spans:
                return self.spans[loc[:end]]
        return self.block.span


def _split(statement: Statement, lowered: Lowered) -> tuple[list[Value], list[Option]]:
    """Positional values and options; a value after an option is an error."""
    values: list[Value] = []
    options: list[Option] = []
    for argument in statement.arguments:
        if isinstance(argument, Option):
            options.append(argument)
        elif options:
            lowered.error(
                argument.span,
                f"value '{argument.text}' after an option; "
                "write values first, then key=value options",
            )
        else:
            values.append(argument)
    return values, options


def _too_many(
    lowered: Lowered, statement: Statement, extra: list[Value], n: int
) -> None:
    first = extra[0]
    what = f"{n} value" + ("s" if n != 1 else "")
    lowered.error(
        Span(first.span.line, first.span.column, extra[-1].span.end),
        f"'{statement.keyword}' takes {what}; unexpected '{first.text}'",
    )


def _lower_statement(statement: Statement, lowered: Lowered) -> None:
    """One statement into the dict form, by its shape: scalar, `cell`, or nested."""
    values, options = _split(statement, lowered)
    if not values:
        lowered.error(statement.span, f"'{statement.keyword}' needs a value")
    elif statement.keyword in SCALAR_STATEMENTS:
        _lower_scalar(statement, values, options, lowered)
    elif statement.keyword == "cell":
        _lower_cell(statement, values, options, lowered)
    else:  # `input`, `attention`, `head`
        _lower_nested(statement, values, options, lowered)


def _lower_scalar(
    statement: Statement, values: list[Value], options: list[Option], lowered: Lowered
) -> None:
    """`hidden 128`: one value; `zoneout 0.1 cell=0.2`: its options are fields."""
    keyword, kind = statement.keyword, values[0]
    if len(values) > 1:
        _too_many(lowered, statement, values[1:], 1)
    allowed = SCALAR_OPTIONS.get(keyword, {})
    for option in options:
        field_name = allowed.get(option.key)
        if not allowed:
            lowered.error(option.key_span, f"'{keyword}' takes no options")
        elif field_name is None:
            hint = did_you_mean(option.key, list(allowed))
            lowered.error(
                option.key_span, f"unknown option '{option.key}' for '{keyword}'{hint}"
            )
        elif field_name in lowered.data:
            lowered.error(option.key_span, f"option '{option.key}' given twice")
        else:
            lowered.data[field_name] = option.value.value
            lowered.spans[(field_name,)] = option.value.span
    lowered.data[keyword] = kind.value
    lowered.spans[(keyword,)] = kind.span


def _lower_cell(
    statement: Statement, values: list[Value], options: list[Option], lowered: Lowered
) -> None:
    """`cell rnn nonlinearity=relu`: the option is the top-level `nonlinearity`."""
    kind = values[0]
    if len(values) > 1:
        _too_many(lowered, statement, values[1:], 1)
    lowered.data["cell"] = kind.value
    lowered.spans[("cell",)] = kind.span
    for option in options:
        if option.key != "nonlinearity":
            hint = did_you_mean(option.key, ["nonlinearity"])
            lowered.error(
                option.key_span, f"unknown option '{option.key}' for 'cell'{hint}"
            )
            continue
        lowered.data["nonlinearity"] = option.value.value
        lowered.spans[("nonlinearity",)] = option.value.span


def _lower_nested(
    statement: Statement, values: list[Value], options: list[Option], lowered: Lowered
) -> None:
    """`head linear 12 dropout=0.1` → {"kind": "linear", "size": 12, "dropout": 0.1}."""
    keyword, kind = statement.keyword, values[0]
    if keyword in ("attention", "head") and kind.value == "none":
        if len(values) > 1:
            _too_many(lowered, statement, values[1:], 1)
        for option in options:
            lowered.error(option.key_span, f"'{keyword} none' takes no options")
        lowered.data[keyword] = None
        lowered.spans[(keyword,)] = kind.span
        return
    node: dict[str, Any] = {"kind": kind.value}
    lowered.spans[(keyword,)] = statement.span
    lowered.spans[(keyword, "kind")] = kind.span
    size_field = _SIZE_FIELD.get((keyword, str(kind.value)))
    allowed = 2 if size_field else 1
    if len(values) > allowed:
        _too_many(lowered, statement, values[allowed:], allowed)
    if size_field and len(values) > 1:
        node[size_field] = values[1].value
        lowered.spans[(keyword, size_field)] = values[1].span
    for option in options:
        if option.key in node:
            lowered.error(option.key_span, f"option '{option.key}' given twice")
            continue
        node[option.key] = option.value.value
        lowered.spans[(keyword, option.key)] = option.value.span
        lowered.spans[(keyword, "@" + option.key)] = option.key_span
    lowered.data[keyword] = node


def lower_block(block: ModelBlock) -> Lowered:
    """Statements → dict form, with the problems a single statement shows."""
    lowered = Lowered(block, data={"name": block.name})
    lowered.spans[("name",)] = block.name_span
    for statement in block.statements:
        keyword = statement.keyword
        if keyword not in STATEMENTS:
            hint = did_you_mean(keyword, STATEMENTS)
            lowered.error(statement.span, f"unknown statement '{keyword}'{hint}")
            continue
        if keyword in lowered.statements:
            first = lowered.statements[keyword].line
            lowered.error(
                statement.span,
                f"duplicate statement '{keyword}'; first given on line {first}",
            )
            continue
        lowered.statements[keyword] = statement
        _lower_statement(statement, lowered)
    if lowered.data.get("encoder") == "spinn":
        for keyword in RECURRENT_ONLY:
            if keyword in lowered.statements:
                lowered.error(
                    lowered.statements[keyword].span,
                    f"'{keyword}' does not apply to encoder spinn",
                )
                lowered.data.pop(keyword, None)
                for name in SCALAR_OPTIONS.get(keyword, {}).values():
                    lowered.data.pop(name, None)
    return lowered


# -- pydantic errors → messages ----------------------------------------------------


def _field_label(loc: tuple) -> str:
    return str(loc[-1]) if loc else "value"


def _choices(ctx: Mapping[str, Any]) -> list[str]:
    import re

    expected = str(ctx.get("expected", ""))
    # Literal strings come quoted ("'a' or 'b'"); literal ints do not ("1 or 2").
    return re.findall(r"'([^']*)'", expected) or re.split(r", | or ", expected)


#: pydantic error types whose sentence needs only the field, the value and the ctx.
_MESSAGES = {
    "greater_than_equal": "{name} must be ≥ {ge}, got {shown}",
    "greater_than": "{name} must be > {gt}, got {shown}",
    "less_than": "{name} must be < {lt}, got {shown}",
    "less_than_equal": "{name} must be ≤ {le}, got {shown}",
    "int_type": "{name} must be an integer, got {shown}",
    "int_parsing": "{name} must be an integer, got {shown}",
    "int_from_float": "{name} must be an integer, got {shown}",
    "float_type": "{name} must be a number, got {shown}",
    "float_parsing": "{name} must be a number, got {shown}",
    "finite_number": "{name} must be a finite number, got {shown}",
    "bool_type": "{name} must be true or false, got {shown}",
    "bool_parsing": "{name} must be true or false, got {shown}",
    "string_type": "{name} must be a word, got {shown}",
    "model_type": "{name} must be a mapping, got {shown}",
    "model_attributes_type": "{name} must be a mapping, got {shown}",
    "dict_type": "{name} must be a mapping, got {shown}",
}


def describe_error(error: Mapping[str, Any], loc: tuple[str, ...]) -> str:
    """A pydantic error as one readable sentence (no pydantic wording leaks)."""
    kind = error["type"]
    ctx = error.get("ctx") or {}
    value = error.get("input")
    name = _field_label(loc)
    shown = _show(value)
    top = len(loc) == 1
    if kind == "missing":
        if top:
            return f"missing required statement '{name}'"
        return f"missing value for '{name}' in '{loc[0]}'"
    if kind == "extra_forbidden":
        if top:
            hint = did_you_mean(name, ModelSpec.model_fields)
            return f"unknown statement '{name}'{hint}"
        return f"unknown option '{name}' for '{' '.join(loc[:-1])}'"
    template = _MESSAGES.get(kind)
    if template:
        return template.format(name=name, shown=shown, **ctx)
    if kind == "literal_error":
        choices = _choices(ctx)
        hint = did_you_mean(str(value), choices)
        return f"unknown {name} {shown}{hint or '; expected ' + one_of(choices)}"
    if kind == "union_tag_invalid":
        choices = _choices({"expected": ctx.get("expected_tags", "")})
        hint = did_you_mean(str(ctx.get("tag")), choices)
        tag = _show(ctx.get("tag"))
        return f"unknown {loc[0]} kind {tag}{hint or '; expected ' + one_of(choices)}"
    if kind == "union_tag_not_found":
        return f"'{name}' needs a 'kind'"
    message = str(error.get("msg", kind))
    return message.removeprefix("Value error, ")


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"'{printable(value)}'"
    if isinstance(value, int) and value.bit_length() > 400:
        return f"a {value.bit_length()}-bit number"  # repr fails past 4300 digits
    return repr(value)


_DISCRIMINATED = {
    "input": ("features", "tokens"),
    "head": ("logits", "linear", "classes"),
}


def clean_loc(loc: tuple) -> tuple[str, ...]:
    """Drop pydantic's union tag: ('input', 'tokens', 'embed') → ('input', 'embed')."""
    parts = [str(p) for p in loc]
    if len(parts) >= 2 and parts[1] in _DISCRIMINATED.get(parts[0], ()):
        del parts[1]
    return tuple(parts)


def _error_span(lowered: Lowered, loc: tuple[str, ...], kind: str) -> Span:
    if kind == "extra_forbidden" and len(loc) == 2:
        key_span = lowered.spans.get((loc[0], "@" + loc[1]))
        if key_span:
            return key_span
    if kind == "missing" and len(loc) == 2 and (loc[0],) in lowered.spans:
        return lowered.spans[(loc[0],)]
    return lowered.span_of(loc)


def _extra_hint(loc: tuple[str, ...], data: Mapping[str, Any]) -> str:
    """did-you-mean for an unknown option of a nested statement."""
    from rnnspec.lang import ir

    node = data.get(loc[0])
    kind = node.get("kind") if isinstance(node, Mapping) else None
    classes = {
        ("input", "features"): ir.FeaturesInput,
        ("input", "tokens"): ir.TokensInput,
        ("attention", None): ir.AttentionSpec,
        ("head", "logits"): ir.LogitsHead,
        ("head", "linear"): ir.LinearHead,
        ("head", "classes"): ir.ClassesHead,
    }
    cls = classes.get((loc[0], kind)) or classes.get((loc[0], None))
    if cls is None:
        return ""
    return did_you_mean(loc[-1], [f for f in cls.model_fields if f != "kind"])


#: Fields set by an option of a one-value statement, named as the text writes them.
_TEXT_NAMES = {
    (name,): (keyword, key)
    for keyword, options in SCALAR_OPTIONS.items()
    for key, name in options.items()
}


def validate_block(lowered: Lowered) -> ModelSpec | None:
    """Validate the dict form; all problems land in `lowered.errors`."""
    problems: list[tuple[tuple[str, ...], str]] = []
    try:
        spec = ModelSpec.model_validate(lowered.data, context={"problems": problems})
    except ValidationError as exc:
        spec = None
        bad_fields = set()
        for error in exc.errors():
            loc = clean_loc(error["loc"])
            bad_fields.add(loc[0] if loc else "")
            message = describe_error(error, _TEXT_NAMES.get(loc, loc))
            if error["type"] == "extra_forbidden" and len(loc) == 2:
                message += _extra_hint(loc, lowered.data)
                if loc[0] in lowered.statements:
                    kind = lowered.data[loc[0]].get("kind")
                    message = f"unknown option '{loc[1]}' for '{loc[0]} {kind}'"
                    message += _extra_hint(loc, lowered.data)
            lowered.error(_error_span(lowered, loc, error["type"]), message)
        partial = {k: v for k, v in lowered.data.items() if k not in bad_fields}
        problems = cross_field_problems(partial, frozenset(bad_fields))
    for loc, message in problems:
        lowered.error(lowered.span_of(loc), message)
    return spec if not lowered.errors else None


def parse(source: str, filename: str = "<spec>") -> list[ModelSpec]:
    """Spec text → a `ModelSpec` per model block; `SpecError` lists every problem.

    A leading byte-order mark is skipped; LF, CRLF and a lone CR all end a line.
    """
    source = spec_text(source)
    blocks, errors = parse_syntax(source)
    error_lines = {d.line for d in errors}
    specs: list[ModelSpec] = []
    seen: dict[str, int] = {}
    for block in blocks:
        lowered = lower_block(block)
        spec = validate_block(lowered)
        # A line that failed to parse may cause follow-on complaints (a statement
        # that seems missing, say): keep only what the syntax errors cannot explain.
        errors.extend(
            d
            for d in lowered.errors
            if d.line not in error_lines
            and not (error_lines and d.message.startswith("missing required"))
        )
        if block.name in seen:
            errors.append(
                Diagnostic.at(
                    block.name_span,
                    f"duplicate model '{block.name}'; "
                    f"first defined on line {seen[block.name]}",
                )
            )
        seen.setdefault(block.name, block.span.line)
        if spec is not None:
            specs.append(spec)
    if not blocks and not errors:
        errors.append(Diagnostic("no model in spec; expected 'model NAME { ... }'"))
    if errors:
        raise SpecError(errors, source=source, filename=filename)
    return specs
