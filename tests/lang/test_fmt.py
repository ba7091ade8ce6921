"""Canonical text: `to_source` round trips, `rnnspec fmt` keeps comments and the IR."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import rnnspec
from rnnspec import ModelSpec, SpecError
from rnnspec.cli import main
from rnnspec.lang.formatter import format_source, is_canonical
from rnnspec.lang.ir import name_problem
from rnnspec.lang.printer import statement_values
from tests.conftest import EXAMPLES

IDENTITY = sorted((Path(__file__).parents[1] / "fixtures" / "identity").glob("*.rnn"))

# -- random valid IRs ------------------------------------------------------------------

NAMES = st.from_regex(r"[A-Z][A-Za-z0-9_]{0,8}", fullmatch=True).filter(
    lambda name: name_problem(name) is None
)
SIZES = st.integers(1, 10**6) | st.integers(1, 64)
PROBABILITIES = st.sampled_from([0.0, 0.1, 0.5]) | st.floats(0, 1, exclude_max=True)


@st.composite
def model_specs(draw, name=NAMES) -> ModelSpec:
    """A valid IR: drawn respecting the rules, then validated (else rejected)."""

    def maybe(value_strategy):
        return draw(value_strategy) if draw(st.booleans()) else None

    data: dict = {"name": draw(name)}
    spinn = draw(st.integers(0, 5)) == 0
    tokens = spinn or draw(st.booleans())
    if tokens:
        vocab = draw(SIZES)
        inp = {"kind": "tokens", "vocab": vocab, "embed": draw(SIZES)}
        if (padding := maybe(st.integers(0, vocab - 1))) is not None:
            inp["padding"] = padding
        if (dropout := maybe(PROBABILITIES)) is not None:
            inp["dropout"] = dropout
    else:
        inp = {"kind": "features", "size": draw(SIZES)}
    data["input"] = inp
    data["hidden"] = draw(SIZES)

    if spinn:
        data["encoder"] = "spinn"
        if (tracker := maybe(SIZES)) is not None:
            data["tracker"] = tracker
        if draw(st.booleans()):
            head = {"kind": "classes", "size": draw(SIZES)}
            for key, value in (
                ("pair", st.booleans()),
                ("mlp", st.integers(0, 3)),
                ("mlp_hidden", SIZES),
                ("dropout", PROBABILITIES),
            ):
                if (drawn := maybe(value)) is not None:
                    head[key] = drawn
            data["head"] = head
        return _validated(data)

    cell = draw(st.sampled_from(["rnn", "lstm", "gru"]))
    data["cell"] = cell
    if cell == "rnn" and draw(st.booleans()):
        data["nonlinearity"] = draw(st.sampled_from(["tanh", "relu"]))
    if cell == "lstm" and draw(st.booleans()):
        data["peephole"] = draw(st.booleans())
    if cell != "rnn" and (norm := maybe(st.sampled_from(["none", "layer"]))):
        data["norm"] = norm
    custom_only = data.get("peephole") or data.get("norm") == "layer"
    impls = ["auto", "custom"] if custom_only else ["auto", "torch", "custom"]
    for key, value in (
        ("layers", st.integers(1, 8)),
        ("directions", st.sampled_from([1, 2])),
        ("bias", st.booleans()),
        ("dropout", PROBABILITIES),
        ("packing", st.booleans()),
        ("batch_first", st.booleans()),
        ("impl", st.sampled_from(impls)),
    ):
        if (drawn := maybe(value)) is not None:
            data[key] = drawn
    _draw_cell_options(draw, maybe, data)
    if draw(st.booleans()):
        attention = {"kind": draw(st.sampled_from(["dot", "general", "additive"]))}
        for key, value in (
            ("mask", st.sampled_from(["causal", "strict"])),
            ("combine", st.sampled_from(["replace", "concat"])),
            ("scale", st.booleans()),
        ):
            if (drawn := maybe(value)) is not None:
                attention[key] = drawn
        data["attention"] = attention
    kinds = ["none", "linear", "classes"] + (["logits"] if tokens else [])
    kind = draw(st.sampled_from(kinds))
    if kind == "logits":
        head = {"kind": "logits"}
        if draw(st.booleans()):  # tie: the embedding must match the head's input
            head["tie"] = True
            spec = _validated({**data, "head": None})
            inp["embed"] = spec.attended_size
    elif kind == "linear":
        head = {"kind": "linear", "size": draw(SIZES)}
    elif kind == "classes":
        head = {"kind": "classes", "size": draw(SIZES)}
        if (pool := maybe(st.sampled_from(["last", "mean", "max"]))) is not None:
            head["pool"] = pool
    if kind != "none":
        if (dropout := maybe(PROBABILITIES)) is not None:
            head["dropout"] = dropout
        data["head"] = head
    return _validated(data)


def _draw_cell_options(draw, maybe, data: dict) -> None:
    """forget_bias, proj, residual, initial_state, where the rules allow them."""
    if data["cell"] == "lstm" and data.get("bias", True):
        forget_bias = maybe(st.sampled_from([1.0, -0.0, 2]) | st.floats(-1e6, 1e6))
        if forget_bias is not None:
            data["forget_bias"] = forget_bias
    if data["cell"] == "lstm" and data["hidden"] > 1:
        if (proj := maybe(st.integers(1, data["hidden"] - 1))) is not None:
            data["proj"] = proj
    if data.get("layers", 1) > 1 and (residual := maybe(st.booleans())) is not None:
        data["residual"] = residual
    if (initial := maybe(st.sampled_from(["zeros", "learned"]))) is not None:
        data["initial_state"] = initial


def _validated(data: dict) -> ModelSpec:
    try:
        return ModelSpec.model_validate(data)
    except ValidationError:  # a rule this strategy does not know: draw again
        from hypothesis import reject

        reject()


FAST = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@FAST
@given(model_specs())
def test_to_source_round_trips(spec):
    assert rnnspec.parse(spec.to_source())[0] == spec
    assert ModelSpec.model_validate(spec.model_dump()) == spec


@FAST
@given(model_specs())
def test_to_source_is_canonical(spec):
    assert format_source(spec.to_source()) == spec.to_source()


# -- messy text of random IRs ----------------------------------------------------------

SPACE = st.sampled_from([" ", "  ", "\t", " \t "])
COMMENTS = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=12
).map(lambda text: ("# " + text).rstrip())


@st.composite
def messy_files(draw):
    """(text, specs, comments): random layout and comments around random IRs."""
    names = draw(st.lists(NAMES, min_size=1, max_size=3, unique=True))
    specs = [draw(model_specs(name=st.just(name))) for name in names]
    comments: list[str] = []

    def comment_lines(indent: bool) -> list[str]:
        drawn = draw(st.lists(COMMENTS, max_size=2))
        comments.extend(drawn)
        pad = draw(SPACE) if indent and draw(st.booleans()) else ""
        blanks = [draw(st.sampled_from(["", " ", "\t"]))] if draw(st.booleans()) else []
        return blanks + [pad + c for c in drawn]

    def trailing() -> str:
        if not draw(st.booleans()):
            return ""
        comment = draw(COMMENTS)
        comments.append(comment)
        return draw(SPACE) + comment

    lines: list[str] = []
    for spec in specs:
        lines += comment_lines(indent=False)
        lines.append(f"model{draw(SPACE)}{spec.name}{draw(SPACE)}{{{trailing()}")
        statements = list(statement_values(spec).items())
        for keyword, args in draw(st.permutations(statements)):
            values = [a for a in args if "=" not in a]
            options = draw(st.permutations([a for a in args if "=" in a]))
            if (
                keyword in ("input", "head")
                and len(values) == 2
                and draw(st.booleans())
            ):
                size = {"features": "size", "tokens": "vocab"}.get(values[0], "size")
                options = [f"{size}={values.pop()}", *options]
            words = [keyword, *values, *options]
            lines += comment_lines(indent=True)
            body = "".join(draw(SPACE) + w for w in words)
            lines.append(f"{body}{trailing()}")
        lines += comment_lines(indent=True)
        lines.append(f"{draw(st.sampled_from(['', ' ']))}}}{trailing()}")
    lines += comment_lines(indent=False)
    ending = draw(st.sampled_from(["\n", "", "\n\n"]))
    return "\n".join(lines) + ending, specs, comments


def comments_of(text: str) -> Counter:
    return Counter(
        line[line.index("#") :].rstrip() for line in text.split("\n") if "#" in line
    )


@settings(FAST, max_examples=200)
@given(messy_files())
def test_fmt_keeps_ir_and_comments_and_is_idempotent(case):
    text, specs, comments = case
    assert rnnspec.parse(text) == specs
    formatted = format_source(text)
    assert rnnspec.parse(formatted) == specs
    assert format_source(formatted) == formatted
    assert comments_of(formatted) == Counter(comments)
    if not comments:
        assert formatted == "\n".join(spec.to_source() for spec in specs)


# -- identity fixtures and examples ---------------------------------------------------


@pytest.mark.parametrize("path", IDENTITY, ids=[p.stem for p in IDENTITY])
def test_identity_fixtures_reprint_unchanged(path):
    text = path.read_text(encoding="utf-8")
    assert format_source(text, str(path)) == text
    assert is_canonical(text, str(path))


def test_there_are_identity_fixtures():
    assert len(IDENTITY) >= 5


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_examples_format_to_the_same_ir(path):
    text = path.read_text(encoding="utf-8")
    formatted = format_source(text)
    assert rnnspec.parse(formatted) == rnnspec.parse(text)
    assert format_source(formatted) == formatted


MESSY = """\

