"""The command line: build, check, inspect; exit codes, atomic writes, no torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rnnspec.cli import main
from tests.conftest import BUILDABLE

GOOD = "# ok\nmodel Good {\n    input features 3\n    cell gru\n    hidden 4\n}\n"
TYPO = "model Bad {\n    input features 3\n    cell lstn\n    hidden 0\n}\n"


@pytest.fixture
def specs(tmp_path):
    (tmp_path / "good.rnn").write_text(GOOD)
    (tmp_path / "bad.rnn").write_text(TYPO)
    return tmp_path


def test_build_writes_stem_py_and_rebuild_is_identical(specs, capsys):
    out = specs / "out"
    assert main(["build", str(specs / "good.rnn"), "-o", str(out)]) == 0
    first = (out / "good.py").read_bytes()
    assert b"class Good(RecurrentModel)" in first
    assert "wrote" in capsys.readouterr().out
    assert main(["build", str(specs / "good.rnn"), "-o", str(out)]) == 0
    assert (out / "good.py").read_bytes() == first
    assert "unchanged" in capsys.readouterr().out


def test_build_errors_write_nothing(specs, capsys):
    out = specs / "out"
    code = main(
        ["build", str(specs / "good.rnn"), str(specs / "bad.rnn"), "-o", str(out)]
    )
    assert code == 1
    assert not out.exists()
    err = capsys.readouterr().err
    assert (
        f"{specs / 'bad.rnn'}:3:10: error: unknown cell 'lstn'; did you mean 'lstm'?"
        in err
    )
    assert f"{specs / 'bad.rnn'}:4:12: error: hidden must be ≥ 1, got 0" in err
    assert "nothing written" in err


def test_build_refuses_two_specs_with_one_output(specs, capsys):
    (specs / "sub").mkdir()
    (specs / "sub" / "good.rnn").write_text(GOOD)
    out = specs / "out"
    assert (
        main(
            [
                "build",
                str(specs / "good.rnn"),
                str(specs / "sub/good.rnn"),
                "-o",
                str(out),
            ]
        )
        == 1
    )
    assert not out.exists()


def test_check(specs, capsys):
    assert main(["check", str(specs / "good.rnn")]) == 0
    assert main(["check", str(specs / "bad.rnn")]) == 1
    assert main(["check", str(specs / "missing.rnn")]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_inspect_reports_parts_shapes_kernels(specs, capsys):
    assert main(["inspect", str(specs / "good.rnn")]) == 0
    out = capsys.readouterr().out
    assert "input   (B, T, 3) float" in out
    assert "rnn                 108  GRU: torch's fused kernel" in out
    assert "total" in out


def test_build_and_check_never_import_torch(tmp_path):
    specs = [str(p) for p in BUILDABLE]
    script = (
        "import sys\n"
        "from rnnspec.cli import main\n"
        f"code = main(['build', *{specs!r}, '-o', {str(tmp_path)!r}])\n"
        f"code += main(['check', *{specs!r}])\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "sys.exit(code)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_python_dash_m(specs):
    result = subprocess.run(
        [sys.executable, "-m", "rnnspec", "check", str(specs / "bad.rnn")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "did you mean 'lstm'?" in result.stderr


def test_built_files_get_normal_permissions(specs):
    import os

    umask = os.umask(0)
    os.umask(umask)
    out = specs / "out"
    assert main(["build", str(specs / "good.rnn"), "-o", str(out)]) == 0
    assert (out / "good.py").stat().st_mode & 0o777 == 0o666 & ~umask
