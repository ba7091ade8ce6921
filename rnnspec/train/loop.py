"""The training loop: `train(TrainConfig(...))` runs (or resumes) one run.

AdamW, gradient clipping, AMP on CUDA, a progress bar, checkpoints every K steps and
at the end, exact resume, validation perplexity, a loss-curve PNG;
DistributedDataParallel when launched by torchrun. One run reads:

    prepare (every check; nothing written) → start the files →
    for each step: train_step, and every K steps a checkpoint →
    the last checkpoint → evaluate → the report (metrics.json, loss.png).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from pathlib import Path

import torch
from torch import nn

from rnnspec.lang.ir import ModelSpec
from rnnspec.lang.versions import LANGUAGE_VERSION
from rnnspec.train.batching import BucketBatchSampler
from rnnspec.train.checkpoint import FORMAT, gathered_rng_states
from rnnspec.train.config import TrainConfig, check_config
from rnnspec.train.distributed import (
    Distributed,
    cpu_threads,
    on_rank0,
    process_group,
    resolve_device,
)
from rnnspec.train.errors import TrainError
from rnnspec.train.plots import mean, plot_losses
from rnnspec.train.run import Run, TrainState, prepare, start_files
from rnnspec.train.rundir import (
    CHECKPOINT,
    METRICS,
    PLOT,
    SPEC,
    VOCAB,
    text_writer,
    write_run_file,
)
from rnnspec.train.steps import autocast, batches, evaluate, resolve_amp, train_step
from rnnspec.train.text import Vocab, text_sha256


@dataclasses.dataclass
class TrainResult:
    out: Path
    spec: ModelSpec
    vocab: Vocab
    model: nn.Module  # unwrapped, on its device
    start_step: int
    steps: int
    losses: list[float]  # train loss of every step since step 1 (mean over tokens)
    # The AR and TAR terms of every step since step 1, for those on (--ar, --tar).
    regularization: dict[str, list[float]]
    val_loss: float
    val_ppl: float
    tokens_per_s: float  # this session's, over all processes
    notes: list[str]


def train(config: TrainConfig) -> TrainResult:
    """Run (or resume) one training run; see the module docstring.

    Launched by torchrun (WORLD_SIZE > 1 in the environment), it joins the process
    group (NCCL on CUDA, gloo on CPU) unless one is initialized already, trains
    with DistributedDataParallel on a shard of each batch step, and only rank 0
    writes.
    """
    check_config(config)
    dist = Distributed.current()
    device = resolve_device(config.device, dist)
    if device.type == "cpu":
        torch.set_num_threads(config.threads or cpu_threads())
    amp_dtype = resolve_amp(config.amp, device)
    with process_group(dist, device), contextlib.ExitStack() as cleanup:
        return _train(config, dist, device, amp_dtype, cleanup)  # cleanup: OUT's lock


def _train(
    config: TrainConfig,
    dist: Distributed,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    cleanup: contextlib.ExitStack,
) -> TrainResult:
    """prepare → OUT's first files → the steps → evaluate → report."""
    run, state = prepare(config, dist, device, amp_dtype, cleanup)
    on_rank0(dist, lambda: start_files(run))  # after every check
    if dist.world > 1:
        state.wrapped = nn.parallel.DistributedDataParallel(
            state.model, device_ids=[device.index] if device.type == "cuda" else None
        )
    sampler = _sampler(run)
    _announce(run, state, sampler)
    meter = _Meter()
    step = _train_steps(run, state, sampler, meter)
    val_loss = on_rank0(dist, lambda: _evaluate(run, state))
    val_ppl = math.exp(min(val_loss, 700.0))
    on_rank0(dist, lambda: _report(run, state, step, meter, val_loss, val_ppl))
    if dist.world > 1:
        import torch.distributed as tdist

        tdist.barrier()  # no rank leaves the group while another still talks in it
    return TrainResult(
        out=run.out,
        spec=run.spec,
        vocab=run.corpus.vocab,
        model=state.model,
        start_step=state.start,
        steps=step,
        losses=state.losses,
        regularization=state.regularization,
        val_loss=val_loss,
        val_ppl=val_ppl,
        tokens_per_s=meter.tokens_per_s(),
        notes=run.notes,
    )


