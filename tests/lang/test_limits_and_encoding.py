"""Issue 11, language side: model names (1), size limits (12), spec bytes and echoed
lines (13), strict integers (15), start-up without parsing rnnspec/nn (18)."""

from __future__ import annotations

import subprocess
import sys
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import rnnspec
from rnnspec import ModelSpec, SpecError
from rnnspec.lang.ir import (
    GENERATED_NAMES,
    MAX_PARAMETERS,
    name_problem,
    parameter_counts,
    reserved_names,
)
from tests.conftest import BUILDABLE, EXAMPLES, ROOT

FEATURES = {"kind": "features", "size": 3}


def spec_dict(**fields) -> dict:
    return {"name": "A", "input": FEATURES, "cell": "lstm", "hidden": 4, **fields}


def errors_of(source: str) -> list[tuple[int, int, str]]:
    with pytest.raises(SpecError) as info:
        rnnspec.parse(source, filename="m.rnn")
    return [(d.line, d.column, d.message) for d in info.value.errors]


def model(*statements: str, name: str = "A") -> str:
    body = "".join(f"    {s}\n" for s in statements)
    return f"model {name} {{\n{body}}}\n"


# -- 1. model names: ASCII only, so that Python reads the name as written -----------


@pytest.mark.parametrize(
    ("name", "read_as"), [("ｔｏｒｃｈ", "torch"), ("ℕ", "N"), ("Ｔagger", "Tagger")]
)
def test_names_python_would_normalise_are_refused_at_the_name(name, read_as):
    source = model("input features 3", "cell gru", "hidden 2", name=name)
    ((line, column, message),) = errors_of(source)
    assert (line, column) == (1, 7)
    assert "must be ASCII" in message and f"Python reads it as '{read_as}'" in message
    with pytest.raises(ValidationError, match="must be ASCII"):
        ModelSpec.model_validate(spec_dict(name=name))


def test_non_ascii_name_without_another_reading_is_refused_too():
    with pytest.raises(ValidationError, match="must be ASCII"):
        ModelSpec.model_validate(spec_dict(name="Modèle"))  # NFKC-normal already


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=6))
def test_every_accepted_name_is_the_name_python_reads(name):
    if name_problem(name) is None:
        assert name.isascii()
        assert unicodedata.normalize("NFKC", name) == name
        assert name.isidentifier()


def test_generated_class_has_the_model_name(load_generated):
    spec = rnnspec.parse(model("input features 3", "cell gru", "hidden 2", name="N1"))
    module = load_generated(rnnspec.generate(spec))
    assert module.N1.__name__ == "N1"


# -- 12. sizes that cannot be built ---------------------------------------------------

LONG = "9" * 5000


@pytest.mark.parametrize(
    ("statements", "where", "message"),
    [
        (["layers 1000000000"], (5, 16), "layers must be ≤ 256, got 1000000000"),
        (
            ["hidden 1000000000000000000000000000000"],
            (4, 16),
            "hidden must be ≤ 16777216, got 1000000000000000000000000000000",
        ),
        (["hidden " + LONG], (4, 16), "number too long: 5000 digits (at most 100)"),
        (["dropout " + LONG], (5, 16), "number too long: 5000 digits"),
        (
            ["hidden 100000", "layers 2"],
            (4, 16),
            "model 'A' would have 120,002,800,000 parameters, more than the limit of "
            "2,147,483,648 (the recurrent stack has 120,002,800,000)",
        ),
    ],
)
def test_sizes_too_large_are_positioned_errors(statements, where, message, tmp_path):
    base = ["input      features 3", "cell       lstm", "hidden     4"]
    keywords = {s.split()[0] for s in statements}
    body = [s for s in base if s.split()[0] not in keywords]
    body += [f"{s.split()[0]:<10} {s.split(maxsplit=1)[1]}" for s in statements]
    errors = errors_of(model(*body))
    assert errors[0][:2] == where and errors[0][2].startswith(message), errors
    spec = tmp_path / "big.rnn"
    spec.write_text(model(*body))
    result = run_cli("check", str(spec))
    assert result.returncode == 1
    assert f"{spec}:{where[0]}:{where[1]}: error: " in result.stderr
    assert "Traceback" not in result.stderr


