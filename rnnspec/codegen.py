"""IR → standalone PyTorch source (stage 4b), through two jinja2 templates.

A generated module = header + the `rnnspec.nn` definitions its models use (copied
verbatim, with their dependencies and imports) + one thin class per model whose
`__init__` is the spec's constructor `Call`. The math lives only in `rnnspec.nn`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import textwrap
from typing import Any

import jinja2

from rnnspec import __version__
from rnnspec.ir import Call, ModelSpec
from rnnspec.nnsource import closure, render_imports

_INDENT = " " * 4


@functools.cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("rnnspec", "templates"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


# The header line of a generated module that names the spec it was built from
# (module.py.j2 writes it; `rnnspec train --generated` checks it).
_SPEC_HASH_LINE = re.compile(r"^# spec sha256: ([0-9a-f]{64})$", re.MULTILINE)


def spec_sha256(source: str) -> str:
    """The hash a generated module's header names: of the spec file's text."""
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


def built_spec_sha256(module_text: str) -> str | None:
    """The spec hash in the header of a module `generate` wrote, else None."""
    match = _SPEC_HASH_LINE.search(module_text)
    return match.group(1) if match else None


def python_literal(value: Any, indent: int = 0) -> str:
    """A constructor argument as source; Calls are exploded one keyword a line."""
    if isinstance(value, Call):
        if not value.kwargs:
            return f"{value.callee}()"
        inner = _INDENT * (indent + 1)
        lines = [f"{value.callee}("]
        for name, arg in value.kwargs:
            lines.append(f"{inner}{name}={python_literal(arg, indent + 1)},")
        lines.append(f"{_INDENT * indent})")
        return "\n".join(lines)
    if isinstance(value, str):
        return json.dumps(value)  # double quotes, as the formatter prints them
    return repr(value)


def render_model(spec: ModelSpec) -> str:
    plan = spec.plan()
    arguments = [f"{name}={python_literal(arg, indent=3)}" for name, arg in plan.kwargs]
    return (
        _environment()
        .get_template("model.py.j2")
        .render(
            name=spec.name,
            base=plan.callee,
            summary_lines=textwrap.wrap(spec.summary(), width=80),
            spec_lines=spec.to_source().rstrip("\n").splitlines(),
            arguments=arguments,
        )
        .rstrip("\n")
    )


def generate(
    specs: ModelSpec | list[ModelSpec],
    *,
    spec_file: str = "<spec>",
    source: str | None = None,
) -> str:
    """The standalone module for `specs`: needs only torch, same bytes every time.

    `spec_file` names the spec in the header; `source` is its text, hashed there
    (the canonical text of the specs when not given).
    """
    if isinstance(specs, ModelSpec):
        specs = [specs]
    specs = list(specs)
    if not specs:
        raise ValueError("Expected at least one ModelSpec, got none")
    if source is None:
        source = "\n".join(spec.to_source() for spec in specs)
    roots: list[str] = []
    for spec in specs:
        roots.extend(spec.plan().callees())
    definitions, imports = closure(roots)
    names = [spec.name for spec in specs]
    first = names[0]
    docstring = (
        f"{', '.join(names)}: compiled from {spec_file} by rnnspec {__version__}.\n\n"
        f"Standalone: needs only torch. `model = {first}()` builds the model.\n"
    )
    text = (
        _environment()
        .get_template("module.py.j2")
        .render(
            version=__version__,
            spec_file=spec_file,
            sha256=spec_sha256(source),
            docstring=docstring,
            imports=render_imports(imports),
            class_names=[json.dumps(n) for n in names],
            definitions=[d.source for d in definitions],
            models=[render_model(spec) for spec in specs],
        )
    )
    return text.rstrip("\n") + "\n"
