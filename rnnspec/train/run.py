"""A run made ready to train: OUT locked and checked, the settings, the text, the
model and its optimizer, and on resume every state its checkpoint holds.

`prepare` makes every check before anything is written, so a refused run leaves OUT
as it was; `start_files` then writes the run's first files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import random
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rnnspec.lang.ir import ModelSpec
from rnnspec.train.checkpoint import (
    check_resumable,
    load_checkpoint,
    load_weights,
    restore,
    set_rng_state,
)
from rnnspec.train.config import TrainConfig, run_settings
from rnnspec.train.distributed import Distributed, on_rank0
from rnnspec.train.errors import TrainError
from rnnspec.train.model import fit_vocab, load_generated, load_spec
from rnnspec.train.regularize import ActivationRegularizer
from rnnspec.train.rundir import (
    CHECKPOINT,
    LOCK,
    RUN_FILES,
    SPEC,
    VOCAB,
    RunLock,
    remove_temporaries,
    text_writer,
    write_run_file,
)
from rnnspec.train.text import TextDataset, Vocab, load_text, text_sha256, token_lines


@dataclasses.dataclass
class Corpus:
    """The text a run trains on, its vocabulary, and its sequences split in two."""

    text: str
    description: str
    vocab: Vocab
    train_set: TextDataset
    val_set: TextDataset


@dataclasses.dataclass
class Run:
    """What a run is: fixed once prepared, but for the progress bar."""

    config: TrainConfig
    dist: Distributed
    device: torch.device
    amp_dtype: torch.dtype | None
    out: Path
    settings: dict[str, Any]  # RUN_DEFAULTS' names, the run's values
    spec: ModelSpec  # fitted to the vocabulary
    spec_source: str  # the text of the spec file
    corpus: Corpus
    notes: list[str]
    saved: dict[str, Any] | None  # the checkpoint resumed from
    regularizer: ActivationRegularizer  # --ar, --tar (inactive when both are 0)
    bar: Any = None  # the progress bar while there is one: messages go through it

    def say(self, message: str) -> None:
        """Print `message` on rank 0 (through the progress bar, if any)."""
        if self.dist.main:
            _write(message, self.bar)


@dataclasses.dataclass
class TrainState:
    """What training changes: the model, its optimizer and scaler, the losses."""

    model: nn.Module  # unwrapped
    wrapped: nn.Module  # what the steps run: the model, or its DDP wrapper
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    start: int = 0  # the step this session starts after
    losses: list[float] = dataclasses.field(default_factory=list)  # since step 1
    # The AR and TAR terms of every step since step 1, for those the run has on.
    regularization: dict[str, list[float]] = dataclasses.field(default_factory=dict)


def prepare(
    config: TrainConfig,
    dist: Distributed,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    cleanup: contextlib.ExitStack,
) -> tuple[Run, TrainState]:
    """Check everything and build the model, resumed when asked; write nothing.

    OUT's lock is held until `cleanup` closes.
    """
    out, saved, settings, base, spec_source = _open(config, dist, cleanup)
    built = None  # the class `rnnspec build` wrote, when asked to train it
    if config.generated is not None:
        built = load_generated(config.generated, base, config.spec, config.overrides)
    text, description = load_text(config.data)
    lines = token_lines(text, settings["tokens"])
    vocab = Vocab.build(lines, settings["tokens"])
    if len(vocab) < 2:
        raise TrainError(f"{description} has fewer than 2 distinct tokens")
    if saved is not None and saved["data_sha256"] != text_sha256(text):
        raise TrainError(
            f"{description} is not the text the run in {out} was trained on "
            f"({saved['data']})"
        )
    spec, note = fit_vocab(base, len(vocab), config.strict_vocab, built is not None)
    if saved is not None and saved["spec"] != spec.model_dump():
        raise TrainError(
            f"{config.spec} model {spec.name} is not the model the run in {out} "
            f"trained; the run's spec is in {out / SPEC}"
        )
    train_set, val_set = _split(lines, vocab, settings, description)
    run = Run(
        config=config,
        dist=dist,
        device=device,
        amp_dtype=amp_dtype,
        out=out,
        settings=settings,
        spec=spec,
        spec_source=spec_source,
        corpus=Corpus(text, description, vocab, train_set, val_set),
        notes=[note] if note else [],
        saved=saved,
        regularizer=ActivationRegularizer(settings["ar"], settings["tar"]),
    )
    for note in run.notes:
        run.say(note)
    state = _build(run, built)
    if saved is not None:
        _resume(run, state, saved)
    else:
        _seed(run)  # dropout differs across ranks
    return run, state


def start_files(run: Run) -> None:
    """OUT's first files (rank 0), after every check: a refused run writes nothing."""
    out = run.out
    remove_temporaries(out)
    if run.config.force and run.saved is None:
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)  # made by RunLock, except on Windows
    vocab_json = json.dumps(run.corpus.vocab.to_json()) + "\n"
    write_run_file(out / VOCAB, text_writer(vocab_json))
    write_run_file(out / SPEC, text_writer(run.spec.to_source()))