def _sampler(run: Run) -> BucketBatchSampler:
    """This rank's shard of every step's batches of the training set."""
    return BucketBatchSampler(
        run.corpus.train_set.lengths,
        run.settings["batch_size"],
        seed=run.settings["seed"],
        num_replicas=run.dist.world,
        rank=run.dist.rank,
    )


@dataclasses.dataclass
class _Meter:
    """This session's tokens and time, and the progress bar's smoothed loss and rate."""

    tokens: int = 0
    seconds: float = 0.0
    smooth: float | None = None  # loss, exponentially smoothed
    rate: float | None = None  # tokens/s, exponentially smoothed
    terms: dict[str, float] = dataclasses.field(default_factory=dict)  # AR, TAR too

    def add(
        self, loss: float, tokens: float, elapsed: float, terms: dict[str, float]
    ) -> None:
        self.tokens += int(tokens)
        self.seconds += elapsed
        self.smooth = _smoothed(self.smooth, loss)
        self.rate = _smoothed(self.rate, tokens / max(elapsed, 1e-9))
        for name, value in terms.items():
            self.terms[name] = _smoothed(self.terms.get(name), value)

    def said(self, digits: int = 4) -> str:
        """'loss 1.2345', with ', ar 0.0123, tar 0.0034' when those are on."""
        terms = "".join(f", {k} {v:.{digits}f}" for k, v in self.terms.items())
        return f"loss {self.smooth:.{digits}f}{terms}"

    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def _smoothed(smooth: float | None, value: float) -> float:
    return value if smooth is None else 0.9 * smooth + 0.1 * value


def _train_steps(
    run: Run, state: TrainState, sampler: BucketBatchSampler, meter: _Meter
) -> int:
    """Steps after `state.start` to `--steps`, saved every K and at the end; returns
    the last step."""
    config, start = run.config, state.start
    if start >= config.steps:
        run.say(f"the run is at step {start} already (--steps {config.steps})")
    run.bar = _progress(config, run.dist, start)
    precision = autocast(run.device, run.amp_dtype)
    data = batches(sampler, run.corpus.train_set, start)
    state.model.train()
    step = start
    last_saved = start if run.saved is not None else -1
    for step in range(start + 1, config.steps + 1):
        tick = time.perf_counter()
        loss, tokens, terms = train_step(run, state, step, next(data), precision)
        state.losses.append(loss)
        for name, value in terms.items():
            state.regularization[name].append(value)
        meter.add(loss, tokens, time.perf_counter() - tick, terms)
        if run.bar is not None:
            postfix = f"{meter.said(3)}, {meter.rate:,.0f} tok/s"
            run.bar.set_postfix_str(postfix, refresh=False)
            run.bar.update(1)
        if config.checkpoint_every > 0 and step % config.checkpoint_every == 0:
            _save(run, state, step)
            last_saved = step
            run.say(f"step {step}: {meter.said()}, saved {run.out / CHECKPOINT}")
    if run.bar is not None:
        run.bar.close()
    if step != last_saved and step > start:
        _save(run, state, step)
    return step


def _save(run: Run, state: TrainState, step: int) -> None:
    """Write OUT/checkpoint.pt (rank 0; every rank's RNG state gathered into it)."""
    rng = gathered_rng_states(run.dist, run.device)
    corpus = run.corpus
    payload = {
        "format": FORMAT,
        "step": step,
        "model": state.model.state_dict(),
        "optimizer": state.optimizer.state_dict(),
        "scaler": state.scaler.state_dict(),
        "rng": rng,
        "losses": list(state.losses),
        "regularization": {k: list(v) for k, v in state.regularization.items()},
        "settings": dict(run.settings),
        "spec": run.spec.model_dump(),
        "spec_text": run.spec.to_source(),
        "spec_source": run.spec_source,
        "spec_path": run.config.spec,
        "spec_language": LANGUAGE_VERSION,
        "spec_overrides": list(run.config.overrides),
        "vocab": corpus.vocab.to_json(),
        "data": corpus.description,
        "data_sha256": text_sha256(corpus.text),
        "world_size": run.dist.world,
    }
    path = run.out / CHECKPOINT
    on_rank0(  # a failed write stops every rank
        run.dist, lambda: write_run_file(path, lambda h: torch.save(payload, h))
    )


def _evaluate(run: Run, state: TrainState) -> float:
    """The validation loss (rank 0's, sent to every rank)."""
    batch_size = run.settings["batch_size"]
    val_set = run.corpus.val_set
    return evaluate(
        state.model, run.spec, val_set, batch_size, run.device, run.amp_dtype
    )