def test_too_many_parameters_points_at_the_largest_part():
    source = model(
        "input      tokens 10000000 embed=4096", "cell       gru", "hidden 8"
    )
    ((line, column, message),) = errors_of(source)
    assert (line, column) == (2, 5)  # the `input` statement: the embedding
    assert "the embedding has 40,960,000,000" in message


def test_vocabulary_too_large_is_an_error_at_the_value():
    source = model("input tokens 100000000000000 embed=4", "cell gru", "hidden 8")
    assert errors_of(source) == [
        (2, 18, "vocab must be ≤ 16777216, got 100000000000000")
    ]


@pytest.mark.parametrize(
    "fields",
    [
        {"layers": 10**9},
        {"hidden": 10**30},
        {"hidden": 10**5000},  # too long to print: still a clean error
        {"input": {"kind": "tokens", "vocab": 10**14, "embed": 4}},
        {"hidden": 100000, "layers": 2},
        {"encoder": "spinn", "head": {"kind": "classes", "size": 2, "mlp": 10**6}},
    ],
)
def test_dict_form_has_the_same_limits(fields):
    data = spec_dict(**fields)
    if data.get("encoder") == "spinn":
        data["input"] = {"kind": "tokens", "vocab": 9, "embed": 4}
        del data["cell"]
    with pytest.raises(ValidationError, match="less than or equal|parameters"):
        ModelSpec.model_validate(data)


def test_config_reports_an_unprintable_size_cleanly():
    with pytest.raises(SpecError, match="hidden must be ≤ 16777216, got a 16610-bit"):
        rnnspec.spec_from_config(spec_dict(hidden=10**5000))


def test_large_model_under_the_limit_is_accepted():
    spec = ModelSpec.model_validate(spec_dict(hidden=16000))
    assert sum(parameter_counts(spec).values()) <= MAX_PARAMETERS


COUNTED = [
    spec_dict(),
    spec_dict(cell="gru", layers=3, directions=2, bias=False),
    spec_dict(
        cell="rnn", nonlinearity="relu", layers=2, head={"kind": "linear", "size": 5}
    ),
    spec_dict(peephole=True, layers=2, directions=2, bias=False),
    spec_dict(peephole=True, attention={"kind": "general", "combine": "concat"}),
    spec_dict(
        directions=2,
        attention={"kind": "additive"},
        head={"kind": "classes", "size": 3},
    ),
    spec_dict(attention={"kind": "dot"}),
    spec_dict(
        input={"kind": "tokens", "vocab": 11, "embed": 8},
        hidden=4,
        directions=2,
        head={"kind": "logits", "tie": True},
    ),
    spec_dict(
        input={"kind": "tokens", "vocab": 11, "embed": 5}, head={"kind": "logits"}
    ),
    {
        "name": "S",
        "encoder": "spinn",
        "input": {"kind": "tokens", "vocab": 9, "embed": 5},
        "hidden": 4,
        "tracker": 3,
        "head": {"kind": "classes", "size": 3, "pair": True, "mlp": 2, "mlp_hidden": 6},
    },
    {
        "name": "S",
        "encoder": "spinn",
        "input": {"kind": "tokens", "vocab": 9, "embed": 5},
        "hidden": 4,
    },
]


