"""The IR: one frozen pydantic `ModelSpec` per model, and every rule of the language.

The dict form (`ModelSpec.model_validate(d)`) is what experiment configs hold: field
names are statement names, `nonlinearity` is top-level, and `input`, `attention` and
`head` are nested objects. Parsed text goes through exactly the same validation.

Rules that tie several fields together live in `cross_field_problems`, which works on
partially valid data, so that a spec with several mistakes reports all of them.
"""

from __future__ import annotations

import builtins
import functools
import keyword
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from rnnspec import prebuilt
from rnnspec.lang.diagnostics import printable
from rnnspec.lang.rules import (
    CELL_OPTION_RULES,
    REGULARIZERS,
    Problem,
    spinn_option_problems,
)

#: The most layers a recurrent stack (or a SPINN classifier's MLP) may have.
MAX_LAYERS = 256
#: The largest size: features, vocabulary, embedding, hidden, tracker and head sizes.
MAX_SIZE = 2**24
#: The most parameters a model may have (8 GiB of float32 weights).
MAX_PARAMETERS = 2**31

Size = Annotated[int, Field(ge=1, le=MAX_SIZE)]
Layers = Annotated[int, Field(ge=1, le=MAX_LAYERS)]
Probability = Annotated[float, Field(ge=0.0, lt=1.0)]
Finite = Annotated[float, Field(allow_inf_nan=False)]


