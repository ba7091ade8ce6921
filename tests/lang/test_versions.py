"""The `rnnspec N` statement, and the upgrade path of a future incompatible change."""

from __future__ import annotations

import pytest

import rnnspec
from rnnspec import SpecError
from rnnspec.cli import main
from rnnspec.compile.codegen import built_record, generate
from rnnspec.lang import versions
from tests.specs import error_text

BODY = "model M {\n    input      features 3\n    cell       gru\n    hidden     4\n}\n"


def test_a_stated_version_reads_like_none():
    assert rnnspec.parse("rnnspec 1\n\n" + BODY) == rnnspec.parse(BODY)
    assert rnnspec.parse("# comment first\nrnnspec 1\n" + BODY) == rnnspec.parse(BODY)


def test_a_newer_version_is_one_clear_error_naming_it():
    assert error_text("rnnspec 2\n" + BODY.replace("gru", "grux")) == (
        "m.rnn:1:9: error: this file needs rnnspec language version 2; rnnspec "
        f"{rnnspec.__version__} reads version 1: upgrade rnnspec\n"
        "rnnspec 2\n"
        "        ^"
    )


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            BODY + "rnnspec 1\n",
            "m.rnn:6:1: error: 'rnnspec VERSION' must be the file's first statement",
        ),
        (
            'import "x.rnn"\nrnnspec 1\n' + BODY,
            "m.rnn:2:1: error: 'rnnspec VERSION' must be the file's first statement",
        ),
        (
            "rnnspec 0\n" + BODY,
            "m.rnn:1:9: error: expected 'rnnspec N', N the language version "
            "(version 1)",
        ),
        (
            "rnnspec one\n" + BODY,
            "m.rnn:1:9: error: expected 'rnnspec N', N the language version "
            "(version 1)",
        ),
        (
            "rnnspec 1\nrnnspec 1\n" + BODY,
            "m.rnn:2:1: error: duplicate 'rnnspec' statement; first given on line 1",
        ),
    ],
)
def test_version_statement_errors(source, expected):
    assert expected in error_text(source).splitlines()


@pytest.fixture
def version_2(monkeypatch):
    """A future rnnspec whose language 2 renamed `hidden` to `units` (and added
    nothing else): the table gets the upgrade from 1 to 2."""

    def rename(text: str) -> str:
        return text.replace("    hidden ", "    units  ")

    monkeypatch.setattr(versions, "LANGUAGE_VERSION", 2)
    monkeypatch.setitem(versions.UPGRADES, 1, rename)
    return rename


def test_an_older_file_is_read_through_the_upgrade_table(version_2, monkeypatch):
    # Language 2's grammar is not ours: check that the upgraded text is what parses.
    seen = []
    monkeypatch.setitem(versions.UPGRADES, 1, lambda text: seen.append(text) or text)
    assert rnnspec.parse("rnnspec 1\n" + BODY)[0].hidden == 4
    assert rnnspec.parse(BODY)[0].hidden == 4  # no statement: version 1
    assert seen == ["rnnspec 1\n" + BODY, BODY]
    assert rnnspec.parse("rnnspec 2\n" + BODY) and len(seen) == 2  # current: as is


def test_fmt_upgrade_rewrites_and_stamps(version_2, tmp_path, capsys):
    old = tmp_path / "old.rnn"
    old.write_text("# A model.\n" + BODY)
    assert versions.upgrade_source(old.read_text()) == (
        "rnnspec 2\n\n# A model.\n" + BODY.replace("    hidden ", "    units  ")
    )
    stated = tmp_path / "stated.rnn"
    stated.write_text("rnnspec 1\n\n" + BODY)
    assert versions.upgrade_source(stated.read_text()) == (
        "rnnspec 2\n\n" + BODY.replace("    hidden ", "    units  ")
    )


def test_fmt_upgrade_states_the_current_version(tmp_path, capsys):
    spec = tmp_path / "m.rnn"
    spec.write_text("# A model.\n" + BODY)
    assert main(["fmt", "--upgrade", "--check", str(spec)]) == 1
    assert main(["fmt", "--upgrade", str(spec)]) == 0
    assert spec.read_text() == "rnnspec 1\n\n# A model.\n" + BODY
    assert main(["fmt", "--upgrade", "--check", str(spec)]) == 0
    assert main(["fmt", "--check", str(spec)]) == 0  # canonical as it stands


def test_generated_modules_record_the_language_version():
    text = generate(rnnspec.parse(BODY), spec_file="m.rnn", source=BODY)
    assert text.splitlines()[3] == f"# spec language: {versions.LANGUAGE_VERSION}"
    assert built_record(text).language == versions.LANGUAGE_VERSION


def test_an_imported_file_states_its_own_version(tmp_path):
    (tmp_path / "new.rnn").write_text("rnnspec 7\n" + BODY)
    (tmp_path / "m.rnn").write_text('import "new.rnn"\nmodel W extends M {}\n')
    with pytest.raises(SpecError) as info:
        rnnspec.parse_file(tmp_path / "m.rnn")
    (diag,) = info.value.errors  # and nothing about W's unknown base
    assert diag.file == str(tmp_path / "new.rnn") and "version 7" in diag.message
