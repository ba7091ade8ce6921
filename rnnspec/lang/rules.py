"""The rules of the cell options and the regularizers (design section 9), one small
function each.

A rule sees the (possibly partial) dict form of a model and the fields that failed
on their own, and returns its problems, each located at the field of the statement
or option that asks for too much. `ir.cross_field_problems` runs them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: (location, message): where a problem is, as a path of dict-form keys.
Problem = tuple[tuple[str, ...], str]

#: The regularizers of section 9 that are statements of their own, all off by default.
REGULARIZERS = ("recurrent_dropout", "weight_drop", "zoneout")

_CELL_NAMES = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _rate(value: Any) -> float:
    """A probability of the dict form as a number; 0 when absent or not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0.0
    return float(value)


def step_regularizers(data: Mapping[str, Any]) -> list[str]:
    """The regularizers set that change the recurrent step, in words."""
    found = []
    if _rate(data.get("recurrent_dropout")) > 0:
        found.append("recurrent dropout")
    cell_rate = _rate(data.get("zoneout_cell")) if data.get("cell") == "lstm" else 0
    if _rate(data.get("zoneout")) > 0 or cell_rate > 0:
        found.append("zoneout")
    return found


def _impl_torch_rule(data: Mapping[str, Any], invalid: frozenset[str]) -> list[Problem]:
    """torch's kernel has no peepholes, no layer norm, no recurrent dropout and no
    zoneout: they change the step."""
    if data.get("impl") != "torch":
        return []
    peephole = data.get("peephole") is True
    norm = data.get("norm") == "layer" and data.get("cell") != "rnn"
    regularizers = step_regularizers(data)
    if not (peephole or norm or regularizers):
        return []
    cell = "LSTM" if peephole else _CELL_NAMES.get(data.get("cell"), "LSTM")
    kind = " ".join(["layer-norm"] * norm + ["peephole"] * peephole + [cell])
    if regularizers:
        kind += " with " + " and ".join(regularizers)
    return [(("impl",), f"impl torch has no {kind}; use impl auto or custom")]


def _forget_bias_rule(
    data: Mapping[str, Any], invalid: frozenset[str]
) -> list[Problem]:
    """`forget_bias` sets the LSTM's forget-gate biases: an lstm that has biases."""
    if data.get("forget_bias") is None:
        return []
    cell = data.get("cell")
    if cell in ("rnn", "gru"):
        return [(("forget_bias",), f"'forget_bias' needs cell lstm, got cell {cell}")]
    if data.get("bias") is False:
        return [(("forget_bias",), "'forget_bias' needs bias true, got bias false")]
    return []


def _norm_rule(data: Mapping[str, Any], invalid: frozenset[str]) -> list[Problem]:
    """Layer norm is defined for the gated cells (design section 9)."""
    if data.get("norm") == "layer" and data.get("cell") == "rnn":
        return [(("norm",), "'norm layer' needs cell lstm or gru, got cell rnn")]
    return []


def _proj_rule(data: Mapping[str, Any], invalid: frozenset[str]) -> list[Problem]:
    """`proj P` is torch's LSTM `proj_size`: lstm only, and 1 ≤ P < hidden."""
    proj, cell, hidden = data.get("proj"), data.get("cell"), data.get("hidden")
    if not isinstance(proj, int):
        return []
    if cell in ("rnn", "gru"):
        return [(("proj",), f"'proj' needs cell lstm, got cell {cell}")]
    if isinstance(hidden, int) and proj >= hidden:
        return [(("proj",), f"proj must be < hidden ({hidden}), got {proj}")]
    return []


def _residual_rule(data: Mapping[str, Any], invalid: frozenset[str]) -> list[Problem]:
    """A residual stack adds layer k's input to its output, for k ≥ 1."""
    layers = data.get("layers", 1)
    if data.get("residual") is not True or "layers" in invalid:
        return []
    if isinstance(layers, int) and layers < 2:
        return [
            (("residual",), f"'residual true' needs layers ≥ 2, got layers {layers}")
        ]
    return []


def _zoneout_cell_rule(
    data: Mapping[str, Any], invalid: frozenset[str]
) -> list[Problem]:
    """`zoneout P cell=Q`: Q is the rate of an LSTM's cell state c."""
    cell = data.get("cell")
    if data.get("zoneout_cell") is None or cell not in ("rnn", "gru"):
        return []
    return [
        (
            ("zoneout_cell",),
            f"zoneout cell=Q needs cell lstm (Q is the rate of its cell state), "
            f"got cell {cell}",
        )
    ]


def _format_rate(value: Any) -> str:
    """A rate as messages show it: `0` and `0.0` alike as 0.0."""
    return repr(float(value)) if isinstance(value, (int, float)) else repr(value)


def _locked_rules(data: Mapping[str, Any], invalid: frozenset[str]) -> list[Problem]:
    """`locked=true` locks a dropout's mask over time: there must be a dropout."""
    problems: list[Problem] = []
    if data.get("dropout_locked") is True and "dropout" not in invalid:
        rate = data.get("dropout", 0.0)
        if _rate(rate) == 0:
            problems.append(
                (
                    ("dropout_locked",),
                    f"locked=true needs dropout > 0, got dropout {_format_rate(rate)}",
                )
            )
    for where in ("input", "head"):
        node = _mapping(data.get(where))
        if node.get("locked") is True and where not in invalid:
            rate = node.get("dropout", 0.0)
            if _rate(rate) == 0:
                problems.append(
                    (
                        (where, "locked"),
                        "locked=true needs dropout > 0, "
                        f"got dropout={_format_rate(rate)}",
                    )
                )
    return problems


CELL_OPTION_RULES = (
    _impl_torch_rule,
    _forget_bias_rule,
    _norm_rule,
    _proj_rule,
    _residual_rule,
    _zoneout_cell_rule,
    _locked_rules,
)


def spinn_option_problems(
    inp: Mapping[str, Any], head: Mapping[str, Any]
) -> list[Problem]:
    """The options of `input` and `head` that only the recurrent model has."""
    problems: list[Problem] = []
    for where, node, option, default in (
        ("input", inp, "word_dropout", 0.0),
        ("input", inp, "locked", False),
        ("head", head, "locked", False),
    ):
        if option in node and node[option] != default:
            problems.append(
                ((where, option), f"'{option}' does not apply to encoder spinn")
            )
    return problems
