"""Issue 11 item 14: a config can make rnnspec read only spec files, and only so much.

A path that is not a `.rnn` file is never read (nor echoed in an error); a spec file is
read only if it is a regular file of at most 1 MiB of UTF-8. A config value is checked
without expanding YAML aliases, so a "billion laughs" costs what its text does, and
deep or recursive nesting is a `SpecError`, not a `RecursionError`.
"""

from __future__ import annotations

import os
import threading
import tracemalloc
from pathlib import Path

import pytest
import yaml

from rnnspec import SpecError, spec_from_config
from rnnspec.lang.config import (
    MAX_CONFIG_DEPTH,
    MAX_CONFIG_VALUES,
    MAX_SPEC_BYTES,
    _plain,
)

SPEC = """\
model Tagger {
    input      features 5
    cell       lstm
    hidden     8
}
"""

FIELDS = {
    "name": "Tagger",
    "input": {"kind": "features", "size": 5},
    "cell": "lstm",
    "hidden": 8,
}

SECRET = "TOPSECRET=hunter2"


def messages(value, **kwargs) -> list[str]:
    with pytest.raises(SpecError) as caught:
        spec_from_config(value, **kwargs)
    return [diagnostic.message for diagnostic in caught.value.errors]


def not_a_spec(shown: str, key: str = "model") -> list[str]:
    return [
        f"{key}: {shown} is not a .rnn spec file; "
        "expected spec text or a path ending in .rnn"
    ]


# -- what counts as a spec path ------------------------------------------------------


@pytest.mark.parametrize("name", ["secret.txt", "secret", "secret.rnn.bak", ".rnn"])
def test_a_file_that_is_not_a_spec_is_not_read(tmp_path, name):
    (tmp_path / name).write_text(f"{SECRET}\nmodel Tagger {{\n")
    with pytest.raises(SpecError) as caught:
        spec_from_config({"spec": name}, base_dir=tmp_path, path="model")
    assert SECRET not in str(caught.value)
    assert [d.message for d in caught.value.errors] == not_a_spec(
        f"'{name}'", "model.spec"
    )


@pytest.mark.parametrize(
    "path", ["/etc/passwd", "/proc/self/environ", "~/.bashrc", Path("/etc/passwd")]
)
def test_system_files_are_not_read(path):
    assert messages(path, path="model") == not_a_spec(repr(os.fspath(path)))


def test_a_spec_path_still_works_and_may_start_with_a_bom(tmp_path):
    (tmp_path / "tagger.rnn").write_text(SPEC)
    assert spec_from_config("tagger.rnn", base_dir=tmp_path).name == "Tagger"
    (tmp_path / "bom.rnn").write_bytes(b"\xef\xbb\xbf" + SPEC.encode())
    assert spec_from_config(tmp_path / "bom.rnn").hidden == 8


# -- what is read of a spec path -----------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "pipe.rnn"
    os.mkfifo(fifo)
    result: dict[str, list[str]] = {}
    reader = threading.Thread(
        target=lambda: result.update(found=messages(str(fifo))), daemon=True
    )
    reader.start()
    reader.join(60)  # returns at once; the bound only ends a regression
    if reader.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # release the reader
        pytest.fail("spec_from_config waited on a FIFO")
    assert result["found"] == [f"cannot read spec file '{fifo}': not a regular file"]


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_a_device_is_refused(tmp_path):
    (tmp_path / "zero.rnn").symlink_to("/dev/zero")
    assert messages("zero.rnn", base_dir=tmp_path) == [
        f"cannot read spec file '{tmp_path / 'zero.rnn'}': not a regular file"
    ]


def test_a_spec_file_over_the_size_cap_is_refused(tmp_path):
    big = tmp_path / "big.rnn"
    with big.open("wb") as stream:
        stream.write(SPEC.encode())
        stream.truncate(MAX_SPEC_BYTES + 1)  # sparse: cheap to make
    assert messages(big) == [
        f"cannot read spec file '{big}': larger than 1 MiB, the most a spec may be"
    ]
    big.write_bytes(SPEC.encode().ljust(MAX_SPEC_BYTES))  # at the cap: read
    assert spec_from_config(big).name == "Tagger"


def test_a_spec_file_that_is_not_utf8_is_reported_at_the_byte(tmp_path):
    bad = tmp_path / "bad.rnn"
    bad.write_bytes(SPEC.replace("lstm", "lstm  # café").encode("latin-1"))
    with pytest.raises(SpecError) as caught:
        spec_from_config(bad)
    (diagnostic,) = caught.value.errors
    assert (diagnostic.line, diagnostic.column) == (3, 27)
    assert str(caught.value).splitlines()[0] == (
        f"{bad}:3:27: error: not UTF-8 text: cannot decode byte 0xe9; "
        "save the file as UTF-8"
    )


