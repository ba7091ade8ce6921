"""`rnnspec inspect`: what a spec becomes — parameters per part, shapes, kernels.

Which kernel the recurrent stack runs, and why, is read off the spec and the plan
(`kernel_note`), not off the built modules: the same rules that chose the class.
"""

from __future__ import annotations

from rnnspec.lang.ir import ModelSpec, TokensInput

_TORCH_KERNEL = "torch's fused kernel (oneDNN on CPU, cuDNN on CUDA)"
#: torch runs `proj_size` with cuDNN on CUDA, but oneDNN has no projection.
_TORCH_PROJ_KERNEL = (
    "torch's fused kernel (cuDNN on CUDA; on CPU its own: oneDNN has no proj)"
)
_AUTO_KERNEL = "rnnspec kernel for packed input on CPU; torch's (cuDNN) otherwise"
_OUR_KERNEL = "rnnspec custom kernel"


def _shapes(spec: ModelSpec) -> tuple[str, str, str]:
    time = "(B, T" if spec.batch_first else "(T, B"
    if isinstance(spec.input, TokensInput):
        x = f"{time}) int64 token ids < {spec.input.vocab}"
    else:
        x = f"{time}, {spec.input.size}) float"
    if spec.packing:
        x += ", lengths (B,)"
    if spec.encoder == "spinn":
        x = "tokens (B, N) int64, transitions (B, S) int64"
        out = f"(B, {spec.output_size})"
        return x, out, f"(h, c) each (B, {spec.hidden})"
    if spec.head is not None and spec.head.kind == "classes":
        out = f"(B, {spec.output_size})"
    else:
        out = f"{time}, {spec.output_size})"
    rows = spec.layers * spec.directions
    states = f"({rows}, B, {spec.hidden})"
    if spec.cell != "lstm":
        state = f"h {states}"
    elif spec.proj is not None:
        state = f"h ({rows}, B, {spec.proj}), c {states}"
    else:
        state = f"(h, c) each {states}"
    if spec.initial_state == "learned":
        state += "; learned initial state"
    return x, out, state


def kernel_note(spec: ModelSpec) -> str:
    """Which kernel the recurrent stack runs, and why, in a few words."""
    changes_step = spec.changes_step()
    if changes_step:
        verb = "needs" if len(changes_step) == 1 else "need"
        return f"{_OUR_KERNEL} ({_and(changes_step)} {verb} it)"
    if spec.kernel == "custom":
        return f"{_OUR_KERNEL} (impl custom)"
    if spec.kernel == "auto":
        note = _AUTO_KERNEL
    else:
        note = _TORCH_PROJ_KERNEL if spec.proj else _TORCH_KERNEL
    if spec.weight_drop > 0:
        note += ", W_hh dropped and passed in (weight_drop)"
    one_at_a_time = ["residual"] * spec.residual
    one_at_a_time += ["locked dropout"] * (spec.dropout_locked and spec.layers > 1)
    if one_at_a_time:
        note += f", called a layer at a time ({_and(one_at_a_time)})"
    return note


def _dropout_note(spec: ModelSpec, part: str) -> str:
    """'torch', with the dropouts of section 9 the embedding or the head applies."""
    found = []
    if part == "embedding" and isinstance(spec.input, TokensInput):
        if spec.input.word_dropout > 0:
            found.append(f"word dropout {spec.input.word_dropout}")
        if spec.input.locked:
            found.append(f"locked dropout {spec.input.dropout} on its output")
    if part == "head" and spec.head is not None and spec.head.locked:
        found.append(f"locked dropout {spec.head.dropout} on its input")
    return "torch" + (f" ({_and(found)})" if found else "")


def _and(words: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " and " + words[-1]


def describe(spec: ModelSpec) -> str:
    from rnnspec.compile.runtime import instantiate  # torch: only when inspecting

    model = instantiate(spec)
    x, out, state = _shapes(spec)
    lines = [f"{spec.name}: {spec.summary()}", f"  input   {x}"]
    lines += [f"  output  {out}", f"  state   {state}", ""]
    lines.append(f"  {'part':<11}{'parameters':>12}  runs on")
    total = 0
    for name, child in model.named_children():
        count = sum(p.numel() for p in child.parameters())
        if name == "head" and spec.head is not None and getattr(spec.head, "tie", 0):
            count -= child.weight.numel()  # tied to the embedding, counted there
        total += count
        kind = type(child).__name__
        where = kernel_note(spec) if name == "rnn" else _dropout_note(spec, name)
        lines.append(f"  {name:<11}{count:>12,}  {kind}: {where}")
    lines.append(f"  {'total':<11}{total:>12,}")
    return "\n".join(lines) + "\n"