def _exact_int(value: Any) -> Any:
    """`Literal[1, 2]` alone takes `True` and `2.0` (they compare equal): not here."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    return value


Directions = Annotated[Literal[1, 2], BeforeValidator(_exact_int)]

#: Names generated modules import or define besides the rnnspec.nn blocks.
GENERATED_NAMES = frozenset(
    {"torch", "nn", "F", "Tensor", "math", "typing", "Optional", "Tuple", "List"}
)


@functools.cache
def reserved_names() -> frozenset[str]:
    """Names a model may not take: whatever a generated module imports or defines.

    rnnspec/nn's names come from the table computed ahead (`rnnspec.prebuilt`), so
    the language neither reads rnnspec/nn nor depends on the back end; a test keeps
    the table equal to what `rnnspec.compile.nnsource.index` finds.
    """
    return GENERATED_NAMES | prebuilt.nn_names()


#: The cell options torch does not ship (design section 9), all off by default.
CELL_OPTIONS = ("forget_bias", "norm", "proj", "residual", "initial_state")

#: Statements of the recurrent encoder, which `encoder spinn` does not take.
RECURRENT_ONLY = (
    "cell",
    "nonlinearity",
    "layers",
    "directions",
    "peephole",
    "bias",
    "dropout",
    "packing",
    "batch_first",
    "impl",
    "attention",
    *CELL_OPTIONS,
    *REGULARIZERS,
    "dropout_locked",
    "zoneout_cell",
)


class _Node(BaseModel):
    # Validators are built on first use, not at import: a command that never
    # validates a nested node alone never pays for its validator.
    model_config = ConfigDict(
        frozen=True, extra="forbid", strict=True, defer_build=True
    )


class FeaturesInput(_Node):
    """`input features N`: float vectors of size N at every step."""

    kind: Literal["features"]
    size: Size


class TokensInput(_Node):
    """`input tokens VOCAB embed=E [padding=IDX] [dropout=P [locked=true]]
    [word_dropout=P]`: embedded token ids. `locked` draws the dropout's mask once
    per sequence for all steps; `word_dropout` drops vocabulary rows (design 9)."""

    kind: Literal["tokens"]
    vocab: Size
    embed: Size
    padding: Annotated[int, Field(ge=0, lt=MAX_SIZE)] | None = None
    dropout: Probability = 0.0
    locked: bool = False
    word_dropout: Probability = 0.0


InputSpec = Annotated[Union[FeaturesInput, TokensInput], Field(discriminator="kind")]


class AttentionSpec(_Node):
    """`attention dot|general|additive [mask=] [combine=] [scale=]`."""

    kind: Literal["dot", "general", "additive"]
    mask: Literal["causal", "strict"] = "causal"
    combine: Literal["replace", "concat"] = "replace"
    scale: bool = False


class LogitsHead(_Node):
    """`head logits [tie=true] [dropout=P [locked=true]]`: projects every step to
    the vocabulary. `locked`: one dropout mask per sequence for all steps."""

    kind: Literal["logits"]
    tie: bool = False
    dropout: Probability = 0.0
    locked: bool = False


class LinearHead(_Node):
    """`head linear N [dropout=P [locked=true]]`: a linear layer on every step."""

    kind: Literal["linear"]
    size: Size
    dropout: Probability = 0.0
    locked: bool = False


class ClassesHead(_Node):
    """`head classes N [pool=last|mean|max]`: one prediction per sequence.

    `pair`, `mlp` and `mlp_hidden` belong to `encoder spinn` (an MLP classifier,
    optionally over a sentence pair); their defaults are accepted anywhere.
    """

    kind: Literal["classes"]
    size: Size
    pool: Literal["last", "mean", "max"] = "last"
    dropout: Probability = 0.0
    locked: bool = False
    pair: bool = False
    mlp: Annotated[int, Field(ge=0, le=MAX_LAYERS)] = 1
    mlp_hidden: Size | None = None


HeadSpec = Annotated[
    Union[LogitsHead, LinearHead, ClassesHead], Field(discriminator="kind")
]


class ModelSpec(_Node):
    """One `model NAME { ... }` block, validated. Frozen; unknown fields forbidden."""

    name: str
    input: InputSpec
    encoder: Literal["recurrent", "spinn"] = "recurrent"
    cell: Literal["rnn", "lstm", "gru"] | None = None
    nonlinearity: Literal["tanh", "relu"] = "tanh"
    hidden: Size
    layers: Layers = 1
    directions: Directions = 1
    peephole: bool = False
    forget_bias: Finite | None = None
    norm: Literal["none", "layer"] = "none"
    proj: Size | None = None
    residual: bool = False
    initial_state: Literal["zeros", "learned"] = "zeros"
    bias: bool = True
    dropout: Probability = 0.0
    dropout_locked: bool = False
    recurrent_dropout: Probability = 0.0
    weight_drop: Probability = 0.0
    zoneout: Probability = 0.0
    zoneout_cell: Probability | None = None
    packing: bool = False
    batch_first: bool = True
    impl: Literal["auto", "torch", "custom"] = "auto"
    attention: AttentionSpec | None = None
    head: HeadSpec | None = None
    tracker: Size | None = None

    @field_validator("name")
    @classmethod
    def _check_name(cls, name: str) -> str:
        problem = name_problem(name)
        if problem:
            raise PydanticCustomError("model_name", problem)
        return name

    @model_validator(mode="after")
    def _check_rules(self, info: ValidationInfo) -> ModelSpec:
        problems = cross_field_problems(self.model_dump()) or size_problems(self)
        collected = info.context.get("problems") if info.context else None
        if collected is not None:  # the text front end maps them to positions
            collected.extend(problems)
        elif problems:
            raise ValidationError.from_exception_data(
                "ModelSpec",
                [
                    InitErrorDetails(
                        type=PydanticCustomError("spec_rule", message),
                        loc=loc,
                        input=_lookup(self.model_dump(), loc),
                    )
                    for loc, message in problems
                ],
            )
        return self

    # -- derived sizes: the one place that knows how parts connect ------------------

    @property
    def output_hidden(self) -> int:
        """Width of h, and of the outputs, per direction: P with `proj`, else H."""
        return self.proj or self.hidden

    @property
    def directions_hidden(self) -> int:
        """Width of the recurrent outputs: directions × (proj or hidden)."""
        return self.directions * self.output_hidden

    @property
    def attended_size(self) -> int:
        """Width after attention (doubled by `combine=concat`)."""
        if self.attention is not None and self.attention.combine == "concat":
            return 2 * self.directions_hidden
        return self.directions_hidden

    @property
    def head_input_size(self) -> int:
        if self.encoder == "spinn":
            return self.hidden
        return self.attended_size

    @property
    def output_size(self) -> int:
        """Features of the model's output per step (or per sequence)."""
        if self.head is None:
            return self.head_input_size
        if isinstance(self.head, LogitsHead):
            return self.input.vocab  # type: ignore[union-attr]
        return self.head.size

    @property
    def kernel(self) -> str:
        """Which recurrent kernel the spec runs: 'torch', 'custom' or 'auto'.

        'auto' (packing with impl auto) picks per call: the custom kernel for packed
        input on CPU, torch's packed cuDNN kernel on CUDA. `peephole`, `norm layer`,
        `recurrent_dropout` and `zoneout` change the step itself, so only the custom
        kernel runs them; the other options act around the step and run on torch's
        kernel too.
        """
        if self.impl == "custom" or self.changes_step():
            return "custom"
        if self.impl == "auto" and self.packing:
            return "auto"
        return "torch"

    def changes_step(self) -> list[str]:
        """The options set that change the recurrent step (only our kernel runs
        them), as statements."""
        found = ["norm layer"] * (self.norm == "layer") + ["peephole"] * self.peephole
        if self.recurrent_dropout > 0:
            found.append("recurrent_dropout")
        if self.zoneout > 0 or (self.cell == "lstm" and (self.zoneout_cell or 0) > 0):
            found.append("zoneout")
        return found

    def summary(self) -> str:
        """One line saying what the model is, for docstrings and `inspect`."""
        if self.encoder == "spinn":
            body = "SPINN shift-reduce TreeLSTM encoder"
            if self.tracker:
                body += f" with a {self.tracker}-unit tracker"
        else:
            cell = {"rnn": f"{self.nonlinearity} RNN", "lstm": "LSTM", "gru": "GRU"}[
                self.cell or "lstm"
            ]
            if self.peephole:
                cell = "peephole " + cell
            if self.norm == "layer":
                cell = "layer-norm " + cell
            parts = []
            if self.directions == 2:
                parts.append("bidirectional")
            if self.layers > 1:
                parts.append(f"{self.layers}-layer")
            if self.residual:
                parts.append("residual")
            body = " ".join([*parts, cell])
            extras = self._summary_extras()
            if extras:
                body += " with " + ", ".join(extras[:-1])
                body += " and " * (len(extras) > 1) + extras[-1]
        if isinstance(self.input, TokensInput):
            body += f" over {self.input.vocab} tokens"
        else:
            body += f" over {self.input.size} features"
        if self.head is not None:
            body += f", {self.head.kind} head"
        return body[0].upper() + body[1:] + "."

    def _summary_extras(self) -> list[str]:
        """What the recurrent stack comes with, for `summary`."""
        from rnnspec.lang.printer import format_value

        extras = []
        if self.proj is not None:
            extras.append(f"{self.proj}-unit projections")
        if self.forget_bias is not None:
            extras.append(f"forget-gate bias {format_value(self.forget_bias)}")
        if self.initial_state == "learned":
            extras.append("a learned initial state")
        if self.attention is not None:
            extras.append(f"{self.attention.kind} attention")
        return extras

    def to_source(self) -> str:
        """The canonical `.rnn` text of this model."""
        from rnnspec.lang.printer import model_source

        return model_source(self)


