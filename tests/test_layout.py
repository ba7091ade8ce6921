"""The package's shape, as docs/architecture.md describes it: stages that import
downwards only, small modules and functions, torch only where it must be.

Ruff checks complexity (C901) and module-level torch imports (TID253); this file
checks what ruff cannot: cycles through imports anywhere (inside functions too),
which stage may import which, and sizes.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "rnnspec"

MAX_MODULE_LINES = 700
MAX_FUNCTION_LINES = 120

#: Which stage may import which (besides itself and the shared leaf modules).
#: `rnnspec` itself is the public API on top of everything.
ALLOWED = {
    "lang": set(),
    "nn": set(),
    "compile": {"lang", "nn"},
    "train": {"lang", "compile", "nn"},
    "cli": {"lang", "compile", "train", "server"},
    "server": {"lang"},
}
#: Leaf modules any stage may use: they import no other rnnspec module.
LEAVES = {"rnnspec.version", "rnnspec.files", "rnnspec.prebuilt"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path) -> set[str]:
    """rnnspec modules `path` imports, at any depth (functions included), except
    under `if TYPE_CHECKING:` (never executed)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If)
        and isinstance(block.test, ast.Name)
        and block.test.id == "TYPE_CHECKING"
        for stmt in block.body
        for node in ast.walk(stmt)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [
                f"{node.module}.{a.name}"
                if f"{node.module}.{a.name}" in MODULES
                else node.module
                for a in node.names
            ]
        elif isinstance(node, ast.ImportFrom) and node.level:  # rnnspec/nn siblings
            package = _module_name(path).rsplit(".", node.level)[0]
            if path.name == "__init__.py":
                package = _module_name(path)
            base = f"{package}.{node.module}" if node.module else package
            names = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                for a in node.names
            ]
        else:
            continue
        found.update(n for n in names if n in MODULES)
    found.discard(_module_name(path))
    return found


GRAPH = {name: _imports(path) for name, path in MODULES.items()}


def _stage(module: str) -> str | None:
    """'lang' for rnnspec.lang and its modules; None outside the stage packages."""
    parts = module.split(".")
    return parts[1] if len(parts) >= 2 and parts[1] in ALLOWED else None


def test_the_graph_sees_function_level_and_relative_imports():
    # rnnspec/__init__ imports the runtime inside `instantiate`; nn/peephole imports
    # .lstm relatively: both must be edges, or the checks below prove nothing.
    assert "rnnspec.compile.runtime" in GRAPH["rnnspec"]
    assert "rnnspec.nn.lstm" in GRAPH["rnnspec.nn.peephole"]


def test_no_import_cycles():
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_stages_import_only_downwards():
    wrong = []
    for module, imported in GRAPH.items():
        stage = _stage(module)
        if stage is None:
            continue
        for target in imported - LEAVES:
            other = _stage(target)  # None: the public API or a tool on top of it all
            if other is None or other != stage and other not in ALLOWED[stage]:
                wrong.append(f"{module} -> {target}")
    assert not wrong, "stage imports against docs/architecture.md:\n" + "\n".join(
        sorted(wrong)
    )


def test_leaf_modules_import_no_rnnspec_module():
    assert {leaf: GRAPH[leaf] for leaf in LEAVES} == {leaf: set() for leaf in LEAVES}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_and_functions_stay_small(module):
    path = MODULES[module]
    text = path.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_MODULE_LINES, f"{path}: split it"
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(text))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"{path}: functions over {MAX_FUNCTION_LINES} lines: {long}"


def test_torch_free_modules_import_without_torch():
    """Importing the language, the code generator and the commands' modules must not
    import torch (`rnnspec build` and `check` start fast); tests/cli checks the
    commands themselves."""
    import subprocess
    import sys

    torch_free = [
        m
        for m in MODULES
        if _stage(m) in ("lang", "cli")
        or m in ("rnnspec", "rnnspec.compile.codegen", "rnnspec.compile.plan")
        or m in ("rnnspec.compile.nnsource", *LEAVES)
    ]
    script = (
        "import importlib, sys\n"
        f"for name in {torch_free!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
