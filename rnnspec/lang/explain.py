"""`rnnspec explain`: every field of a resolved model, its value and its origin.

A value comes from its default, from a statement of the model (`file:line`), from a
statement it inherits (`extends Base at base.rnn:4`), or from an override
(`--set Wide.hidden=1024`). Read off the spans lowering kept for every value written
(`Lowered.spans`) and the owner of each statement (`Merged.owner`): nothing is
re-parsed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rnnspec.lang.diagnostics import Span
from rnnspec.lang.lower import Program, Resolved
from rnnspec.lang.printer import format_value

#: Statements that are nested objects in the dict form.
_NESTED = ("input", "attention", "head")


@dataclass(frozen=True)
class Row:
    """One field: its dotted name in the dict form, its value, where it came from."""

    field: str
    value: str
    origin: str


def shown_value(value: Any) -> str:
    return "none" if value is None else format_value(value)


def where(resolved: Resolved) -> str:
    """Where the model is defined, and what it extends: `wide.rnn:3, extends Base
    at base.rnn:2`."""
    block = resolved.merged.source
    text = f"{resolved.file.name}:{block.span.line}"
    for base in resolved.merged.chain[1:]:
        text += f", extends {base.name} at {base.span.file}:{base.span.line}"
    return text


def rows(resolved: Resolved, program: Program) -> list[Row]:
    """Every field of the model but its name, in the IR's order."""
    spec = resolved.spec
    out: list[Row] = []
    for name in type(spec).model_fields:
        if name == "name":
            continue
        value = getattr(spec, name)
        if name in _NESTED and value is not None:
            for sub in type(value).model_fields:
                loc = (name, sub)
                out.append(
                    Row(
                        f"{name}.{sub}",
                        shown_value(getattr(value, sub)),
                        origin(resolved, program, loc),
                    )
                )
            continue
        out.append(Row(name, shown_value(value), origin(resolved, program, (name,))))
    return out


def origin(resolved: Resolved, program: Program, loc: tuple[str, ...]) -> str:
    """'default', 'file:line', 'extends Base at file:line' or the override."""
    span = resolved.lowered.spans.get(loc)
    if span is None and loc[-1] == "kind":
        span = resolved.lowered.spans.get(loc[:1])
    if span is None:
        return "default"
    if span.file == program.label:
        return program.overrides[span.line - 1].shown(program.label)
    return _statement_origin(resolved, span)


def _statement_origin(resolved: Resolved, span: Span) -> str:
    merged = resolved.merged
    here = f"{span.file or resolved.file.name}:{span.line}"
    statement = merged.statement_at(span)
    if statement is None or merged.owner(statement) is merged.source:
        return here
    owner, parent = merged.owner(statement), merged.chain[1]
    if owner is parent:
        return f"extends {owner.name} at {here}"
    return f"extends {parent.name}, from {owner.name} at {here}"