def name_problem(name: str) -> str | None:
    """Why `name` cannot be a model (class) name, or None when it can.

    Names are ASCII: Python NFKC-normalises identifiers, so `ｔｏｒｃｈ` would be
    `torch` in generated code (shadowing it) while `instantiate` kept it apart.
    """
    if not name.isascii():
        import unicodedata

        normal = unicodedata.normalize("NFKC", name)
        read_as = (
            f"; Python reads it as '{printable(normal)}'" if normal != name else ""
        )
        return (
            f"model name '{printable(name)}' must be ASCII "
            f"(letters, digits and '_'){read_as}"
        )
    if not name.isidentifier():
        return f"model name '{printable(name)}' is not a Python identifier"
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        return f"model name '{name}' is a Python keyword"
    if name.startswith("_"):
        return f"model name '{name}' must not start with '_'"
    if name in dir(builtins):
        return f"model name '{name}' shadows the Python builtin '{name}'"
    if name in reserved_names():
        return f"model name '{name}' shadows '{name}', which generated code uses"
    return None


#: Which statement to point at when a part holds most of too many parameters.
_PART_STATEMENT = {
    "embedding": ("input", "the embedding"),
    "rnn": ("hidden", "the recurrent stack"),
    "encoder": ("hidden", "the SPINN encoder"),
    "attention": ("attention", "the attention"),
    "head": ("head", "the head"),
}


