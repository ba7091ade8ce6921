"""`rnnspec train` on the AWD-LSTM example (issue 14): the character-level training
path runs it, built at runtime and as the class `rnnspec build` wrote."""

from __future__ import annotations

import json
import math

import pytest

from rnnspec.cli import main
from tests.conftest import GENERATED, ROOT

AWD = ROOT / "examples" / "awd_lstm.rnn"
TEXT = "def tokens(text):\n    return [word for word in text.split() if word]\n" * 40


@pytest.mark.parametrize("generated", [False, True], ids=["runtime", "generated"])
def test_train_runs_the_awd_example(tmp_path, generated, capsys):
    data = tmp_path / "data.txt"
    data.write_text(TEXT, encoding="utf-8")
    out = tmp_path / "run"
    args = ["train", str(AWD), "--data", str(data), "--steps", "3", "--batch", "4"]
    args += ["--seq-len", "16", "--threads", "1", "--out", str(out)]
    args += ["--no-progress", "--no-plot"]
    if generated:
        args += ["--generated", str(GENERATED / "awd_lstm.py")]
    assert main(args) == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert math.isfinite(metrics["val_loss"])
    spec = (out / "spec.rnn").read_text(encoding="utf-8")
    assert "weight_drop 0.5" in spec and "word_dropout=0.1" in spec