def _announce(run: Run, state: TrainState, sampler: BucketBatchSampler) -> None:
    """Say what is trained, on what, how (rank 0)."""
    if not run.dist.main:
        return
    config, dist, spec, corpus = run.config, run.dist, run.spec, run.corpus
    parameters = sum(p.numel() for p in state.model.parameters())
    run.say(
        f"training {spec.name}"
        + (f" of {config.generated}" if config.generated else "")
        + f" ({spec.summary().rstrip('.')}; {parameters:,} parameters) on "
        f"{corpus.description}: {corpus.train_set.tokens():,} train / "
        f"{corpus.val_set.tokens():,} validation tokens, vocab {len(corpus.vocab)}, "
        f"{len(sampler)} batches of {run.settings['batch_size']} per epoch"
        + (f" x {dist.world} processes" if dist.world > 1 else "")
        + _regularization_note(run.settings)
        + f", device {run.device}"
        + (_threads_note() if run.device.type == "cpu" else "")
        + (f", autocast {str(run.amp_dtype).split('.')[-1]}" if run.amp_dtype else "")
    )


def _report(
    run: Run,
    state: TrainState,
    step: int,
    meter: _Meter,
    val_loss: float,
    val_ppl: float,
) -> None:
    """Say how the losses went, write metrics.json and loss.png (rank 0)."""
    start, losses, out = state.start, state.losses, run.out
    if step > start:
        n = min(10, step - start)
        first, last = mean(losses[start : start + n]), mean(losses[-n:])
        run.say(
            f"steps {start + 1}-{step}: train loss {first:.4f} (mean of the first "
            f"{n}) -> {last:.4f} (of the last {n}), {meter.tokens_per_s():,.0f} "
            f"tokens/s, {meter.seconds:.1f} s"
        )
        terms = ", ".join(
            f"{name.upper()} term {mean(values[start : start + n]):.4f} -> "
            f"{mean(values[-n:]):.4f}"
            for name, values in state.regularization.items()
        )
        if terms:  # --ar, --tar
            run.say(f"steps {start + 1}-{step}: {terms} (means likewise)")
    run.say(
        f"validation: loss {val_loss:.4f}, perplexity {val_ppl:.2f} "
        f"({run.corpus.val_set.tokens():,} tokens)"
    )
    metrics = {
        "model": run.spec.name,
        "data": run.corpus.description,
        "steps": step,
        "vocab": len(run.corpus.vocab),
        "train_loss": losses[-1] if losses else None,
        "val_loss": val_loss,
        "val_perplexity": val_ppl,
        "tokens_per_s": meter.tokens_per_s(),
        "world_size": run.dist.world,
        "ar": run.settings["ar"],
        "tar": run.settings["tar"],
        "losses": losses,
        **{f"{name}_losses": values for name, values in state.regularization.items()},
    }
    metrics_json = json.dumps(metrics, indent=1) + "\n"
    write_run_file(out / METRICS, text_writer(metrics_json))
    wrote = [CHECKPOINT, VOCAB, SPEC, METRICS]
    if run.config.plot and _plot(run, losses, val_loss):
        wrote.append(PLOT)
    run.say(f"wrote {', '.join(str(out / name) for name in wrote)}")


def _plot(run: Run, losses: list[float], val_loss: float) -> bool:
    """OUT/loss.png; False without matplotlib, an OS error a TrainError."""
    try:
        return plot_losses(run.out / PLOT, losses, val_loss, run.spec.name)
    except OSError as exc:
        reason = exc.strerror or exc
        raise TrainError(f"cannot write {run.out / PLOT}: {reason}") from None


def _regularization_note(settings: dict) -> str:
    """', AR 2 and TAR 1 (AWD-LSTM)' for the terms on; '' when none is."""
    on = [
        f"{name.upper()} {settings[name]:g}" for name in ("ar", "tar") if settings[name]
    ]
    return f", {' and '.join(on)} (AWD-LSTM)" if on else ""


def _threads_note() -> str:
    threads = torch.get_num_threads()
    return f", {threads} thread{'s' if threads != 1 else ''}"


def _progress(config: TrainConfig, dist: Distributed, start: int):
    if not (config.progress and dist.main) or start >= config.steps:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(
        total=config.steps, initial=start, unit="step", dynamic_ncols=True, leave=True
    )