# file header

# The tagger
model   Tagger {   # header comment
  head linear 12    # trailing on head
\t# about the input
    input features 40
    layers 2
  hidden   128

    cell lstm nonlinearity=tanh
    # dangling at end
} # closing
# Between
model B {
 input tokens embed=8 vocab=100 dropout=0.50
 cell rnn nonlinearity=relu
 hidden 3
 attention dot scale=false mask=strict
 head logits tie=false
}   model C {  # shares the line with B's brace
 input features 3
 cell gru
 hidden 1
 dropout 0
}
# the end

"""

CANONICAL = """\
# file header

# The tagger
model Tagger {  # header comment
    # about the input
    input      features 40
    cell       lstm nonlinearity=tanh
    hidden     128
    layers     2
    head       linear 12  # trailing on head
    # dangling at end
}  # closing

# Between
model B {
    input      tokens 100 embed=8 dropout=0.5
    cell       rnn nonlinearity=relu
    hidden     3
    attention  dot mask=strict scale=false
    head       logits tie=false
}

model C {  # shares the line with B's brace
    input      features 3
    cell       gru
    hidden     1
    dropout    0.0
}

# the end
"""


def test_messy_file_gets_the_canonical_layout():
    assert format_source(MESSY) == CANONICAL
    assert format_source(MESSY.replace("\n", "\r\n")) == CANONICAL


def test_errors_raise_before_formatting():
    with pytest.raises(SpecError, match="unknown statement 'hiden'"):
        format_source("model A {\n  input features 3\n  cell gru\n  hiden 3\n}\n")


# -- the command -----------------------------------------------------------------------


@pytest.fixture
def files(tmp_path):
    (tmp_path / "messy.rnn").write_text(MESSY)
    (tmp_path / "clean.rnn").write_text(CANONICAL)
    return tmp_path


def test_fmt_rewrites_in_place_keeping_permissions(files, capsys):
    messy = files / "messy.rnn"
    os.chmod(messy, 0o640)
    assert main(["fmt", str(messy), str(files / "clean.rnn")]) == 0
    assert messy.read_text() == CANONICAL
    assert (messy.stat().st_mode & 0o777) == 0o640
    out = capsys.readouterr().out
    assert f"reformatted {messy}" in out
    assert f"unchanged {files / 'clean.rnn'}" in out
    assert sorted(p.name for p in files.iterdir()) == ["clean.rnn", "messy.rnn"]


def test_fmt_check_lists_files_with_a_diff(files, capsys):
    messy, clean = str(files / "messy.rnn"), str(files / "clean.rnn")
    assert main(["fmt", "--check", messy, clean]) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith(
        f"--- {messy}\t(original)\n+++ {messy}\t(canonical)\n@@"
    )
    assert "-model   Tagger {   # header comment\n" in captured.out
    assert "+model Tagger {  # header comment\n" in captured.out
    assert f"would reformat {messy}" in captured.err
    assert clean not in captured.err
    assert (files / "messy.rnn").read_text() == MESSY
    assert main(["fmt", "--check", clean]) == 0
    assert "1 spec(s) canonical" in capsys.readouterr().out


def test_fmt_diff_writes_nothing(files, capsys):
    assert main(["fmt", "--diff", str(files / "messy.rnn")]) == 0
    assert "+    input      features 40\n" in capsys.readouterr().out
    assert (files / "messy.rnn").read_text() == MESSY


def test_fmt_errors_write_nothing(files, capsys):
    bad = files / "bad.rnn"
    bad.write_text(
        "model Bad {\n    input features 3\n    cell lstn\n    hidden 4\n}\n"
    )
    assert main(["fmt", str(files / "messy.rnn"), str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:3:10: error: unknown cell 'lstn'; did you mean 'lstm'?" in err
    assert "nothing written" in err
    assert (files / "messy.rnn").read_text() == MESSY
    assert main(["fmt", str(files / "missing.rnn")]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_fmt_missing_final_newline_is_shown(files, capsys):
    (files / "clean.rnn").write_text(CANONICAL.rstrip("\n"))
    assert main(["fmt", "--check", str(files / "clean.rnn")]) == 1
    assert "\\ No newline at end of file" in capsys.readouterr().out


def test_fmt_stdin_to_stdout_and_no_torch(files):
    code = (
        "import sys\n"
        "from rnnspec.cli import main\n"
        "code = main(['fmt', '-'])\n"
        "assert 'torch' not in sys.modules, 'fmt imported torch'\n"
        "sys.exit(code)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        input=MESSY,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout == CANONICAL


#: Layout that fits between words, and layout that fits where a line ends.
BETWEEN_WORDS = [" ", "\t", "  "]
AT_LINE_END = ["\n", "\n\n", "  \n", " \t", "  # note", "\n# note", "\n    # x }"]


@st.composite
def relaid_fixtures(draw):
    """Identity fixtures with whitespace, blank lines and comments put anywhere."""
    text = draw(st.sampled_from([p.read_text(encoding="utf-8") for p in IDENTITY]))
    for _ in range(draw(st.integers(1, 8))):
        if draw(st.booleans()):
            spots = [i for i, c in enumerate(text) if c == " "]
            pieces = BETWEEN_WORDS
        else:
            spots = [i for i, c in enumerate(text) if c == "\n"]
            pieces = AT_LINE_END
        position = draw(st.sampled_from(spots))
        text = text[:position] + draw(st.sampled_from(pieces)) + text[position:]
    return text


@FAST
@given(relaid_fixtures())
def test_fmt_of_any_parsable_layout_keeps_ir_and_comments(text):
    here = IDENTITY[0].parent  # where the fixtures' imports are
    try:
        specs = rnnspec.parse(text, base_dir=here)
    except SpecError:
        return  # a piece landed inside a word: nothing to format
    formatted = format_source(text, base_dir=here)
    assert rnnspec.parse(formatted, base_dir=here) == specs
    assert format_source(formatted, base_dir=here) == formatted
    assert comments_of(formatted) == comments_of(text)