@pytest.mark.parametrize(
    "spec",
    [ModelSpec.model_validate(d) for d in COUNTED]
    + [s for path in BUILDABLE for s in rnnspec.parse_file(path)],
    ids=lambda s: s.summary(),
)
def test_parameter_count_is_what_torch_allocates(spec):
    built = rnnspec.instantiate(spec)
    expected = {}
    for name, child in built.named_children():
        count = sum(p.numel() for p in child.parameters())
        if name == "head" and getattr(spec.head, "tie", False):
            count -= child.weight.numel()  # the embedding's, counted there
        if count:
            expected[name] = count
    assert {k: v for k, v in parameter_counts(spec).items() if v} == expected
    assert sum(parameter_counts(spec).values()) == sum(
        p.numel() for p in built.parameters()
    )


# -- 13. bytes, byte-order marks, line endings, echoed lines --------------------------

VALID = model("input      features 3", "cell       lstm", "hidden     4")
NOT_UTF8 = b"model A {\n    input features 3  # caf\xe9\n    cell lstm\n}\n"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rnnspec", *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        cwd=ROOT,
    )


@pytest.mark.parametrize("command", ["check", "build", "inspect", "fmt", "fmt-"])
def test_bytes_not_utf8_are_a_positioned_diagnostic(command, tmp_path):
    spec = tmp_path / "latin1.rnn"
    spec.write_bytes(NOT_UTF8)
    out = tmp_path / "out"
    args = {
        "check": ["check", str(spec)],
        "build": ["build", str(spec), "-o", str(out)],
        "inspect": ["inspect", str(spec)],
        "fmt": ["fmt", str(spec)],
        "fmt-": ["fmt", "-"],
    }[command]
    result = subprocess.run(
        [sys.executable, "-m", "rnnspec", *args],
        capture_output=True,
        text=True,
        input=NOT_UTF8.decode("latin-1") if command == "fmt-" else None,
        encoding="latin-1",
        cwd=ROOT,
    )
    name = "<stdin>" if command == "fmt-" else str(spec)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert (
        f"{name}:2:28: error: not UTF-8 text: cannot decode byte 0xe9" in result.stderr
    )
    assert spec.read_bytes() == NOT_UTF8 and not out.exists()


def test_parse_file_reports_bad_bytes_with_position(tmp_path):
    spec = tmp_path / "latin1.rnn"
    spec.write_bytes(NOT_UTF8)
    with pytest.raises(SpecError) as info:
        rnnspec.parse_file(spec)
    (error,) = info.value.errors
    assert (error.line, error.column) == (2, 28)
    lines = str(info.value).splitlines()
    assert lines[1] == "    input features 3  # caf\ufffd"
    assert lines[2] == " " * 27 + "^"


def test_a_file_too_large_to_be_a_spec_is_refused(tmp_path):
    result = run_cli("check", "/dev/zero")
    assert result.returncode == 1
    assert "/dev/zero: error: larger than 1,048,576 bytes" in result.stderr


def test_byte_order_mark_is_accepted_and_fmt_drops_it(tmp_path):
    spec = tmp_path / "bom.rnn"
    spec.write_bytes(b"\xef\xbb\xbf" + VALID.encode())
    assert rnnspec.parse_file(spec) == rnnspec.parse(VALID)
    assert run_cli("check", str(spec)).returncode == 0
    assert run_cli("fmt", "--check", str(spec)).returncode == 1  # not canonical
    assert run_cli("fmt", str(spec)).returncode == 0
    assert spec.read_bytes() == VALID.encode()
    bom_error = b"\xef\xbb\xbf" + VALID.replace("hidden     4", "hidden     0").encode()
    spec.write_bytes(bom_error)
    assert "bom.rnn:4:16: error: hidden must be" in run_cli("check", str(spec)).stderr


