"""IR → canonical `.rnn` text: fixed statement order, aligned values, defaults omitted.

`parse(model_source(spec))` gives back `spec`; generated docstrings quote this text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the IR imports this module to print itself: no cycle at run time
    from rnnspec.lang.ir import ModelSpec

#: Canonical statement order (also the order `rnnspec fmt` prints).
STATEMENT_ORDER = (
    "input",
    "encoder",
    "cell",
    "peephole",
    "forget_bias",
    "norm",
    "proj",
    "residual",
    "initial_state",
    "hidden",
    "layers",
    "directions",
    "bias",
    "dropout",
    "recurrent_dropout",
    "weight_drop",
    "zoneout",
    "packing",
    "batch_first",
    "impl",
    "tracker",
    "attention",
    "head",
)

#: The options of one-value statements: option → the top-level field it sets
#: (`dropout 0.3 locked=true` sets `dropout_locked`), in printing order.
SCALAR_OPTIONS = {
    "dropout": {"locked": "dropout_locked"},
    "zoneout": {"cell": "zoneout_cell"},
}


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
        return text if any(c in text for c in ".en") else text + ".0"
    return str(value)


def _options(node: Any, skip: tuple[str, ...]) -> list[str]:
    """`key=value` for every field of a nested node that differs from its default."""
    out = []
    for name, field in type(node).model_fields.items():
        value = getattr(node, name)
        if name in skip or value == field.default:
            continue
        out.append(f"{name}={format_value(value)}")
    return out


def statement_values(spec: ModelSpec) -> dict[str, list[str]]:
    """Statement keyword → its printed arguments, for the non-default statements."""
    defaults = type(spec).model_fields
    out: dict[str, list[str]] = {}
    inp = spec.input
    if inp.kind == "tokens":
        out["input"] = ["tokens", str(inp.vocab), *_options(inp, ("kind", "vocab"))]
    else:
        out["input"] = ["features", str(inp.size)]
    for name in STATEMENT_ORDER:
        if name in ("input", "attention", "head", "cell"):
            continue
        value = getattr(spec, name)
        options = [
            f"{key}={format_value(getattr(spec, field))}"
            for key, field in SCALAR_OPTIONS.get(name, {}).items()
            if getattr(spec, field) != defaults[field].default
        ]
        if name in ("hidden",) or value != defaults[name].default or options:
            out[name] = [format_value(value), *options]
    if spec.cell is not None:
        out["cell"] = [spec.cell]
        if spec.nonlinearity != "tanh":
            out["cell"].append(f"nonlinearity={spec.nonlinearity}")
    if spec.attention is not None:
        out["attention"] = [spec.attention.kind, *_options(spec.attention, ("kind",))]
    if spec.head is not None:
        head = spec.head
        args = [head.kind]
        if hasattr(head, "size"):
            args.append(str(head.size))
        out["head"] = args + _options(head, ("kind", "size"))
    return {name: out[name] for name in STATEMENT_ORDER if name in out}


def statement_line(keyword: str, args: list[str]) -> str:
    return f"    {keyword.ljust(10)} {' '.join(args)}".rstrip()


def model_source(spec: ModelSpec) -> str:
    lines = [f"model {spec.name} {{"]
    for keyword, args in statement_values(spec).items():
        lines.append(statement_line(keyword, args))
    lines.append("}")
    return "\n".join(lines) + "\n"
