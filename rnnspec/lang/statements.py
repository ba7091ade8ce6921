"""What every statement, value and option of the language means: the one table.

The language server's hover and completion, the README's language table, the JSON
Schema's descriptions and the highlighters' keyword lists all read `STATEMENTS`
(and `FILE_KEYWORDS`); `tests/lang/test_statements.py` checks that the table covers
every statement `lower` accepts and every field and value of the IR, so that a new
statement cannot land undocumented. Pure data: no pydantic, no lark, no torch.

`python -m rnnspec.lang.statements README.md` rewrites the README's table.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Word:
    """A word a value may be (`lstm`, `strict`, `true`).

    `size` names the IR field of a number written after the word (`features N`:
    "size"), and `size_help` says what it is.
    """

    word: str
    help: str
    size: str = ""
    size_help: str = ""


@dataclass(frozen=True)
class OptionDoc:
    """`key=value` after a statement's values.

    `kinds`: the statement's first words that take the option (() for all of them);
    `field`: the IR field it sets, a dotted path from the model (`dropout_locked`,
    `input.embed`).
    """

    key: str
    form: str
    default: str
    help: str
    field: str
    words: tuple[Word, ...] = ()
    kinds: tuple[str, ...] = ()


@dataclass(frozen=True)
class StatementDoc:
    """One statement: `form` is its syntax as the README shows it, `value` the
    placeholder of a number it takes (`H`) when it takes no word."""

    keyword: str
    form: str
    default: str
    help: str
    words: tuple[Word, ...] = ()
    value: str = ""
    options: tuple[OptionDoc, ...] = ()

    @property
    def field(self) -> str:
        """The IR field the statement sets: its keyword."""
        return self.keyword

    def word(self, word: str) -> Word | None:
        return next((w for w in self.words if w.word == word), None)

    def options_for(self, kind: str | None) -> tuple[OptionDoc, ...]:
        """The options the statement takes after the first word `kind`."""
        return tuple(o for o in self.options if not o.kinds or kind in o.kinds)

    def option(self, key: str, kind: str | None = None) -> OptionDoc | None:
        """Option `key` for `kind`, else for any kind (hover on a misplaced one)."""
        found = [o for o in self.options if o.key == key]
        return next((o for o in found if not o.kinds or kind in o.kinds), None) or (
            found[0] if found else None
        )


def _switch(on: str, off: str) -> tuple[Word, Word]:
    return (Word("true", on), Word("false", off))


_PROBABILITY = "0 ≤ P < 1"
_LOCKED = OptionDoc(
    "locked",
    "true|false",
    "false",
    "One dropout mask per sequence, the same at every step (AWD-LSTM's locked "
    "dropout); needs dropout > 0.",
    "",
    _switch("one mask per sequence", "a fresh mask at every step"),
)


def _locked(field: str, kinds: tuple[str, ...] = ()) -> OptionDoc:
    return OptionDoc(
        _LOCKED.key,
        _LOCKED.form,
        _LOCKED.default,
        _LOCKED.help,
        field,
        _LOCKED.words,
        kinds,
    )


_INPUT = StatementDoc(
    "input",
    "`features N` or `tokens VOCAB embed=E [padding=IDX] [dropout=P [locked=true]] "
    "[word_dropout=P]`",
    "required",
    "What the model reads at every step: feature vectors or token ids.",
    words=(
        Word(
            "features",
            "Float vectors of N features at every step, (B, T, N).",
            "size",
            "N: features per step (≥ 1).",
        ),
        Word(
            "tokens",
            "Token ids, (B, T) int64, embedded before the recurrent stack.",
            "vocab",
            "VOCAB: the vocabulary size (≥ 1).",
        ),
    ),
    options=(
        OptionDoc(
            "embed",
            "E",
            "required",
            "Embedding size E (≥ 1).",
            "input.embed",
            kinds=("tokens",),
        ),
        OptionDoc(
            "padding",
            "IDX",
            "none",
            "Token id of padding, 0 ≤ IDX < VOCAB: its embedding is zero and gets "
            "no gradient (torch's padding_idx).",
            "input.padding",
            kinds=("tokens",),
        ),
        OptionDoc(
            "dropout",
            "P",
            "0",
            f"Dropout on the embeddings, {_PROBABILITY}.",
            "input.dropout",
            kinds=("tokens",),
        ),
        _locked("input.locked", ("tokens",)),
        OptionDoc(
            "word_dropout",
            "P",
            "0",
            "Word dropout (AWD-LSTM's embedding dropout): in training each vocabulary "
            "row is zeroed with probability P, the others scaled by 1/(1−P), so a "
            "dropped word is dropped everywhere in the batch.",
            "input.word_dropout",
            kinds=("tokens",),
        ),
    ),
)

_ENCODER = StatementDoc(
    "encoder",
    "recurrent | spinn (a shift-reduce TreeLSTM; `tracker N`)",
    "recurrent",
    "Which encoder reads the input: a recurrent stack, or SPINN over parse trees.",
    words=(
        Word("recurrent", "A stack of recurrent layers (`cell`, `hidden`, `layers`)."),
        Word(
            "spinn",
            "SPINN: a shift-reduce TreeLSTM over bracketed trees, with an optional "
            "tracker LSTM; takes `input tokens` and `head classes N`.",
        ),
    ),
)

_CELL = StatementDoc(
    "cell",
    "`rnn [nonlinearity=tanh|relu]` | `lstm` | `gru`",
    "required",
    "The recurrent cell (required unless `encoder spinn`).",
    words=(
        Word("rnn", "Elman RNN: h_t = tanh(W_ih x_t + W_hh h_{t−1} + b), as nn.RNN."),
        Word("lstm", "Long short-term memory, as nn.LSTM: gates i, f, g, o."),
        Word("gru", "Gated recurrent unit, as nn.GRU: gates r, z, n."),
    ),
    options=(
        OptionDoc(
            "nonlinearity",
            "tanh|relu",
            "tanh",
            "The RNN's activation; relu needs cell rnn.",
            "nonlinearity",
            (Word("tanh", "h_t = tanh(...)."), Word("relu", "h_t = relu(...).")),
            kinds=("rnn",),
        ),
    ),
)

_PEEPHOLE = StatementDoc(
    "peephole",
    "true | false (lstm only)",
    "false",
    "Peephole connections: the gates also see the cell state (Gers & Schmidhuber); "
    "runs on the custom kernel.",
    words=_switch("gates see c_{t−1} (i, f) and c_t (o)", "a plain LSTM"),
)

_FORGET_BIAS = StatementDoc(
    "forget_bias",
    "F",
    "off",
    "Initial forget-gate bias: the forget slice of every `bias_ih` starts at F, of "
    "`bias_hh` at 0 (Jozefowicz et al. 2015; lstm with `bias true`).",
    value="F",
)

_NORM = StatementDoc(
    "norm",
    "none | layer (lstm, gru)",
    "none",
    "Layer-normalised recurrence (Ba et al. 2016); runs on the custom kernel.",
    words=(
        Word("none", "No normalisation."),
        Word(
            "layer",
            "LN on W_ih x_t and W_hh h_{t−1} (and, for lstm, on c_t before tanh), "
            "gains from 1; lstm or gru.",
        ),
    ),
)

_PROJ = StatementDoc(
    "proj",
    "P, 1 ≤ P < H (lstm only)",
    "off",
    "LSTM projections, torch's `proj_size`: h and the outputs are P wide, c stays "
    "H wide (`weight_hr_l{k}`).",
    value="P",
)

_RESIDUAL = StatementDoc(
    "residual",
    "true | false (`layers` ≥ 2)",
    "false",
    "Residual stack: every layer after the first adds its input to its output.",
    words=_switch("layer k ≥ 1 outputs layer_k(x) + x", "a plain stack"),
)

_INITIAL_STATE = StatementDoc(
    "initial_state",
    "zeros | learned",
    "zeros",
    "The state used when none is passed.",
    words=(
        Word("zeros", "h0 (and c0) are zeros."),
        Word(
            "learned",
            "h0 (and, for lstm, c0) are parameters of `model.rnn`, zeros at init.",
        ),
    ),
)

_DROPOUT = StatementDoc(
    "dropout",
    "P `[locked=true]`",
    "0",
    f"Dropout between stacked layers, as torch's `dropout`, {_PROBABILITY}.",
    value="P",
    options=(_locked("dropout_locked"),),
)

_ZONEOUT = StatementDoc(
    "zoneout",
    "P `[cell=Q]`",
    "0",
    "Zoneout (Krueger et al. 2017): in training each unit of h keeps its previous "
    "value with probability P at each step; in eval h mixes in P of it. Runs on "
    "the custom kernel.",
    value="P",
    options=(
        OptionDoc(
            "cell",
            "Q",
            "P",
            "Zoneout rate of an LSTM's cell state c (cell lstm), with its own mask.",
            "zoneout_cell",
        ),
    ),
)

_ATTENTION = StatementDoc(
    "attention",
    "none | dot | general | additive `[mask=causal|strict] [combine=replace|concat] "
    "[scale=true|false]`",
    "none",
    "Attention of every step over the steps before it.",
    words=(
        Word("none", "No attention."),
        Word("dot", "Scores q·k."),
        Word("general", "Scores q·W k (Luong's general)."),
        Word("additive", "Scores v·tanh(W q + U k) (Bahdanau)."),
    ),
    options=(
        OptionDoc(
            "mask",
            "causal|strict",
            "causal",
            "Which earlier steps a step attends to.",
            "attention.mask",
            (
                Word("causal", "Steps up to and including itself."),
                Word("strict", "Only the steps strictly before it."),
            ),
        ),
        OptionDoc(
            "combine",
            "replace|concat",
            "replace",
            "What the attended context does to the recurrent output.",
            "attention.combine",
            (
                Word("replace", "The context replaces the output."),
                Word("concat", "[output; context]: twice as wide."),
            ),
        ),
        OptionDoc(
            "scale",
            "true|false",
            "false",
            "Divide the scores by √width.",
            "attention.scale",
            _switch("scores / √d", "unscaled scores"),
        ),
    ),
)

_HEAD = StatementDoc(
    "head",
    "none | `logits [tie=true]` | `linear N` | `classes N [pool=last|mean|max]`, "
    "`dropout=P [locked=true]`",
    "none",
    "The output layer; `dropout=P` drops its input.",
    words=(
        Word("none", "No head: the model outputs the recurrent features."),
        Word(
            "logits",
            "Projects every step to the vocabulary (tokens input only).",
        ),
        Word(
            "linear",
            "A linear layer to N features at every step.",
            "size",
            "N: output features per step (≥ 1).",
        ),
        Word(
            "classes",
            "One prediction of N classes per sequence.",
            "size",
            "N: the number of classes.",
        ),
    ),
    options=(
        OptionDoc(
            "tie",
            "true|false",
            "false",
            "Share the embedding's weight (needs embed equal to the head's input).",
            "head.tie",
            _switch("weight tied to the embedding", "a weight of its own"),
            kinds=("logits",),
        ),
        OptionDoc(
            "pool",
            "last|mean|max",
            "last",
            "How the steps of a sequence become one vector.",
            "head.pool",
            (
                Word("last", "The last step (of each direction)."),
                Word("mean", "The mean over the steps."),
                Word("max", "The maximum over the steps."),
            ),
            kinds=("classes",),
        ),
        OptionDoc(
            "dropout",
            "P",
            "0",
            f"Dropout on the head's input, {_PROBABILITY}.",
            "head.dropout",
            kinds=("logits", "linear", "classes"),
        ),
        _locked("head.locked", ("logits", "linear", "classes")),
        OptionDoc(
            "pair",
            "true|false",
            "false",
            "Classify a pair of sentences from [a; b; a−b; a⊙b] (encoder spinn).",
            "head.pair",
            _switch("sentence-pair classifier", "one sentence"),
            kinds=("classes",),
        ),
        OptionDoc(
            "mlp",
            "M",
            "1",
            "Hidden layers of the classifier MLP, 0 ≤ M ≤ 256 (encoder spinn).",
            "head.mlp",
            kinds=("classes",),
        ),
        OptionDoc(
            "mlp_hidden",
            "W",
            "hidden",
            "Width of the MLP's hidden layers (encoder spinn).",
            "head.mlp_hidden",
            kinds=("classes",),
        ),
    ),
)

#: Every statement of a model block, in the order the README lists them.
STATEMENTS: tuple[StatementDoc, ...] = (
    _INPUT,
    _CELL,
    StatementDoc(
        "hidden", "H", "required", "Hidden units per layer and direction.", value="H"
    ),
    StatementDoc(
        "layers", "L", "1", "Stacked recurrent layers, 1 ≤ L ≤ 256.", value="L"
    ),
    StatementDoc(
        "directions",
        "1 | 2",
        "1",
        "2: a bidirectional stack, outputs twice as wide.",
        words=(Word("1", "Forward only."), Word("2", "Bidirectional.")),
    ),
    _PEEPHOLE,
    _FORGET_BIAS,
    _NORM,
    _PROJ,
    _RESIDUAL,
    _INITIAL_STATE,
    StatementDoc(
        "bias",
        "true | false",
        "true",
        "Bias vectors in the recurrent layers.",
        words=_switch("b_ih and b_hh", "no biases"),
    ),
    _DROPOUT,
    StatementDoc(
        "recurrent_dropout",
        "P",
        "0",
        "Variational dropout on h_{t−1} in the recurrent term (Gal & Ghahramani): "
        "one mask per sequence, layer and direction. Runs on the custom kernel.",
        value="P",
    ),
    StatementDoc(
        "weight_drop",
        "P",
        "0",
        "DropConnect on every W_hh (AWD-LSTM's weight drop): one mask per forward "
        "call, layer and direction.",
        value="P",
    ),
    _ZONEOUT,
    StatementDoc(
        "packing",
        "true | false",
        "false",
        "The model takes per-sequence `lengths` (variable-length batches).",
        words=_switch("forward(x, lengths=...)", "every sequence is T long"),
    ),
    StatementDoc(
        "batch_first",
        "true | false",
        "true",
        "Inputs and outputs are (batch, time, ...) rather than (time, batch, ...).",
        words=_switch("(B, T, ...)", "(T, B, ...)"),
    ),
    StatementDoc(
        "impl",
        "auto | torch | custom",
        "auto",
        "Which recurrent kernel runs.",
        words=(
            Word(
                "auto",
                "The fastest exact kernel for the spec and device: torch's fused one "
                "where the spec allows it, the custom one otherwise.",
            ),
            Word("torch", "torch's fused kernel (cuDNN on GPU)."),
            Word("custom", "rnnspec's kernel (needed by peephole, norm, zoneout...)."),
        ),
    ),
    _ATTENTION,
    _HEAD,
    _ENCODER,
    StatementDoc(
        "tracker",
        "N",
        "off",
        "Size of SPINN's tracker LSTM (encoder spinn).",
        value="N",
    ),
)

#: The words outside model blocks: `rnnspec N`, `import "..."`, `model`, `extends`.
FILE_KEYWORDS: tuple[StatementDoc, ...] = (
    StatementDoc(
        "rnnspec",
        "N (the file's first statement)",
        "the newest",
        "The language version this file is written in.",
        value="N",
    ),
    StatementDoc(
        "import",
        '"PATH.rnn"',
        "",
        "Makes the models of another spec file available to `extends`; the path is "
        "relative to this file.",
    ),
    StatementDoc(
        "model",
        "NAME [extends BASE] { ... }",
        "",
        "A model: its statements, one a line, between braces. NAME becomes the "
        "generated class's name.",
    ),
    StatementDoc(
        "extends",
        "BASE",
        "",
        "Starts from BASE's statements (from this file or an import); statements "
        "written here override BASE's.",
    ),
)

_BY_KEYWORD = {doc.keyword: doc for doc in (*STATEMENTS, *FILE_KEYWORDS)}


def statement(keyword: str) -> StatementDoc | None:
    """The documentation of a statement or file keyword, or None."""
    return _BY_KEYWORD.get(keyword)


def field_help() -> dict[str, str]:
    """Top-level IR field (`hidden`, `zoneout_cell`) → its description, for the JSON
    Schema; `node_help` describes the fields of `input`, `attention` and `head`."""
    out = {"name": "Model (class) name: " + _MODEL_NAME}
    for doc in STATEMENTS:
        described = doc.help
        if doc.options:
            described += " Options: " + ", ".join(o.key for o in doc.options) + "."
        out[doc.keyword] = f"{doc.keyword} {_plain(doc.form)}: {described}"
        out.update({o.field: o.help for o in doc.options if "." not in o.field})
    return out


def node_help(keyword: str, kind: str | None, field: str) -> str | None:
    """The description of field `field` of statement `keyword`'s object when its first
    word is `kind` (`("input", "tokens", "embed")`); None if the table has none."""
    doc = statement(keyword)
    if doc is None:
        return None
    word = doc.word(kind) if kind is not None else None
    if field == "kind":
        kinds = [w.word for w in doc.words if w.word != "none"]  # none: null
        return word.help if word else f"{keyword} kind: " + ", ".join(kinds) + "."
    if word is not None and word.size == field:
        return word.size_help
    dotted = f"{keyword}.{field}"
    return next((o.help for o in doc.options_for(kind) if o.field == dotted), None)


_MODEL_NAME = (
    "an ASCII Python identifier, not a keyword or builtin, not starting with '_'."
)


def _plain(text: str) -> str:
    return text.replace("`", "")


# -- the README's table ---------------------------------------------------------------

README_BEGIN = (
    "<!-- statements: generated from rnnspec/lang/statements.py by "
    "`python -m rnnspec.lang.statements README.md` -->"
)
README_END = "<!-- end of statements -->"


def readme_table() -> str:
    """The language table of the README, in Markdown."""
    rows = [
        "| statement | form | default | meaning |",
        "|---|---|---|---|",
    ]
    for doc in STATEMENTS:
        cells = [f"`{doc.keyword}`", doc.form, doc.default, doc.help]
        rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(rows)


def _cell(text: str) -> str:
    """A table cell: `|` escaped (GitHub tables need it inside code spans too)."""
    return text.replace("|", "\\|")


def with_readme_table(readme: str) -> str:
    """`readme` with the text between the markers replaced by `readme_table()`."""
    start = readme.index(README_BEGIN) + len(README_BEGIN)
    end = readme.index(README_END, start)
    return readme[:start] + "\n" + readme_table() + "\n" + readme[end:]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m rnnspec.lang.statements README.md", file=sys.stderr)
        return 2
    path = Path(argv[0])
    path.write_text(with_readme_table(path.read_text(encoding="utf-8")), "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
