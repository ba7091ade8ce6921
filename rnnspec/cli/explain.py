"""`rnnspec explain SPEC [MODEL] [--set ...]`: the fully resolved model.

Every field with its value and where it came from (default, `file:line`,
`extends Base at file:line`, `--set ...`), then the recurrent kernel `impl` picks
and why (`rnnspec.compile.describe.kernel_note`, as `inspect` says it). Never
imports torch.
"""

from __future__ import annotations

import argparse
import sys

from rnnspec.cli.specs import add_set_argument, load_specs
from rnnspec.lang.diagnostics import did_you_mean
from rnnspec.lang.ir import ModelSpec
from rnnspec.lang.lower import Program, Resolved

HELP = "every field of a model, its value and where it came from"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", metavar="SPEC")
    parser.add_argument(
        "model",
        nargs="?",
        metavar="MODEL",
        help="a model of SPEC or of a file it imports (default: every model of "
        "SPEC); a --set that names no model is for it",
    )
    add_set_argument(parser)


def run(args: argparse.Namespace) -> int:
    loaded, failures = load_specs([args.spec], args.overrides, args.model)
    if failures:
        return 1
    (program,) = loaded.values()
    chosen = program.models
    if args.model is not None:
        found = [m for m in program.models + program.imported if m.name == args.model]
        if not found:
            names = [m.name for m in program.models + program.imported]
            print(
                f"rnnspec explain: error: no model '{args.model}' in {args.spec}"
                f"{did_you_mean(args.model, names)}; it has {', '.join(names)}",
                file=sys.stderr,
            )
            return 1
        chosen = found[:1]
    print("\n\n".join(explain(resolved, program) for resolved in chosen))
    return 0


def explain(resolved: Resolved, program: Program) -> str:
    """The text `rnnspec explain` prints for one model."""
    from rnnspec.lang.explain import rows, where

    spec = resolved.spec
    table = [("field", "value", "from")]
    table += [(row.field, row.value, row.origin) for row in rows(resolved, program)]
    widths = [max(len(line[i]) for line in table) for i in range(2)]
    lines = [f"model {spec.name}: {spec.summary()}", f"  defined at {where(resolved)}"]
    lines.append("")
    for name, value, origin in table:
        lines.append(f"  {name:<{widths[0]}}  {value:<{widths[1]}}  {origin}".rstrip())
    lines.append("")
    lines.append(f"  kernel: {kernel(spec)}")
    return "\n".join(lines)


def kernel(spec: ModelSpec) -> str:
    """The recurrent kernel `impl` picks for `spec`, and why (two lines)."""
    from rnnspec.compile.describe import kernel_note

    if spec.encoder == "spinn":
        return "none to pick\n  why: encoder spinn runs its own TreeLSTM reduce"
    changes = spec.changes_step()
    if changes:
        verb = "changes" if len(changes) == 1 else "change"
        why = (
            f"{', '.join(changes)} {verb} the recurrent step, which only the rnnspec "
            "kernel runs"
        )
    elif spec.impl != "auto":
        why = f"impl {spec.impl} asks for it"
    elif spec.packing:
        why = (
            "impl auto with packing true: on CPU the rnnspec kernel is faster for "
            "packed input, on CUDA torch's cuDNN kernel is"
        )
    else:
        why = (
            "impl auto, and nothing in the spec changes the recurrent step: torch's "
            "fused kernel runs it exactly"
        )
    return f"{kernel_note(spec)}\n  why: {why}"
