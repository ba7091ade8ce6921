"""The command outputs docs/language.md and the README show are real: each
`$ rnnspec ...` command in a console block on the family example runs again here and
prints exactly what the block shows (stdout and stderr, in that order)."""

from __future__ import annotations

import re
import shlex

import pytest

from rnnspec.cli import main
from tests.conftest import ROOT

DOCS = [ROOT / "docs" / "language.md", ROOT / "README.md"]
_BLOCK = re.compile(r"```console\n(.*?)```", re.DOTALL)


def commands() -> list:
    """(doc, command line, output) for each command on examples/family/."""
    found = []
    for doc in DOCS:
        for block in _BLOCK.findall(doc.read_text(encoding="utf-8")):
            runs = re.split(r"^\$ ", block, flags=re.MULTILINE)[1:]
            for run in runs:
                command, _, output = run.partition("\n")
                if "examples/family/" in command and command.startswith("rnnspec "):
                    found.append(pytest.param(command, output, id=f"{doc.name}: "
                                              f"{command[8:60]}"))  # fmt: skip
    return found


def test_the_docs_show_family_commands():
    assert len(commands()) >= 6


@pytest.mark.parametrize(("command", "output"), commands())
def test_doc_output_is_what_the_command_prints(command, output, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    argv = shlex.split(command)[1:]
    main(argv)
    captured = capsys.readouterr()
    assert captured.out + captured.err == output


_EXCERPT = re.compile(
    r"```\n\$ (rnnspec explain examples/family/[^\n]*)\n(.*?)```", re.DOTALL
)


def test_readme_explain_excerpt_is_from_a_real_run(capsys, monkeypatch):
    """The README's excerpt: its lines, '...' aside, are the real output's, in order."""
    monkeypatch.chdir(ROOT)
    ((command, excerpt),) = _EXCERPT.findall(DOCS[1].read_text(encoding="utf-8"))
    assert main(shlex.split(command)[1:]) == 0
    real = iter(capsys.readouterr().out.splitlines())
    for line in excerpt.splitlines():
        if line.strip() != "...":
            assert line in real, line  # consumes `real` up to the match


_RNN = re.compile(r"```rnn\n# (base|variants)\.rnn\n(.*?)```", re.DOTALL)


def test_readme_family_specs_are_the_example_files():
    import rnnspec

    family = ROOT / "examples" / "family"
    blocks = _RNN.findall(DOCS[1].read_text(encoding="utf-8"))
    assert [name for name, _ in blocks] == ["base", "variants"]
    for name, text in blocks:
        shown = rnnspec.parse(text, base_dir=family)
        assert shown == rnnspec.parse_file(family / f"{name}.rnn")