def parameter_counts(spec: ModelSpec) -> dict[str, int]:
    """Parameters per submodule of the model `spec` builds, from its sizes alone.

    The parts are the model's children (`embedding`, `rnn` or `encoder`,
    `attention`, `head`); a tied head counts only its bias (its weight is the
    embedding's). No torch: `check` uses it to refuse models too large to build.
    """
    counts: dict[str, int] = {}
    if isinstance(spec.input, TokensInput):
        counts["embedding"] = spec.input.vocab * spec.input.embed
    if spec.encoder == "spinn":
        counts["encoder"] = _spinn_encoder_parameters(spec)
        if isinstance(spec.head, ClassesHead):
            counts["head"] = _spinn_head_parameters(spec, spec.head)
        return counts
    counts["rnn"] = _stack_parameters(spec)
    width = spec.directions_hidden
    if spec.attention is not None and spec.attention.kind != "dot":
        linears = 1 if spec.attention.kind == "general" else 2
        counts["attention"] = linears * (width * width + width)
    if spec.head is not None:
        inputs, outputs = spec.head_input_size, spec.output_size
        tied = isinstance(spec.head, LogitsHead) and spec.head.tie
        counts["head"] = outputs + (0 if tied else inputs * outputs)
    return counts


def _stack_parameters(spec: ModelSpec) -> int:
    """torch's layout, per layer and direction: W_ih, W_hh (gates·H × P with `proj`),
    two biases, then peepholes, W_hr (P × H), the layer norm's parameters; and the
    learned initial state h0 (L·D × P or H) and, for lstm, c0 (L·D × H)."""
    gates = {"rnn": 1, "lstm": 4, "gru": 3}[spec.cell or "lstm"]
    hidden, width, out = spec.hidden, gates * spec.hidden, spec.output_hidden
    if isinstance(spec.input, TokensInput):
        first = spec.input.embed
    else:
        first = spec.input.size
    total = 0
    for inputs in [first] + [spec.directions_hidden] * (spec.layers - 1):
        one = width * (inputs + out) + (2 * width if spec.bias else 0)
        one += 3 * hidden if spec.peephole else 0
        one += out * hidden if spec.proj is not None else 0
        one += _layer_norm_parameters(spec, width) if spec.norm == "layer" else 0
        total += spec.directions * one
    if spec.initial_state == "learned":
        rows = spec.layers * spec.directions
        total += rows * out + (rows * hidden if spec.cell == "lstm" else 0)
    return total


def _layer_norm_parameters(spec: ModelSpec, width: int) -> int:
    """Gains of LN(W_ih x) and LN(W_hh h) (their biases are b_ih, b_hh); for lstm,
    the gain and bias of LN(c)."""
    return 2 * width + (2 * spec.hidden if spec.cell == "lstm" else 0)


def _spinn_encoder_parameters(spec: ModelSpec) -> int:
    """Projection E→2H, TreeLSTM reduce (5H gates), LSTM-cell tracker over 3H."""
    assert isinstance(spec.input, TokensInput)
    embed, hidden, tracker = spec.input.embed, spec.hidden, spec.tracker or 0
    projection = embed * 2 * hidden + 2 * hidden
    reduce = 2 * hidden * 5 * hidden + 5 * hidden + tracker * 5 * hidden
    tracker_cell = 4 * tracker * (3 * hidden + tracker) + 8 * tracker if tracker else 0
    return projection + reduce + tracker_cell


def _spinn_head_parameters(spec: ModelSpec, head: ClassesHead) -> int:
    """`mlp` hidden Linear layers (width `mlp_hidden` or H), then Linear to classes."""
    width = 4 * spec.hidden if head.pair else spec.hidden
    total = 0
    for _ in range(head.mlp):
        hidden = head.mlp_hidden or spec.hidden
        total += width * hidden + hidden
        width = hidden
    return total + width * head.size + head.size


def size_problems(spec: ModelSpec) -> list[Problem]:
    """A model over `MAX_PARAMETERS`, reported at the statement of its largest part."""
    counts = parameter_counts(spec)
    total = sum(counts.values())
    if total <= MAX_PARAMETERS:
        return []
    part = max(counts, key=lambda name: counts[name])
    statement, what = _PART_STATEMENT[part]
    return [
        (
            (statement,),
            f"model '{spec.name}' would have {total:,} parameters, more than the "
            f"limit of {MAX_PARAMETERS:,} ({what} has {counts[part]:,})",
        )
    ]


def _lookup(data: Any, loc: tuple) -> Any:
    for part in loc:
        if not isinstance(data, Mapping) or part not in data:
            return None
        data = data[part]
    return data


