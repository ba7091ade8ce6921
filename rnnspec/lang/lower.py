"""Statements → IR (stage 3): the statement table, and errors mapped back to positions.

Each statement becomes a field (or a nested object) of the dict form; the dict is
validated by `ModelSpec`, and every pydantic error is translated into a compiler
diagnostic at the statement, value or option it came from.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from rnnspec.lang.blame import with_notes
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
from rnnspec.lang.link import Linked, Merged, SourceFile, link
from rnnspec.lang.overrides import (
    Override,
    apply_override,
    override_texts,
    parse_overrides,
    pseudo_file,
)
from rnnspec.lang.printer import SCALAR_OPTIONS
from rnnspec.lang.rules import REGULARIZERS
from rnnspec.lang.syntax import ModelBlock, Option, Statement, Value

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
        dataclasses.replace(first.span, end=extra[-1].span.end),
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


# -- a program: a file, its imports, overrides -------------------------------------


@dataclass
class Resolved:
    """One model of a program, validated, with where each of its values came from:
    `lowered.spans` holds the span of every value written (in any file, or in the
    overrides' pseudo-file), `merged.owner` which model wrote each statement."""

    spec: ModelSpec
    lowered: Lowered
    merged: Merged
    file: SourceFile

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass
class Program:
    """A spec file compiled with everything that went into it."""

    main: SourceFile
    files: list[SourceFile]  # the main file first, then every file it imports
    models: list[Resolved]  # the main file's models, in order
    imported: list[Resolved]  # the imported files' models, imports first
    overrides: list[Override]
    label: str  # how the overrides are named: `--set` on the command line

    @property
    def specs(self) -> list[ModelSpec]:
        return [model.spec for model in self.models]


def load(
    source: str,
    filename: str = "<spec>",
    *,
    path: Path | None = None,
    base_dir: str | os.PathLike[str] | None = None,
    overrides: Iterable[str] | Mapping[str, Any] | None = None,
    label: str = "override",
    model: str | None = None,
) -> Program:
    """Compile `source` (the file `filename`, read from `path` if from a file), the
    files it imports (relative to `base_dir`: by default `path`'s folder, else the
    working directory) and the `overrides` (see `rnnspec.lang.overrides`; one that
    names no model is for `model`, or for the file's only model).

    `SpecError` lists every problem, in whichever file (or override) it is.
    """
    linked = link(source, filename, path=path, base_dir=base_dir)
    main = linked.main
    texts = override_texts(overrides)
    names = [block.name for block in main.models]
    parsed, errors = parse_overrides(texts, names, label, filename, model)
    failed: set[int] = set()
    compiled: dict[int, Resolved] = {}
    for file in linked.files:  # imports before the files importing them
        mine = parsed if file is main else []
        errors += _compile_file(file, linked, mine, label, failed, compiled)
    errors = linked.errors + errors  # linking errors include unknown bases, found now
    if not main.models and not errors:
        errors.append(Diagnostic("no model in spec; expected 'model NAME { ... }'"))
    files = [main] + [file for file in linked.files if file is not main]
    if errors:
        sources = {file.name: file.text for file in files}
        if texts:
            sources[label] = pseudo_file(texts, label)
        raise SpecError(
            errors,
            source=main.text,
            filename=filename,
            sources=sources,
            arguments=[label] if texts else [],
        )
    models = [compiled[id(block)] for block in main.models]
    imported = [
        compiled[id(block)]
        for file in linked.files
        if file is not main
        for block in file.models
    ]
    return Program(main, files, models, imported, parsed, label)


def load_file(
    path: str | os.PathLike[str],
    *,
    filename: str | None = None,
    overrides: Iterable[str] | Mapping[str, Any] | None = None,
    label: str = "override",
    model: str | None = None,
) -> Program:
    """`load` of the spec file at `path` (named `filename` in messages; default: the
    path as given). `OSError` when it cannot be read."""
    from rnnspec.lang.source import read_spec_file

    name = os.fspath(path) if filename is None else filename
    text = read_spec_file(path, filename=name)
    return load(
        text, name, path=Path(path), overrides=overrides, label=label, model=model
    )


def _compile_file(
    file: SourceFile,
    linked: Linked,
    overrides: list[Override],
    label: str,
    failed: set[int],
    compiled: dict[int, Resolved],
) -> list[Diagnostic]:
    """Validate every model of `file`; a model whose base failed is skipped (the
    base's errors say why)."""
    errors: list[Diagnostic] = []
    seen: dict[str, int] = {}
    for block in file.models:
        if block.name in seen:
            errors.append(
                Diagnostic.at(
                    block.name_span,
                    f"duplicate model '{block.name}'; "
                    f"first defined on line {seen[block.name]}",
                )
            )
        seen.setdefault(block.name, block.span.line)
        merged = linked.merged(block)
        if merged is None or any(id(base) in failed for base in merged.chain[1:]):
            failed.add(id(block))
            continue
        mine = [o for o in overrides if o.model == block.name]
        lowered, spec = _compile(merged.block, mine, label)
        # A line that failed to parse may cause follow-on complaints (a statement
        # that seems missing, say): keep only what the syntax errors cannot explain.
        found = [
            d
            for d in lowered.errors
            if not (d.file == file.name and d.line in file.error_lines)
            and not (file.error_lines and d.message.startswith("missing required"))
        ]
        if spec is None:
            failed.add(id(block))

            attempt = functools.partial(_attempt, merged.block, label)
            errors += with_notes(found, merged, mine, label, attempt)
        else:
            compiled[id(block)] = Resolved(spec, lowered, merged, file)
    return errors


def _compile(
    block: ModelBlock, overrides: list[Override], label: str
) -> tuple[Lowered, ModelSpec | None]:
    lowered = lower_block(block)
    for override in overrides:
        problem = apply_override(override, lowered.data, lowered.spans, label)
        if problem is not None:
            lowered.errors.append(problem)
    return lowered, validate_block(lowered)


def _attempt(
    block: ModelBlock, label: str, statements: list[Statement], kept: list[Override]
) -> list[Diagnostic]:
    """The errors of `block` with only `statements` and the overrides `kept`."""
    variant = dataclasses.replace(block, statements=statements)
    return _compile(variant, kept, label)[0].errors


def parse(
    source: str,
    filename: str = "<spec>",
    *,
    base_dir: str | os.PathLike[str] | None = None,
    overrides: Iterable[str] | Mapping[str, Any] | None = None,
    model: str | None = None,
) -> list[ModelSpec]:
    """Spec text → a `ModelSpec` per model block; `SpecError` lists every problem.

    A leading byte-order mark is skipped; LF, CRLF and a lone CR all end a line.
    Imports are read relative to `base_dir` (default: the working directory);
    `overrides` and `model` are `load`'s.
    """
    program = load(
        source, filename, base_dir=base_dir, overrides=overrides, model=model
    )
    return program.specs
