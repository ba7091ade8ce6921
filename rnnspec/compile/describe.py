"""`rnnspec inspect`: what a spec becomes — parameters per part, shapes, kernels."""

from __future__ import annotations

from rnnspec.compile.runtime import instantiate
from rnnspec.lang.ir import ModelSpec, TokensInput

_KERNELS = {
    "torch": "torch's fused kernel (oneDNN on CPU, cuDNN on CUDA)",
    "custom": "rnnspec custom kernel",
    "auto": "rnnspec kernel for packed input on CPU; torch's (cuDNN) otherwise",
}


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
    states = f"({spec.layers * spec.directions}, B, {spec.hidden})"
    state = f"(h, c) each {states}" if spec.cell == "lstm" else f"h {states}"
    return x, out, state


def describe(spec: ModelSpec) -> str:
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
        where = _KERNELS[spec.kernel] if name == "rnn" else "torch"
        lines.append(f"  {name:<11}{count:>12,}  {kind}: {where}")
    lines.append(f"  {'total':<11}{total:>12,}")
    return "\n".join(lines) + "\n"
