"""docs/editors.md's configurations: what they say is what works. The Emacs one is
run for real (Emacs in batch mode with eglot, talking to `rnnspec lsp`) where Emacs
and eglot are installed; the others are checked for what they declare."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from rnnspec.lang.formatter import format_source
from tests.conftest import ROOT

DOC = ROOT / "docs" / "editors.md"


def _blocks(language: str) -> list[str]:
    return re.findall(
        rf"^```{language}\n(.*?)^```", DOC.read_text("utf-8"), re.S | re.M
    )


def test_the_helix_configuration_starts_rnnspec_lsp_for_rnn_files():
    tomllib = pytest.importorskip("tomllib")
    (config,) = [tomllib.loads(block) for block in _blocks("toml")]
    assert config["language-server"]["rnnspec"] == {
        "command": "rnnspec",
        "args": ["lsp"],
    }
    (language,) = config["language"]
    assert language["file-types"] == ["rnn"]
    assert language["language-servers"] == ["rnnspec"]
    assert language["comment-token"] == "#"


def test_the_vscode_settings_name_the_extensions_settings():
    (settings,) = [json.loads(block) for block in _blocks("json")]
    package = json.loads((ROOT / "editors/vscode/package.json").read_text("utf-8"))
    declared = package["contributes"]["configuration"]["properties"]
    assert set(settings) <= set(declared)
    assert settings["rnnspec.server.args"] == declared["rnnspec.server.args"]["default"]


def test_the_neovim_configurations_start_rnnspec_lsp():
    lua = _blocks("lua")
    assert len(lua) == 2
    for block in lua:
        assert 'cmd = { "rnnspec", "lsp" }' in block
    assert 'extension = { rnn = "rnnspec" }' in lua[0]


#: Opens a broken spec and a messy one; prints what Emacs shows.
EMACS_SCRIPT = """
(require 'eglot)
(load-file "init.el")
(defun wait-for (predicate)
  (let ((tries 0))
    (while (and (< tries 300) (not (funcall predicate)))
      (accept-process-output nil 0.1)
      (setq tries (1+ tries)))))
(find-file "bad.rnn")
(princ (format "MODE %s\\n" major-mode))
(eglot-ensure)
(run-hooks 'post-command-hook)
(wait-for #'flymake-diagnostics)
(dolist (d (flymake-diagnostics))
  (princ (format "DIAGNOSTIC %d %s\\n" (line-number-at-pos (flymake-diagnostic-beg d))
                 (flymake-diagnostic-text d))))
(font-lock-ensure)
(goto-char (point-min))
(search-forward "cell")
(princ (format "FACE %s\\n" (get-text-property (1- (point)) 'face)))
(find-file "messy.rnn")
(eglot-ensure)
(run-hooks 'post-command-hook)
(wait-for #'eglot-current-server)
(goto-char (point-min))
(search-forward "hidd")
(let ((hover (jsonrpc-request (eglot-current-server) :textDocument/hover
                              (eglot--TextDocumentPositionParams))))
  (princ (format "HOVER %s\\n" (plist-get (plist-get hover :contents) :value))))
(eglot-format-buffer)
(princ (format "<<<%s>>>\\n" (buffer-substring-no-properties (point-min) (point-max))))
(eglot-shutdown (eglot-current-server))
"""

MESSY = "model A {\n  hidden 4\n    cell gru\n  input features 3  # in\n}\n"


def test_the_emacs_configuration_gives_diagnostics_hover_and_formatting(tmp_path):
    emacs = shutil.which("emacs")
    if emacs is None:
        pytest.skip("Emacs is not installed: docs/editors.md's Emacs setup is not run")
    has_eglot = subprocess.run(
        [emacs, "--batch", "--eval", "(require 'eglot)"], capture_output=True
    )
    if has_eglot.returncode != 0:
        pytest.skip("Emacs has no eglot (Emacs 29, or the elpa-eglot package)")
    (init, _) = _blocks("elisp")
    (tmp_path / "init.el").write_text(init, encoding="utf-8")
    (tmp_path / "run.el").write_text(EMACS_SCRIPT, encoding="utf-8")
    (tmp_path / "bad.rnn").write_text(
        "model A {\n    input features 3\n    cell lstn\n    hidden 4\n}\n"
    )
    (tmp_path / "messy.rnn").write_text(MESSY)
    # `rnnspec` on the PATH, as the configuration expects: this interpreter's.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "rnnspec"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m rnnspec "$@"\n')
    script.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(ROOT),
        "HOME": str(tmp_path),
    }
    result = subprocess.run(
        [emacs, "--batch", "-l", "run.el"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    out = result.stdout
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MODE rnnspec-mode" in out
    assert "DIAGNOSTIC 3 rnnspec: unknown cell 'lstn'; did you mean 'lstm'?" in out
    assert "FACE font-lock-builtin-face" in out  # `cell`, a statement
    formatted = re.search(r"<<<(.*)>>>", out, re.S).group(1)
    assert formatted == format_source(MESSY)
    assert "HOVER **hidden** H" in out


def test_docs_name_files_that_exist():
    text = DOC.read_text("utf-8")
    for path in re.findall(r"`((?:editors|rnnspec|tests)/[\w./-]+)`", text):
        assert (ROOT / path).exists(), path