@pytest.mark.parametrize("newline", ["\r", "\r\n", "\n"])
def test_check_and_fmt_agree_on_line_endings(newline, tmp_path):
    spec = tmp_path / "ends.rnn"
    broken = VALID.replace("hidden     4", "hidden     0  # zero")
    spec.write_bytes(broken.replace("\n", newline).encode())
    check, fmt = run_cli("check", str(spec)), run_cli("fmt", "--check", str(spec))
    expected = f"{spec}:4:16: error: hidden must be ≥ 1, got 0\n"
    assert check.stderr.startswith(expected)
    assert fmt.stderr.startswith(check.stderr.splitlines(keepends=True)[0])
    spec.write_bytes(VALID.replace("\n", newline).encode())
    assert run_cli("check", str(spec)).returncode == 0
    assert run_cli("fmt", str(spec)).returncode == 0
    assert spec.read_bytes() == VALID.encode()


def test_lone_carriage_returns_end_lines_for_parse_and_format():
    from rnnspec.lang.formatter import format_source

    assert rnnspec.parse(VALID.replace("\n", "\r")) == rnnspec.parse(VALID)
    assert format_source(VALID.replace("\n", "\r")) == VALID


def test_control_characters_are_escaped_when_a_line_is_echoed():
    source = model(
        "input features 0  # \x1b[2J\x1b]0;owned\x07", "cell lstm", "hidden 4"
    )
    text = str(pytest.raises(SpecError, rnnspec.parse, source).value)
    assert "\x1b" not in text and "\x07" not in text
    echoed, caret = text.splitlines()[1:3]
    assert echoed == "    input features 0  # \\x1b[2J\\x1b]0;owned\\x07"
    assert caret == " " * 19 + "^"


@pytest.mark.parametrize(
    ("body", "echoed", "caret"),
    [
        ("    cell \x1b lstm", "    cell \\x1b lstm", " " * 9 + "^~~~"),
        ("    cell \u202e lstm", "    cell \\u202e lstm", " " * 9 + "^~~~~~"),
        ("    cell lstm\n    hidden\f0", "    hidden\\x0c0", " " * 14 + "^"),
    ],
)
def test_caret_stays_under_what_it_marks_after_an_escape(body, echoed, caret):
    source = f"model A {{\n    input features 3\n{body}\n}}\n"
    text = str(pytest.raises(SpecError, rnnspec.parse, source).value)
    lines = text.splitlines()
    assert lines[1] == echoed
    assert lines[2] == caret  # the whole escape of a marked character is marked


def test_caret_spans_the_columns_wide_characters_take():
    wide = model("input features 3", "cell lstm", "hidden 4", name="ｔｏｒｃｈ")
    lines = str(pytest.raises(SpecError, rnnspec.parse, wide).value).splitlines()
    assert lines[2] == " " * 6 + "^" + "~" * 9  # five characters, ten columns


# -- 15. integers are integers ---------------------------------------------------------

INT_STATEMENTS = [
    ("directions", "directions {}"),
    ("hidden", "hidden {}"),
    ("layers", "layers {}"),
    ("size", "input features {}"),
    ("vocab", "input tokens {} embed=4"),
    ("embed", "input tokens 10 embed={}"),
    ("padding", "input tokens 10 embed=4 padding={}"),
    ("size", "head linear {}"),
    ("size", "head classes {}"),
]


@pytest.mark.parametrize("value", ["true", "2.0", "1.0"])
@pytest.mark.parametrize(("field", "statement"), INT_STATEMENTS)
def test_bools_and_floats_are_not_integers_in_text(field, statement, value):
    statements = {
        "input": "input features 3",
        "cell": "cell lstm",
        "hidden": "hidden 4",
    }
    line = statement.format(value)
    statements[line.split()[0]] = line
    errors = errors_of(model(*statements.values()))
    assert any(f"{field} must be an integer, got {value}" in m for *_, m in errors)