def _open(
    config: TrainConfig, dist: Distributed, cleanup: contextlib.ExitStack
) -> tuple[Path, dict[str, Any] | None, dict[str, Any], ModelSpec, str]:
    """(OUT, the checkpoint to resume or None, the settings, the spec, its file's
    text): OUT locked by rank 0, and the settings the run's own on resume."""
    base, spec_source = load_spec(config.spec, config.model, config.overrides)
    out = Path(config.out or Path("runs") / base.name)
    saved = on_rank0(dist, lambda: _prepare_out(out, config, cleanup))
    settings = run_settings(config, saved["settings"] if saved else None)
    if settings["model"] is not None and settings["model"] != base.name:
        base, spec_source = load_spec(config.spec, settings["model"], config.overrides)
    settings["model"] = base.name
    return out, saved, settings, base, spec_source


def _prepare_out(
    out: Path, config: TrainConfig, cleanup: contextlib.ExitStack
) -> dict[str, Any] | None:
    """Lock OUT for the run (released by `cleanup`) and check it against
    resume/force; returns the checkpoint to resume, if any."""
    cleanup.enter_context(RunLock(out))
    if config.resume:
        path = out / CHECKPOINT
        if not path.is_file():
            raise TrainError(f"nothing to resume: {path} does not exist")
        checkpoint = load_checkpoint(path)
        check_resumable(checkpoint)
        return checkpoint
    if any(path.name != LOCK for path in out.iterdir()) and not config.force:
        raise TrainError(
            f"{out} already holds files; pass --resume to continue its run, --force "
            "to start over in it, or another --out"
        )
    return None


def _split(
    lines: list[list[str]], vocab: Vocab, settings: dict[str, Any], description: str
) -> tuple[TextDataset, TextDataset]:
    """(training, validation) sequences: the text's last ones validate."""
    ids = [[vocab.index[t] for t in line] for line in lines]
    sequences = TextDataset.cut(ids, settings["seq_len"] + 1)
    n_val = max(1, round(len(sequences) * settings["val_fraction"]))
    if len(sequences) - n_val < 1:
        raise TrainError(
            f"{description} is too short: {len(sequences)} sequence(s) of up to "
            f"{settings['seq_len']} tokens, none left for training after validation"
        )
    return TextDataset(sequences[:-n_val]), TextDataset(sequences[-n_val:])


def _build(run: Run, built: type[nn.Module] | None) -> TrainState:
    """The model (the same initial weights on every rank), optimizer and scaler."""
    from rnnspec.compile.runtime import instantiate

    settings = run.settings
    torch.manual_seed(settings["seed"])  # the same initial weights on every rank
    model = (instantiate(run.spec) if built is None else built()).to(run.device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings["lr"], weight_decay=settings["weight_decay"]
    )
    enabled = run.amp_dtype == torch.float16
    scaler = torch.amp.GradScaler(run.device.type, enabled=enabled)
    state = TrainState(model, model, optimizer, scaler)
    state.regularization = {name: [] for name in ("ar", "tar") if settings[name] > 0}
    return state


def _resume(run: Run, state: TrainState, saved: dict[str, Any]) -> None:
    """Restore weights, optimizer, scaler, losses and this rank's RNG state."""
    load_weights(saved, state.model)
    optimizer, scaler = state.optimizer, state.scaler
    restore(saved, "optimizer", lambda: optimizer.load_state_dict(saved["optimizer"]))
    if saved["scaler"] and scaler.is_enabled():  # empty when saved without fp16
        restore(saved, "scaler", lambda: scaler.load_state_dict(saved["scaler"]))
    state.start = saved["step"]
    state.losses = list(saved["losses"])
    state.regularization = {k: list(v) for k, v in saved["regularization"].items()}
    run.say(f"resuming {run.out} at step {state.start} (loss {state.losses[-1]:.4f})")
    dist = run.dist
    if len(saved["rng"]) == dist.world:
        rng = saved["rng"][dist.rank]
        restore(saved, "RNG state", lambda: set_rng_state(rng, run.device))
    else:
        _seed(run, 1_000_003 * state.start)
        run.say(
            f"note: the run had {len(saved['rng'])} process(es), this has "
            f"{dist.world}: batches and dropout differ from an uninterrupted run"
        )


def _seed(run: Run, offset: int = 0) -> None:
    """Seed torch and `random` for this rank: dropout differs across ranks."""
    seed = run.settings["seed"] + run.dist.rank + offset
    torch.manual_seed(seed)
    random.seed(seed)


def _write(message: str, bar) -> None:
    if bar is not None:
        bar.write(message)
    else:
        print(message, flush=True)
