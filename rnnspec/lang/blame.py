"""Naming both places: the statement that is invalid, and what made it so.

A model that extends another, or has overrides, takes its statements from several
places: its own block, its bases' blocks (maybe in imported files) and the `--set`
arguments. A problem is reported where its statement is written; when the model took
statements from elsewhere too, the statements from the *other* places that cause it
are found by trying the model without each of them (exact, and cheap: a model has a
few dozen statements, and this runs only on errors): those without which the
problem goes away or reads differently (`got cell gru` → `got cell rnn`) are named in
notes:

    base.rnn:4:16: error: 'peephole true' needs cell lstm, got cell gru (in model
    Wide, which extends Base)
    wide.rnn:4:5: note: model Wide overrides 'cell' here
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from rnnspec.lang.diagnostics import Diagnostic, Span
from rnnspec.lang.link import Merged
from rnnspec.lang.overrides import Override
from rnnspec.lang.syntax import Statement

#: Errors of one model given notes, and the most statements tried for each.
MAX_BLAMED = 5
MAX_CANDIDATES = 64

#: Errors of the model compiled without some statements and overrides.
Attempt = Callable[[list[Statement], list[Override]], list[Diagnostic]]


def with_notes(
    errors: list[Diagnostic],
    merged: Merged,
    overrides: list[Override],
    label: str,
    attempt: Attempt,
) -> list[Diagnostic]:
    """`errors` of the model `merged`, each with notes naming what causes it from
    elsewhere, and, when it is in an inherited statement, which model it is in."""
    if len(merged.chain) == 1 and not overrides:
        return errors
    out = []
    for index, diag in enumerate(errors):
        if index < MAX_BLAMED:
            diag = _blamed(diag, merged, overrides, label, attempt)
        out.append(diag)
    return out


def _group(item: Statement | Override, merged: Merged) -> str:
    if isinstance(item, Override):
        return "override"
    return "own" if merged.owner(item) is merged.source else "inherited"


def _where(diag: Diagnostic, merged: Merged, label: str) -> str | None:
    """Which place `diag` is in: 'own', 'inherited', 'override', or None."""
    if diag.file == label:
        return "override"
    at = Span(diag.line, diag.column, diag.column + diag.width, diag.file)
    statement = merged.statement_at(at)
    return None if statement is None else _group(statement, merged)


def _blamed(
    diag: Diagnostic,
    merged: Merged,
    overrides: list[Override],
    label: str,
    attempt: Attempt,
) -> Diagnostic:
    place = _where(diag, merged, label)
    if place is None:
        return diag
    statements = merged.block.statements
    candidates: list[Statement | Override] = [
        item for item in [*statements, *overrides] if _group(item, merged) != place
    ][:MAX_CANDIDATES]
    notes = []
    for item in candidates:
        if isinstance(item, Override):
            found = attempt(statements, [o for o in overrides if o is not item])
        else:
            found = attempt([s for s in statements if s is not item], overrides)
        if _gone_or_changed(diag, found):
            notes.append(_note(item, merged))
    message = diag.message
    if place == "inherited":
        source = merged.source
        message += f" (in model {source.name}, which extends {source.base})"
    return dataclasses.replace(diag, message=message, notes=tuple(notes))


def _gone_or_changed(diag: Diagnostic, found: list[Diagnostic]) -> bool:
    """Whether `diag` is gone from `found`, or there reading differently: the same
    problem (its first two words the same) with other values. Another problem in
    its place (an option of a statement no longer there) does not count."""
    place = (diag.file, diag.line, diag.column)
    here = [d.message for d in found if (d.file, d.line, d.column) == place]
    if not here:
        return True
    opening = diag.message.split()[:2]
    return diag.message not in here and any(m.split()[:2] == opening for m in here)


def _note(item: Statement | Override, merged: Merged) -> Diagnostic:
    if isinstance(item, Override):
        return Diagnostic.at(item.value_span, "overridden here")
    name = merged.source.name
    if merged.owner(item) is merged.source:
        verb = "overrides" if item.keyword in _base_keywords(merged) else "sets"
        return Diagnostic.at(item.span, f"model {name} {verb} '{item.keyword}' here")
    owner = merged.owner(item).name
    return Diagnostic.at(item.span, f"'{item.keyword}' comes from model {owner} here")


def _base_keywords(merged: Merged) -> set[str]:
    """The statements the base chain writes (those the model may override)."""
    return {
        statement.keyword for base in merged.chain[1:] for statement in base.statements
    }
