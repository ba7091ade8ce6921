"""What a training run is asked to do: `TrainConfig`, and the values it may take.

`RUN_DEFAULTS` are the settings that shape a run (a checkpoint keeps them, and
`--resume` continues with them); `SETTING_RULES` the range of every number, checked
before anything is read or written.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from rnnspec.train.errors import TrainError

#: Settings that shape a run; None means the default, or the checkpoint's on resume.
RUN_DEFAULTS: dict[str, Any] = {
    "model": None,
    "tokens": "char",
    "seq_len": 64,
    "batch_size": 32,
    "lr": 3e-3,
    "weight_decay": 0.01,
    "clip": 1.0,
    "warmup": 20,
    "seed": 0,
    "val_fraction": 0.05,
    "ar": 0.0,  # AWD-LSTM's activation regularization (rnnspec.train.regularize)
    "tar": 0.0,  # and temporal activation regularization; 0: off
}

#: Settings a checkpoint may lack (written before they existed), and their value
#: there: those runs trained without them.
LATER_SETTINGS: dict[str, Any] = {"ar": 0.0, "tar": 0.0}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


#: The values each number of a run may take: (test, what it says to expect).
#: `rnnspec train` checks the same in argument parsing (rnnspec/cli/train.py).
SETTING_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "steps": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "seq_len": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "batch_size": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "lr": (lambda v: _is_number(v) and 0 < v < math.inf, "a finite number > 0"),
    "weight_decay": (
        lambda v: _is_number(v) and 0 <= v < math.inf,
        "a finite number >= 0",
    ),
    "clip": (
        lambda v: _is_number(v) and 0 <= v < math.inf,
        "a finite number >= 0 (0: no clipping)",
    ),
    "warmup": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "seed": (lambda v: _is_int(v) and 0 <= v < 2**63, "an integer in 0..2**63-1"),
    "val_fraction": (lambda v: _is_number(v) and 0 < v < 1, "a number in (0, 1)"),
    "ar": (lambda v: _is_number(v) and 0 <= v < math.inf, "a finite number >= 0"),
    "tar": (lambda v: _is_number(v) and 0 <= v < math.inf, "a finite number >= 0"),
    "threads": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "checkpoint_every": (
        lambda v: _is_int(v) and v >= 0,
        "an integer >= 0 (0: at the end only)",
    ),
    "tokens": (lambda v: v in ("char", "word"), "char or word"),
}


def setting_problem(name: str, value: Any) -> str | None:
    """'expected lr to be ..., got nan', or None when `value` is allowed."""
    if name not in SETTING_RULES:
        return None
    test, expected = SETTING_RULES[name]
    return None if test(value) else f"expected {name} to be {expected}, got {value!r}"


def check_config(config: TrainConfig) -> None:
    """Every number of `config` in range, before anything is read or written."""
    for name in SETTING_RULES:
        value = getattr(config, name)
        problem = None if value is None else setting_problem(name, value)
        if problem:
            raise TrainError(problem)


@dataclasses.dataclass
class TrainConfig:
    """One training run. Fields left None take RUN_DEFAULTS (the checkpoint's own
    values on resume, where a different explicit value is an error)."""

    spec: str
    data: str
    out: str | None = None  # default runs/<model name>
    steps: int = 300
    model: str | None = None
    tokens: str | None = None
    seq_len: int | None = None
    batch_size: int | None = None  # per process
    lr: float | None = None
    weight_decay: float | None = None
    clip: float | None = None  # max gradient norm; 0 disables clipping
    warmup: int | None = None  # steps of linear learning-rate warmup
    seed: int | None = None
    val_fraction: float | None = None
    ar: float | None = None  # AR weight: A * mean(dropped top outputs ** 2); 0: off
    tar: float | None = None  # TAR weight: B * mean(consecutive raw outputs' diff ** 2)
    device: str = "auto"
    threads: int | None = None  # CPU threads; None: auto (see cpu_threads)
    amp: str = "auto"  # auto (bf16, or fp16 + GradScaler, on CUDA) | off | bf16 | fp16
    checkpoint_every: int = 100
    resume: bool = False
    force: bool = False
    strict_vocab: bool = False
    # A module built from SPEC by `rnnspec build`: train its class instead of
    # instantiate(spec) (the same model; see load_generated).
    generated: str | None = None
    overrides: tuple[str, ...] = ()  # `--set [MODEL.]STATEMENT[.OPTION]=VALUE`
    progress: bool = True
    plot: bool = True


def run_settings(config: TrainConfig, saved: dict[str, Any] | None) -> dict[str, Any]:
    """The run's value of each of RUN_DEFAULTS: the config's (the default for None),
    or on resume the saved run's (a different explicit value is an error)."""
    settings, clashes = {}, []
    for name, default in RUN_DEFAULTS.items():
        value = getattr(config, name)
        if saved is not None:
            if value is not None and value != saved[name]:
                clashes.append(f"{name} {value!r} (the run has {saved[name]!r})")
            settings[name] = saved[name]
        else:
            settings[name] = default if value is None else value
    if clashes:
        raise TrainError(
            "--resume continues a run with its own settings; these differ: "
            + ", ".join(clashes)
        )
    return settings