@pytest.mark.parametrize("value", [True, 2.0, 1.0])
@pytest.mark.parametrize(
    "fields",
    [
        lambda v: {"directions": v},
        lambda v: {"hidden": v},
        lambda v: {"layers": v},
        lambda v: {"input": {"kind": "features", "size": v}},
        lambda v: {"input": {"kind": "tokens", "vocab": v, "embed": 4}},
        lambda v: {"input": {"kind": "tokens", "vocab": 9, "embed": 4, "padding": v}},
        lambda v: {"head": {"kind": "linear", "size": v}},
        lambda v: {"encoder": "spinn", "cell": None, "tracker": v},
    ],
)
def test_bools_and_floats_are_not_integers_in_the_dict_form(fields, value):
    data = spec_dict(**fields(value))
    if data.get("encoder") == "spinn":
        data["input"] = {"kind": "tokens", "vocab": 9, "embed": 4}
        del data["cell"]
    with pytest.raises(ValidationError, match="valid integer"):
        ModelSpec.model_validate(data)


def test_yaml_ints_still_validate():
    yaml = pytest.importorskip("yaml")
    data = yaml.safe_load(
        "name: A\ninput: {kind: features, size: 3}\ncell: lstm\nhidden: 4\n"
        "directions: 2\nlayers: 2\n"
    )
    assert ModelSpec.model_validate(data).directions == 2


# -- 18. start-up: no parse of rnnspec/nn, no grammar build --------------------------


def test_prebuilt_nn_index_is_fresh_and_equal_to_reading_the_sources():
    from rnnspec import prebuilt
    from rnnspec.compile import nnsource

    texts = nnsource.nn_texts()
    table = prebuilt.nn_table(nnsource.sources_sha256(texts))
    assert table is not None, "rnnspec/nn changed: run `python -m rnnspec.prebuild`"
    assert table == nnsource.index_table()
    assert nnsource.index() == nnsource._read_index(texts)


def test_reserved_names_are_what_generated_code_defines():
    from rnnspec.compile import nnsource

    definitions, imports = nnsource._read_index(nnsource.nn_texts())
    assert reserved_names() == GENERATED_NAMES | set(definitions) | set(imports)


BROKEN = [
    "model M {\n cell @lstm\n}\n",
    "model M {\n cell lstm\n",
    "model M {\n hidden=\n cell\n}\n",
    "model { }\n",
]


def test_prebuilt_parser_is_fresh_and_parses_as_the_grammar_does():
    import lark

    from rnnspec import prebuilt
    from rnnspec.lang.syntax import build_parser, grammar_sha256, grammar_text, parser

    grammar = grammar_text()
    message = "the grammar changed: run `python -m rnnspec.prebuild`"
    assert prebuilt._data()["grammar_sha256"] == grammar_sha256(grammar), message
    if prebuilt._data()["lark_version"] != lark.__version__:
        pytest.skip("prebuilt.json was saved by another lark version")
    saved, built = parser(), build_parser(grammar)
    assert prebuilt.saved_parser(grammar_sha256(grammar), lark.__version__)
    for path in EXAMPLES:
        text = path.read_text(encoding="utf-8")
        assert saved.parse(text) == built.parse(text)
    for text in BROKEN:
        with pytest.raises(lark.UnexpectedInput) as first:
            saved.parse(text)
        with pytest.raises(lark.UnexpectedInput) as second:
            built.parse(text)
        assert type(first.value) is type(second.value)
        assert (first.value.line, first.value.column) == (
            second.value.line,
            second.value.column,
        )


def test_build_and_check_neither_parse_rnnspec_nn_nor_build_the_grammar(tmp_path):
    code = (
        "import ast, sys, lark\n"
        "def refuse(*args, **kwargs):\n"
        "    raise AssertionError('start-up work done at run time')\n"
        "ast.parse = refuse\n"
        "lark.Lark.__init__ = refuse\n"
        "from rnnspec.cli import main\n"
        f"assert main(['check', *sys.argv[1:]]) == 0\n"
        f"assert main(['build', *sys.argv[1:], '-o', {str(tmp_path)!r}]) == 0\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run(
        [sys.executable, "-c", code, *map(str, BUILDABLE)], check=True, cwd=ROOT
    )
    assert sorted(p.stem for p in tmp_path.glob("*.py")) == [p.stem for p in BUILDABLE]