def cross_field_problems(
    data: Mapping[str, Any], invalid: frozenset[str] = frozenset()
) -> list[Problem]:
    """Rules that relate fields; `data` may be partial (the `invalid` fields removed).

    Each rule looks only at fields that are present, so independent mistakes are all
    found. Returns (location, message) pairs.
    """
    inp = _mapping(data.get("input"))
    head = _mapping(data.get("head"))
    if data.get("encoder", "recurrent") == "spinn":
        return _spinn_problems(data, inp, head)
    problems = _recurrent_problems(data, inp, head, invalid)
    tie = _tie_problem(data, inp, head, invalid)
    if tie:
        problems.append(tie)
    vocab, padding = inp.get("vocab"), inp.get("padding")
    if isinstance(vocab, int) and isinstance(padding, int) and padding >= vocab:
        problems.append(
            (("input", "padding"), f"padding must be < vocab ({vocab}), got {padding}")
        )
    return problems


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _spinn_problems(
    data: Mapping[str, Any], inp: Mapping[str, Any], head: Mapping[str, Any]
) -> list[Problem]:
    """`encoder spinn` takes tokens, no recurrent statements, a classes head."""
    defaults = ModelSpec.model_fields
    problems: list[Problem] = [
        ((field,), f"'{field}' does not apply to encoder spinn")
        for field in RECURRENT_ONLY
        if field in data and data[field] != defaults[field].default
    ]
    if inp.get("kind") == "features":
        problems.append(
            (("input", "kind"), "encoder spinn reads tokens: use 'input tokens'")
        )
    if head.get("kind") in ("logits", "linear"):
        problems.append(
            (("head", "kind"), "encoder spinn takes 'head classes N' or no head")
        )
    if head.get("kind") == "classes" and head.get("pool", "last") != "last":
        problems.append((("head", "pool"), "pool does not apply to encoder spinn"))
    problems.extend(spinn_option_problems(inp, head))
    return problems


def _recurrent_problems(
    data: Mapping[str, Any],
    inp: Mapping[str, Any],
    head: Mapping[str, Any],
    invalid: frozenset[str],
) -> list[Problem]:
    """Options of the recurrent encoder that do not fit its cell, input or head."""
    problems: list[Problem] = []
    cell = data.get("cell")
    if cell is None and "cell" not in invalid:
        problems.append((("cell",), "missing required statement 'cell'"))
    if data.get("tracker") is not None:
        problems.append((("tracker",), "'tracker' needs encoder spinn"))
    if data.get("nonlinearity") == "relu" and cell in ("lstm", "gru"):
        problems.append(
            (("nonlinearity",), f"nonlinearity=relu needs cell rnn, got cell {cell}")
        )
    if data.get("peephole") is True and cell in ("rnn", "gru"):
        problems.append(
            (("peephole",), f"'peephole true' needs cell lstm, got cell {cell}")
        )
    for rule in CELL_OPTION_RULES:
        problems.extend(rule(data, invalid))
    if head.get("kind") == "logits" and inp.get("kind") == "features":
        problems.append((("head", "kind"), "'head logits' needs 'input tokens'"))
    if head.get("kind") == "classes":
        for option, default in (("pair", False), ("mlp", 1), ("mlp_hidden", None)):
            if head.get(option, default) != default:
                problems.append((("head", option), f"'{option}' needs encoder spinn"))
    return problems


def _tie_problem(
    data: Mapping[str, Any],
    inp: Mapping[str, Any],
    head: Mapping[str, Any],
    invalid: frozenset[str],
) -> Problem | None:
    """`head logits tie=true` shares the embedding: their sizes must agree."""
    if not (
        "proj" not in invalid
        and head.get("kind") == "logits"
        and head.get("tie") is True
        and isinstance(inp.get("embed"), int)
        and isinstance(data.get("hidden"), int)
    ):
        return None
    directions = data.get("directions", 1)
    proj = data.get("proj") if data.get("cell") not in ("rnn", "gru") else None
    per_direction = proj if isinstance(proj, int) else data["hidden"]
    width = (directions if isinstance(directions, int) else 1) * per_direction
    attention = data.get("attention")
    if isinstance(attention, Mapping) and attention.get("combine") == "concat":
        width *= 2
    if inp["embed"] == width:
        return None
    return (
        ("head", "tie"),
        f"tie=true needs embed == the head's input size; "
        f"embed is {inp['embed']}, the head's input size is {width}",
    )
