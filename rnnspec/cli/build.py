"""`rnnspec build SPEC... [-o DIR] [--force] [--set ...] [--with-imports]`: write
DIR/<spec stem>.py per spec, one class per model of that file (and of the files it
imports, with --with-imports).

Never imports torch. All or nothing, and nothing a user owns is overwritten.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rnnspec.cli.specs import Loaded, add_set_argument, load_specs
from rnnspec.files import WriteError, directory_problem, shown, write_all
from rnnspec.files import problem as files_problem
from rnnspec.lang.ir import ModelSpec
from rnnspec.lang.lower import Program

HELP = "write DIR/<spec stem>.py per spec"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("specs", nargs="+", metavar="SPEC")
    parser.add_argument(
        "-o", "--output", default="generated", metavar="DIR", help="(generated/)"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="also overwrite files rnnspec did not write (never a spec being built)",
    )
    parser.add_argument(
        "--with-imports",
        action="store_true",
        help="also write a class for every model of the files a spec imports",
    )
    add_set_argument(parser)


def run(args: argparse.Namespace) -> int:
    """All or nothing: every target is checked, and every file staged, before any is
    replaced; a file `rnnspec build` did not write is overwritten only with --force,
    and an input never."""
    loaded, failures = load_specs(args.specs, args.overrides)
    out_dir = Path(args.output)
    outputs: dict[Path, Path] = {}
    for path in loaded:
        target = out_dir / f"{path.stem}.py"
        if target in outputs:
            print(
                f"{shown(path)}: error: writes {shown(target)}, as "
                f"{shown(outputs[target])} does; "
                "rename one of them",
                file=sys.stderr,
            )
            failures += 1
        outputs[target] = path
    if failures:
        print(f"rnnspec: {failures} spec(s) failed; nothing written", file=sys.stderr)
        return 1
    rendered, problems = _render(loaded, outputs, args.with_imports)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"rnnspec: {len(problems)} error(s); nothing written", file=sys.stderr)
        return 1
    inputs = [
        file.path
        for program in loaded.values()
        for file in program.files
        if file.path is not None
    ]
    changed, problems = _plan_writes(rendered, out_dir, inputs, args.force)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"rnnspec: {len(problems)} error(s); nothing written", file=sys.stderr)
        return 1
    try:
        write_all({target: rendered[target] for target in changed})
    except WriteError as exc:
        print(exc, file=sys.stderr)
        return 1
    for target in rendered:
        status = "wrote" if target in changed else "unchanged"
        specs = _specs(loaded[outputs[target]], args.with_imports)
        names = ", ".join(spec.name for spec in specs)
        print(f"{status} {shown(target)} ({names})")
    return 0


def _specs(program: Program, with_imports: bool) -> list[ModelSpec]:
    """The models a spec's module holds: its own, after its imports' if asked."""
    imported = [m.spec for m in program.imported] if with_imports else []
    return imported + program.specs


def _render(
    loaded: Loaded, outputs: dict[Path, Path], with_imports: bool
) -> tuple[dict[Path, str], list[str]]:
    """The text of every target, or why one cannot be written."""
    from rnnspec.compile.codegen import build_record, generate  # jinja2: build only

    options = ["--with-imports"] if with_imports else []
    rendered: dict[Path, str] = {}
    problems = []
    for target, path in outputs.items():
        program = loaded[path]
        try:
            rendered[target] = generate(
                _specs(program, with_imports),
                spec_file=path.name,
                source=program.main.text,
                record=build_record(program),
                build_options=options,
            )
        except ValueError as exc:  # two models of one name among the imports
            problems.append(f"{shown(path)}: error: {exc}")
    return rendered, problems


_FOREIGN_FILE = (
    "exists and was not written by rnnspec (no rnnspec header); refusing to "
    "overwrite it: move it away, pick another -o DIR, or pass --force"
)


def _plan_writes(
    rendered: dict[Path, str], out_dir: Path, inputs: list[Path], force: bool
) -> tuple[list[Path], list[str]]:
    """The targets whose text changes, and a diagnostic for each that must not be
    written: checked for all before any is written."""
    from rnnspec.compile.codegen import is_generated

    problem = directory_problem(out_dir)
    if problem:
        return [], [f"{shown(out_dir)}: error: {problem}"]
    changed: list[Path] = []
    problems: list[str] = []
    for target, text in rendered.items():
        problem = files_problem(target)
        if problem is None and target.exists():
            problem = _input_problem(target, inputs)
            if problem is None:
                try:
                    current = target.read_text(encoding="utf-8", errors="replace")
                except OSError as exc:
                    problem = f"cannot read: {exc.strerror}"
                else:
                    if current == text:
                        continue
                    if not force and not is_generated(current):
                        problem = _FOREIGN_FILE
        if problem:
            problems.append(f"{shown(target)}: error: {problem}")
        else:
            changed.append(target)
    return changed, problems


def _input_problem(target: Path, inputs: list[Path]) -> str | None:
    """Set when `target` is one of the specs being built (even via links)."""
    for spec in inputs:
        try:
            same = os.path.samefile(target, spec)
        except OSError:
            continue
        if same:
            return (
                f"is the spec {shown(spec)} itself; refusing to overwrite an input, "
                "even with --force: pick another -o DIR"
            )
    return None
