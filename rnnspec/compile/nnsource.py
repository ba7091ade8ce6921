"""An index of `rnnspec.nn`'s source: which module defines what, and what it needs.

Read with `ast` (never imported, so the compiler stays torch-free), or from the table
`rnnspec.prebuilt` computed ahead the same way. `instantiate` uses it to find a
class's module; codegen copies the needed definitions, with their transitive
dependencies and only the imports they use, into generated files.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NN_DIR = Path(__file__).resolve().parents[1] / "nn"

#: Import order of the generated file's header (isort order: stdlib, then torch).
IMPORT_ORDER = ("math", "typing", "torch", "torch.nn.functional", "torch.nn", "torch")


@dataclass(frozen=True)
class Definition:
    """One top-level definition of an rnnspec.nn module."""

    name: str
    module: str
    source: str
    uses: frozenset[str]  # every name it mentions
    order: tuple[int, int]  # (module rank, line): dependencies come first


@dataclass(frozen=True)
class ImportLine:
    """`import module [as alias]` or `from module import name`, binding `bound`."""

    bound: str
    module: str
    name: str | None  # None for `import module`
    alias: str | None


#: rnnspec.nn modules in the order generated files copy them: each after those it
#: builds on (a peephole LSTM is an LSTM; attention reuses the stack's helpers).
MODULE_ORDER = (
    "packing",
    "kernel",
    "step",
    "torchkernel",
    "stack",
    "rnn",
    "lstm",
    "peephole",
    "lnlstm",
    "gru",
    "lngru",
    "attention",
    "model",
    "spinn",
)


def _module_rank(stem: str) -> int:
    # Modules other modules build on come first in generated files.
    if stem in MODULE_ORDER:
        return MODULE_ORDER.index(stem)
    return len(MODULE_ORDER)


@functools.cache
def index() -> tuple[dict[str, Definition], dict[str, ImportLine]]:
    """Every top-level definition and import of rnnspec.nn, by the name it binds.

    From the table `rnnspec.prebuilt` holds while rnnspec/nn matches it (start-up
    stays fast), else read with `ast`; both give the same index.
    """
    from rnnspec import prebuilt

    texts = nn_texts()
    table = prebuilt.nn_table(sources_sha256(texts))
    if table is None:
        return _read_index(texts)
    lines_of = {stem: text.splitlines() for stem, text in texts.items()}
    definitions: dict[str, Definition] = {}
    for name, (module, start, end, uses) in table["definitions"].items():
        lines = lines_of[module]
        source = "\n".join(lines[start - 1 : end])
        order = (_module_rank(module), start)
        definitions[name] = Definition(name, module, source, frozenset(uses), order)
    imports = {
        bound: ImportLine(bound, module, name, alias)
        for bound, (module, name, alias) in table["imports"].items()
    }
    return definitions, imports


def nn_texts() -> dict[str, str]:
    """The source of every rnnspec.nn module but `__init__`, by module name."""
    return {
        path.stem: path.read_text(encoding="utf-8")
        for path in sorted(NN_DIR.glob("*.py"))
        if path.name != "__init__.py"
    }


def sources_sha256(texts: dict[str, str]) -> str:
    """What the prebuilt table was computed from: names and sources of the modules."""
    digest = hashlib.sha256()
    for stem, text in sorted(texts.items()):
        digest.update(f"{stem}\0{text}\0".encode())
    return digest.hexdigest()


def index_table() -> dict[str, Any]:
    """The index read with `ast`, as the JSON `rnnspec.prebuilt` stores."""
    definitions, imports = _read_index(nn_texts())
    return {
        "definitions": {
            d.name: [
                d.module,
                d.order[1],
                d.order[1] + d.source.count("\n"),
                sorted(d.uses),
            ]
            for d in definitions.values()
        },
        "imports": {i.bound: [i.module, i.name, i.alias] for i in imports.values()},
    }


def _read_index(
    texts: dict[str, str],
) -> tuple[dict[str, Definition], dict[str, ImportLine]]:
    definitions: dict[str, Definition] = {}
    imports: dict[str, ImportLine] = {}
    for stem, text in texts.items():
        lines = text.splitlines()
        tree = ast.parse(text)
        for node in tree.body:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    bound = alias.asname or alias.name
                    imports[bound] = ImportLine(bound, alias.name, None, alias.asname)
                continue
            if isinstance(node, ast.ImportFrom):
                if node.level:  # relative: an rnnspec.nn sibling, inlined instead
                    continue
                for alias in node.names:
                    bound = alias.asname or alias.name
                    imports[bound] = ImportLine(
                        bound, node.module or "", alias.name, alias.asname
                    )
                continue
            names = _bound_names(node)
            if not names:
                continue  # the module docstring
            start = min(
                [node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])]
            )
            while start > 1 and lines[start - 2].startswith("#"):
                start -= 1  # keep a comment block written right above
            source = "\n".join(lines[start - 1 : node.end_lineno])
            uses = frozenset(
                n.id for n in ast.walk(node) if isinstance(n, ast.Name)
            ) | frozenset(_annotation_names(node))
            for name in names:
                if name in definitions:
                    raise RuntimeError(f"rnnspec.nn defines {name!r} twice")
                definitions[name] = Definition(
                    name, stem, source, uses, (_module_rank(stem), start)
                )
    return definitions, imports


def _bound_names(node: ast.stmt) -> list[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    if isinstance(node, ast.Assign):
        return [t.id for t in node.targets if isinstance(t, ast.Name)]
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return [node.target.id]
    return []


def _annotation_names(node: ast.AST) -> list[str]:
    """Names inside string annotations ('Tensor') that ast.Name does not see."""
    found = []
    for sub in ast.walk(node):
        if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
            text = sub.value
            if text.isidentifier():
                found.append(text)
    return found


def module_of(name: str) -> str:
    """The rnnspec.nn module defining `name`."""
    definitions, _ = index()
    if name not in definitions:
        raise KeyError(name)
    return definitions[name].module


def closure(roots: list[str]) -> tuple[list[Definition], list[ImportLine]]:
    """`roots` and all they use, in dependency order, with their imports."""
    definitions, imports = index()
    needed: set[str] = set()
    used_imports: set[str] = set()
    unknown = [r for r in roots if r not in definitions and "." not in r]
    if unknown:
        raise LookupError(f"rnnspec.nn defines no {', '.join(map(repr, unknown))}")
    stack = [r for r in roots if r in definitions]
    for root in roots:  # `nn.LSTM` in a Call needs `nn`
        head = root.split(".")[0]
        if head in imports:
            used_imports.add(head)
    while stack:
        name = stack.pop()
        if name in needed:
            continue
        needed.add(name)
        for used in definitions[name].uses:
            if used in definitions and used not in needed:
                stack.append(used)
            elif used in imports:
                used_imports.add(used)
    ordered = sorted((definitions[n] for n in needed), key=lambda d: d.order)
    lines = [imports[b] for b in used_imports]
    return ordered, lines


def render_imports(lines: list[ImportLine]) -> str:
    """Group and sort import lines as isort/ruff would: stdlib block, then torch."""
    plain: dict[str, set[str]] = {}
    from_: dict[str, set[str]] = {}
    for line in lines:
        if line.name is None:
            alias = f" as {line.alias}" if line.alias else ""
            plain.setdefault(line.module.split(".")[0], set()).add(
                f"import {line.module}{alias}"
            )
        else:
            alias = f" as {line.alias}" if line.alias else ""
            from_.setdefault(line.module, set()).add(f"{line.name}{alias}")
    stdlib, third = [], []
    for top in sorted(set(plain) | {m.split(".")[0] for m in from_}):
        block = stdlib if top != "torch" else third
        block.extend(sorted(plain.get(top, ())))
    for module in sorted(from_):
        block = stdlib if module.split(".")[0] != "torch" else third
        names = sorted(from_[module], key=lambda n: (not n[:1].isupper(), n.lower()))
        if module.split(".")[0] != "torch":
            names = sorted(from_[module])
        block.append(f"from {module} import {', '.join(names)}")
    return "\n\n".join("\n".join(b) for b in (stdlib, third) if b)
