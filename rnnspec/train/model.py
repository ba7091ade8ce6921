"""The language model of a run: which spec is one, its VOCAB fitted to the data, the
class `rnnspec build` wrote, and its forward pass whatever its layout.

A language model here is a spec with `input tokens` and `head logits`. Its VOCAB is
fitted to the data: when the data's vocabulary has a different size, the model is
built from the spec with that size (`spec.model_copy`), the run says so, and the
fitted spec is what the checkpoint and `OUT/spec.rnn` hold. `strict_vocab=True`
makes a mismatch an error instead. With `generated=FILE`, the class that
`rnnspec build` wrote is trained instead, with the spec's VOCAB unchanged (the
data's vocabulary must fit in it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from rnnspec.lang.diagnostics import SpecError
from rnnspec.lang.ir import LogitsHead, ModelSpec, TokensInput
from rnnspec.lang.lower import load_file
from rnnspec.train.errors import TrainError
from rnnspec.train.rundir import SPEC


def load_spec(
    path: str, model: str | None = None, overrides: Sequence[str] = ()
) -> tuple[ModelSpec, str]:
    """(spec, spec file text) of model `model` (or the file's only model), with the
    files it imports and the `overrides` (`--set`)."""
    try:
        program = load_file(path, overrides=overrides, label="--set", model=model)
    except OSError as exc:
        raise TrainError(f"cannot read spec {path}: {exc.strerror}") from None
    except SpecError as exc:
        raise TrainError(str(exc)) from None
    specs = program.specs
    names = [s.name for s in specs]
    if model is None:
        if len(specs) > 1:
            raise TrainError(
                f"{path} holds models {', '.join(names)}; pick one with --model NAME"
            )
        return specs[0], program.main.text
    for spec in specs:
        if spec.name == model:
            return spec, program.main.text
    raise TrainError(f"{path} has no model {model!r}; it has {', '.join(names)}")


def language_model_problems(spec: ModelSpec) -> list[str]:
    """Why `spec` is no language model (empty when it is one)."""
    problems = []
    if spec.encoder != "recurrent":
        problems.append(f"it has encoder {spec.encoder}")
    if not isinstance(spec.input, TokensInput):
        problems.append("it reads features, not `input tokens VOCAB embed=E`")
    if not isinstance(spec.head, LogitsHead):
        kind = spec.head.kind if spec.head is not None else "none"
        problems.append(f"its head is {kind}, not `head logits`")
    if spec.directions == 2:
        problems.append(
            "it is bidirectional (`directions 2`): its output at a step would see "
            "the token it has to predict"
        )
    return problems


def fit_vocab(
    spec: ModelSpec, vocab_size: int, strict: bool = False, fixed: bool = False
) -> tuple[ModelSpec, str | None]:
    """The language model of `spec` for a vocabulary of `vocab_size` tokens.

    Returns the spec (with VOCAB replaced when it differs) and a note saying so,
    or raises TrainError when `spec` is no language model (or strict and sizes
    differ). `fixed`: VOCAB cannot change (a built class); the data must fit in it.
    """
    problems = language_model_problems(spec)
    if problems:
        raise TrainError(
            f"model {spec.name} is not a language model: {'; '.join(problems)}"
        )
    assert isinstance(spec.input, TokensInput)
    declared = spec.input.vocab
    if declared == vocab_size or (fixed and vocab_size < declared):
        return spec, None
    if fixed:
        raise TrainError(
            f"the data has {vocab_size} distinct tokens but the built model "
            f"{spec.name} has `input tokens {declared}`; raise VOCAB in the spec and "
            "rebuild, or train without --generated"
        )
    embed = spec.input.embed
    if strict:
        raise TrainError(
            f"the data has {vocab_size} distinct tokens but model {spec.name} says "
            f"`input tokens {declared}`; put `input tokens {vocab_size} embed={embed}` "
            "in the spec (or drop --strict-vocab to fit it automatically)"
        )
    update: dict[str, Any] = {"vocab": vocab_size}
    if spec.input.padding is not None and spec.input.padding >= vocab_size:
        update["padding"] = None
    fitted = spec.model_copy(update={"input": spec.input.model_copy(update=update)})
    fitted = ModelSpec.model_validate(fitted.model_dump())  # re-check every rule
    note = (
        f"note: the data has {vocab_size} distinct tokens; model {spec.name} says "
        f"`input tokens {declared}`, so it is built with `input tokens {vocab_size}` "
        f"(saved as {SPEC}; --strict-vocab makes this an error)"
    )
    return fitted, note


def load_generated(
    path: str,
    spec: ModelSpec,
    spec_path: str,
    overrides: Sequence[str] = (),
) -> type[nn.Module]:
    """Class `spec.name` of the module that `rnnspec build` wrote from `spec_path`.

    The module's header names the sha256 of the spec file and of every file it
    imports, and the overrides it was built with; any difference from the spec as it
    is now (with `overrides`) means a stale build, which is refused rather than
    trained.
    """
    import importlib.util

    from rnnspec.compile.codegen import build_record, built_record, stale_inputs

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise TrainError(f"cannot read {path}: {exc.strerror}") from None
    built = built_record(text)
    if built is None:
        raise TrainError(f"{path} was not written by `rnnspec build`")
    try:
        now = build_record(load_file(spec_path, overrides=overrides, label="--set"))
    except (OSError, SpecError) as exc:  # load_spec read it a moment ago
        raise TrainError(f"cannot read spec {spec_path}: {exc}") from None
    stale = stale_inputs(built, now)
    if stale:
        raise TrainError(
            f"{path} was built from another version of the spec ({'; '.join(stale)}); "
            "rebuild it with `rnnspec build SPEC -o DIR`"
        )
    name = f"_rnnspec_generated_{Path(path).stem}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    cls = getattr(module, spec.name, None)
    if cls is None:
        raise TrainError(f"{path} has no class {spec.name}")
    return cls


def forward_batch_first(
    model: nn.Module, spec: ModelSpec, x: Tensor, lengths, state=None
):
    """The model on batch-first `x` (B, T), whatever its layout: (logits, state)."""
    if not spec.batch_first:
        x = x.transpose(0, 1)
    out, state = model(x, lengths if spec.packing else None, state)
    if not spec.batch_first:
        out = out.transpose(0, 1)
    return out, state
