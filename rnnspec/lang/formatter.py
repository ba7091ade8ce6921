"""Canonical formatting of a whole spec file, comments kept (`rnnspec fmt`).

`ModelSpec.to_source()` prints a model from the IR alone, so it loses comments and
the statements a user spelled out at their default. `format_source` keeps both: it
changes layout, never content. Statements go in `STATEMENT_ORDER`, aligned as
`statement_line` prints them, each with the canonical spelling of its values (options
in the IR's field order, sizes positional). `rnnspec N` and `import "FILE"` lines stay
as written, first, then a blank line; `extends BASE` stays on its model's line, and a
model written on one line (`model Wide extends Base { hidden 512 }`) stays so.
Comments travel with what they describe:

- comment lines above a statement move with it; a trailing comment stays on its line;
- comments after the last statement of a model stay at the end of the block;
- comments before a model (or an `import`) stay before it (a blank line between them
  and it is kept); comments after the last model stay at the end of the file;
- models are separated by one blank line; blank lines inside a model are dropped.

The result parses to the same IR (`parse(format_source(t)) == parse(t)`), and
formatting is idempotent. A spec with errors (its imports' included) raises
`SpecError` before anything is formatted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from rnnspec.lang.ir import ModelSpec
from rnnspec.lang.lower import _SIZE_FIELD, load
from rnnspec.lang.printer import (
    SCALAR_OPTIONS,
    STATEMENT_ORDER,
    format_value,
    statement_line,
)
from rnnspec.lang.source import spec_text
from rnnspec.lang.syntax import (
    ModelBlock,
    Option,
    Statement,
    Value,
    parse_file_syntax,
)

#: Indentation of statements and of comments inside a model.
INDENT = "    "
#: Between code and a trailing comment.
COMMENT_GAP = "  "


def format_source(
    source: str,
    filename: str = "<spec>",
    base_dir: str | os.PathLike[str] | None = None,
) -> str:
    """The canonical text of a spec file; `SpecError` if the spec has errors.

    The canonical text is UTF-8 without a byte-order mark, each line ending in LF:
    a lone CR ends a line here exactly as it does for `parse`. Imports are read
    relative to `base_dir` (default: the folder of `filename` when it is a path).
    """
    source = spec_text(source)
    if base_dir is None and not filename.startswith("<"):
        base_dir = Path(filename).parent
    specs = load(source, filename, base_dir=base_dir).specs
    syntax = parse_file_syntax(source)
    blocks = syntax.models
    lines = source.split("\n")
    layout = _layout(syntax.headers, blocks, lines)
    out: list[str] = []
    for index, (header, placed) in enumerate(zip(syntax.headers, layout.headers)):
        if index == 1 and syntax.headers[0].keyword != "import":
            out.append("")  # between `rnnspec N` and the imports
        out.extend(placed.above)
        out.append(_with_comment(_header_line(header), placed.trailing))
    for index, (block, spec, placed) in enumerate(zip(blocks, specs, layout.blocks)):
        if index or syntax.headers:
            out.append("")
        out.extend(placed.before)
        out.extend(_model_lines(block, spec, placed))
    if layout.after:
        out.append("")
        out.extend(layout.after)
    return "\n".join(out) + "\n"


def _model_lines(block: ModelBlock, spec: ModelSpec, placed: _Block) -> list[str]:
    head = f"model {block.name}" + (f" extends {block.base}" if block.base else "")
    if block.one_line:
        body = [
            " ".join([item.statement.keyword, *_arguments(spec, item)])
            for item in placed.statements
        ]
        line = f"{head} {{ {body[0]} }}" if body else f"{head} {{}}"
        return [_with_comment(line, placed.header_comment)]
    out = [_with_comment(f"{head} {{", placed.header_comment)]
    statements = sorted(placed.statements, key=lambda p: _order(p.statement.keyword))
    for item in statements:
        out.extend(INDENT + comment for comment in item.above)
        line = statement_line(item.statement.keyword, _arguments(spec, item))
        out.append(_with_comment(line, item.trailing))
    out.extend(INDENT + comment for comment in placed.dangling)
    out.append(_with_comment("}", placed.closing_comment))
    return out


def _header_line(header: Statement) -> str:
    """`rnnspec 1`, `import "base.rnn"`: as written, one space apart."""
    words = [
        argument.text if isinstance(argument, Value) else argument.key
        for argument in header.arguments
    ]
    return " ".join([header.keyword, *words])


def is_canonical(source: str, filename: str = "<spec>") -> bool:
    """Whether `source` is already what `format_source` prints."""
    return format_source(source, filename) == source


# -- where every comment belongs -----------------------------------------------------


@dataclass
class _Placed:
    statement: Statement
    above: list[str] = field(default_factory=list)
    trailing: str | None = None


@dataclass
class _Block:
    before: list[str] = field(default_factory=list)
    header_comment: str | None = None
    statements: list[_Placed] = field(default_factory=list)
    dangling: list[str] = field(default_factory=list)
    closing_comment: str | None = None


@dataclass
class _Layout:
    headers: list[_Placed]
    blocks: list[_Block]
    after: list[str]


def _comment(line: str) -> str | None:
    """The `# ...` part of a line (no token of the language contains '#')."""
    start = line.find("#")
    return line[start:].rstrip() if start >= 0 else None


def _closing_line(block: ModelBlock, lines: list[str]) -> int:
    """1-based line of the block's `}`: the first line after its body starting so
    (the model's own line for a block on one line)."""
    if block.one_line:
        return block.span.line
    last = max([block.span.line, *(s.line for s in block.statements)])
    for number in range(last + 1, len(lines) + 1):
        if lines[number - 1].lstrip(" \t\f").startswith("}"):
            return number
    raise AssertionError("a parsed model block has a closing brace")


def _loose_comments(lines: list[str]) -> list[str]:
    """Comment-only lines between models: blank runs become one, none leading."""
    out: list[str] = []
    for line in lines:
        comment = _comment(line)
        if comment is not None:
            out.append(comment)
        elif out and out[-1] != "":
            out.append("")
    return out


def _layout(
    headers: list[Statement], blocks: list[ModelBlock], lines: list[str]
) -> _Layout:
    placed_headers: list[_Placed] = []
    previous_close = 0
    for header in headers:  # a valid file has them all before its models
        above = _loose_comments(lines[previous_close : header.line - 1])
        comment = _comment(lines[header.line - 1])
        placed_headers.append(_Placed(header, above, comment))
        previous_close = header.line
    placed_blocks: list[_Block] = []
    for block in blocks:
        header = block.span.line
        close = _closing_line(block, lines)
        placed = _Block()
        # A `}` sharing the header's line (`} model B {`): its comment is the header's.
        placed.before = _loose_comments(lines[previous_close : header - 1])
        shares_line = any(
            b.span.line == header and b.span.column > block.span.column for b in blocks
        )  # `model A {} model B {`: the line's comment is the last model's
        placed.header_comment = None if shares_line else _comment(lines[header - 1])
        if block.one_line:
            placed.statements = [_Placed(s) for s in block.statements]
        by_line = {statement.line: statement for statement in block.statements}
        pending: list[str] = []
        for number in range(header + 1, close):
            line = lines[number - 1]
            if number in by_line:
                placed.statements.append(
                    _Placed(by_line[number], pending, _comment(line))
                )
                pending = []
            elif (comment := _comment(line)) is not None:
                pending.append(comment)
        placed.dangling = pending
        closing_line = lines[close - 1]
        if not any(b.span.line == close for b in blocks):
            placed.closing_comment = _comment(closing_line)
        placed_blocks.append(placed)
        previous_close = close
    after = _loose_comments(lines[previous_close:])
    while after and after[-1] == "":
        after.pop()
    return _Layout(placed_headers, placed_blocks, after)


# -- printing ------------------------------------------------------------------------


def _order(keyword: str) -> int:
    try:
        return STATEMENT_ORDER.index(keyword)
    except ValueError:
        return len(STATEMENT_ORDER)


def _with_comment(code: str, comment: str | None) -> str:
    return f"{code}{COMMENT_GAP}{comment}" if comment else code


def _arguments(spec: ModelSpec, placed: _Placed) -> list[str]:
    """A statement's canonical arguments, from the validated IR.

    Options the user wrote are kept even at their default value; others are printed
    only when they differ from it (as `to_source` does).
    """
    statement = placed.statement
    keyword = statement.keyword
    written = {a.key for a in statement.arguments if isinstance(a, Option)}
    if keyword == "cell":
        args = [str(spec.cell)]
        if "nonlinearity" in written or spec.nonlinearity != "tanh":
            args.append(f"nonlinearity={spec.nonlinearity}")
        return args
    if keyword in ("input", "attention", "head"):
        node = getattr(spec, keyword)
        if node is None:
            return ["none"]
        args = [node.kind]
        size = _SIZE_FIELD.get((keyword, node.kind))
        if size:
            args.append(format_value(getattr(node, size)))
        for name, info in type(node).model_fields.items():
            if name in ("kind", size):
                continue
            value = getattr(node, name)
            if name in written or value != info.default:
                args.append(f"{name}={format_value(value)}")
        return args
    args = [format_value(getattr(spec, keyword))]
    for key, name in SCALAR_OPTIONS.get(keyword, {}).items():
        value = getattr(spec, name)
        if key in written or value != ModelSpec.model_fields[name].default:
            args.append(f"{key}={format_value(value)}")
    return args
