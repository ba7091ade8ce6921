"""The `rnnspec` command line. `build` and `check` never import torch."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from rnnspec.files import WriteError, directory_problem, shown, write_all
from rnnspec.files import problem as files_problem
from rnnspec.lang.diagnostics import SpecError
from rnnspec.lang.ir import ModelSpec
from rnnspec.version import __version__


def _load(paths: Sequence[str]) -> tuple[dict[Path, tuple[str, list[ModelSpec]]], int]:
    """Parse every spec, printing all diagnostics; returns the good ones and a count."""
    from rnnspec.lang.lower import parse
    from rnnspec.lang.source import read_spec_file

    loaded: dict[Path, tuple[str, list[ModelSpec]]] = {}
    failures = 0
    for name in paths:
        path = Path(name)
        try:
            text = read_spec_file(path, filename=name)
            loaded[path] = (text, parse(text, filename=name))
        except OSError as exc:
            print(
                f"{shown(name)}: error: cannot read: {exc.strerror}",
                file=sys.stderr,
            )
            failures += 1
        except SpecError as exc:
            print(exc, file=sys.stderr)
            failures += 1
    return loaded, failures


def cmd_build(args: argparse.Namespace) -> int:
    """All or nothing: every target is checked, and every file staged, before any is
    replaced; a file `rnnspec build` did not write is overwritten only with --force,
    and an input never."""
    from rnnspec.compile.codegen import generate

    loaded, failures = _load(args.specs)
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
    rendered = {
        target: generate(loaded[path][1], spec_file=path.name, source=loaded[path][0])
        for target, path in outputs.items()
    }
    changed, problems = _plan_writes(rendered, out_dir, list(loaded), args.force)
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
        names = ", ".join(spec.name for spec in loaded[outputs[target]][1])
        print(f"{status} {shown(target)} ({names})")
    return 0


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


def cmd_check(args: argparse.Namespace) -> int:
    loaded, failures = _load(args.specs)
    for path, (_, specs) in loaded.items():
        print(f"{path}: ok ({', '.join(spec.name for spec in specs)})")
    return 1 if failures else 0


def cmd_inspect(args: argparse.Namespace) -> int:
    loaded, failures = _load([args.spec])
    if failures:
        return 1
    from rnnspec.compile.describe import describe

    for _, specs in loaded.values():
        for spec in specs:
            print(describe(spec))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rnnspec",
        description="Compile .rnn model specs into PyTorch models.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    commands = parser.add_subparsers(dest="command", required=True)

    build = commands.add_parser("build", help="write DIR/<spec stem>.py per spec")
    build.add_argument("specs", nargs="+", metavar="SPEC")
    build.add_argument(
        "-o", "--output", default="generated", metavar="DIR", help="(generated/)"
    )
    build.add_argument(
        "--force",
        action="store_true",
        help="also overwrite files rnnspec did not write (never a spec being built)",
    )
    build.set_defaults(run=cmd_build)

    check = commands.add_parser("check", help="validate specs only")
    check.add_argument("specs", nargs="+", metavar="SPEC")
    check.set_defaults(run=cmd_check)

    inspect = commands.add_parser(
        "inspect", help="parameters, shapes and kernels per model (imports torch)"
    )
    inspect.add_argument("spec", metavar="SPEC")
    inspect.set_defaults(run=cmd_inspect)

    # Subcommands whose code lives with their feature. Each module defines
    # `add_arguments(parser)` and `run(args) -> int`, and imports torch lazily.
    for name, module, help_text in _FEATURE_COMMANDS:
        try:
            feature = importlib.import_module(module)
        except ImportError:
            continue
        sub = commands.add_parser(name, help=help_text)
        feature.add_arguments(sub)
        sub.set_defaults(run=feature.run)
    return parser


_FEATURE_COMMANDS = (
    ("fmt", "rnnspec.cli.fmt", "print or check the canonical text of specs"),
    ("schema", "rnnspec.cli.schema", "print the JSON Schema of the IR"),
    ("train", "rnnspec.cli.train", "train a spec'd language model on text"),
    ("sample", "rnnspec.cli.sample", "generate text from a checkpoint"),
)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