def test_unreadable_paths_are_one_line_errors():
    assert messages("a\0b.rnn") == [
        "cannot read spec file 'a\\x00b.rnn': embedded null byte"
    ]
    (message,) = messages("~no-such-user-rnnspec/a.rnn")
    assert message.startswith("cannot read spec file '~no-such-user-rnnspec/a.rnn': ")


# -- YAML aliases, deep and recursive values -------------------------------------------


def billion_laughs(levels: int) -> str:
    """`a{n}` holds ten aliases of `a{n-1}`: it stands for 10**(n+1) strings."""
    lines = ["  a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for level in range(1, levels + 1):
        aliases = ", ".join([f"*a{level - 1}"] * 10)
        lines.append(f"  a{level}: &a{level} [{aliases}]")
    return "laughs:\n" + "\n".join(lines) + "\n"


def peak_bytes(value) -> tuple[list[str], int]:
    """The messages `spec_from_config(value)` raises, and the memory it took."""
    messages(FIELDS | {"hiden": 1})  # imports and caches before measuring
    tracemalloc.start()
    try:
        found = messages(value)
        return found, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


LEVELS = 7
BOMB_TEXT = billion_laughs(LEVELS)
BOMB = yaml.safe_load(BOMB_TEXT)["laughs"][f"a{LEVELS}"]  # 10**8 strings, expanded

BOMBS = {
    "an unknown key": (FIELDS | {"laughs": BOMB}, ["laughs: unknown key 'laughs'"]),
    "an unknown key next to spec": (
        {"spec": SPEC, "laughs": BOMB},
        ["laughs: unknown key 'laughs'; expected 'spec', 'model' or 'overrides'"],
    ),
    "a field": (
        FIELDS | {"hidden": BOMB},
        [
            f"hidden: holds more than {MAX_CONFIG_VALUES} values once aliases are "
            "expanded; a model needs a few dozen"
        ],
    ),
    "an unknown nested key": (
        FIELDS | {"input": {"kind": "features", "size": 5, "laughs": BOMB}},
        [
            f"input.laughs: holds more than {MAX_CONFIG_VALUES} values once aliases "
            "are expanded; a model needs a few dozen"
        ],
    ),
    "model next to spec": (
        {"spec": SPEC, "model": BOMB},
        [
            "model: model must be a model name, got "
            + "["
            + ", ".join(["[[...], [...], [...], [...], ...]"] * 4 + ["...]"])
        ],
    ),
}


@pytest.mark.parametrize("where", BOMBS)
def test_a_billion_laughs_is_rejected_without_expanding_it(where):
    assert len(BOMB_TEXT.encode()) < 600
    value, expected = BOMBS[where]
    found, peak = peak_bytes(value)
    assert found == expected
    assert peak < 1 << 20  # the expansion would take hundreds of MB


def nested(depth: int, inner=None, wrap=lambda value: [value]):
    value = [] if inner is None else inner
    for _ in range(depth):
        value = wrap(value)
    return value


@pytest.mark.parametrize(
    "wrap", [lambda value: [value], lambda value: {"kind": value}], ids=["list", "dict"]
)
def test_deep_nesting_is_a_spec_error(wrap):
    deep = nested(100_000, wrap=wrap)
    assert messages(FIELDS | {"head": deep}) == [
        f"head{'.kind' * (MAX_CONFIG_DEPTH - 1) if isinstance(deep, dict) else ''}: "
        f"nested more than {MAX_CONFIG_DEPTH} levels deep"
    ]
    # Under an unknown key it is never looked at.
    assert messages(FIELDS | {"deep": deep}) == ["deep: unknown key 'deep'"]
    # Right at the limit it is only the wrong type.
    shallow = nested(MAX_CONFIG_DEPTH - 1, inner=5)
    assert messages(FIELDS | {"hidden": shallow}) == [
        "hidden: hidden must be an integer, got [[[...]]]"
    ]


def test_a_recursive_alias_is_a_spec_error():
    config = yaml.safe_load("name: Tagger\nhidden: &loop [1, *loop]\n")
    assert config["hidden"][1] is config["hidden"]
    assert messages(FIELDS | config) == [
        "hidden: the value contains itself (a recursive alias?)"
    ]


def test_shared_values_are_converted_once_and_stay_shared():
    """An alias used several times is one value, not a recursion and not copies."""
    config = yaml.safe_load("a: &x {kind: features, size: 5}\nb: *x\nc: [*x, *x]\n")
    plain = _plain(config, ())
    assert plain == config
    assert plain["a"] is plain["b"] is plain["c"][0] is plain["c"][1]
    assert spec_from_config(FIELDS | {"input": plain["b"]}).input.size == 5


def test_keys_with_control_characters_are_escaped():
    """A key is shown escaped: a config cannot drive the terminal through an error."""
    assert messages(FIELDS | {"head\x1b[2J": 1}, path="model") == [
        "model.'head\\x1b[2J': unknown key 'head\\x1b[2J'"
    ]
    assert messages({"spec": SPEC, "\x07": 1}) == [
        "'\\x07': unknown key '\\x07'; expected 'spec', 'model' or 'overrides'"
    ]
