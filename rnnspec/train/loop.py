"""Train a spec'd language model on a text file, checkpoint it, sample from it.

The pieces, each usable alone:

- `load_text(data)`: a text file, or `"stdlib"`, a corpus assembled deterministically
  from the running Python's standard library sources.
- `Vocab`: character or whitespace-word tokens, saved as JSON.
- `TextDataset`: the text cut into sequences of at most `seq_len + 1` tokens at line
  boundaries (so lengths vary), batched by
  `rnnspec.train.batching.BucketBatchSampler` and padded per batch.
- `train(TrainConfig(...))`: AdamW, gradient clipping, AMP on CUDA, a progress bar,
  checkpoints every K steps and at the end, exact resume, validation perplexity, a
  loss-curve PNG; DistributedDataParallel when launched by torchrun.
- `load_checkpoint`, `model_from_checkpoint`, `generate`: sampling.

A language model here is a spec with `input tokens` and `head logits`. Its VOCAB is
fitted to the data: when the data's vocabulary has a different size, the model is
built from the spec with that size (`spec.model_copy`), the run says so, and the
fitted spec is what the checkpoint and `OUT/spec.rnn` hold. `strict_vocab=True`
makes a mismatch an error instead. With `generated=FILE`, the class that
`rnnspec build` wrote is trained instead, with the spec's VOCAB unchanged (the
data's vocabulary must fit in it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import math
import os
import pickle
import random
import sys
import sysconfig
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

try:
    import fcntl
except ImportError:  # Windows: runs are not locked
    fcntl = None  # type: ignore[assignment]

import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import Tensor, nn

from rnnspec.lang.diagnostics import SpecError
from rnnspec.lang.ir import LogitsHead, ModelSpec, TokensInput
from rnnspec.lang.lower import parse
from rnnspec.train.batching import BucketBatchSampler

#: Files of every run in OUT; `force=True` removes exactly these.
CHECKPOINT = "checkpoint.pt"
VOCAB = "vocab.json"
SPEC = "spec.rnn"
METRICS = "metrics.json"
PLOT = "loss.png"
RUN_FILES = (CHECKPOINT, VOCAB, SPEC, METRICS, PLOT)
#: Held (flock) by the run writing OUT, removed when it ends; see RunLock.
LOCK = ".lock"

#: Marks the end of a line in word mode (whitespace tokens lose the newlines).
EOL = "<eol>"
#: Target value of padded steps: `F.cross_entropy(..., ignore_index=IGNORE)`.
IGNORE = -100

#: Standard-library modules of the `stdlib` corpus, in order; absent ones skipped.
STDLIB_FILES = (
    "argparse.py",
    "base64.py",
    "bisect.py",
    "calendar.py",
    "collections/__init__.py",
    "contextlib.py",
    "copy.py",
    "csv.py",
    "dataclasses.py",
    "difflib.py",
    "enum.py",
    "fnmatch.py",
    "fractions.py",
    "functools.py",
    "glob.py",
    "heapq.py",
    "inspect.py",
    "json/decoder.py",
    "json/encoder.py",
    "operator.py",
    "pprint.py",
    "queue.py",
    "random.py",
    "shlex.py",
    "statistics.py",
    "string.py",
    "textwrap.py",
    "threading.py",
    "typing.py",
    "weakref.py",
)


class TrainError(Exception):
    """A training run cannot start or continue; the message says why and what to do."""


# -- text -----------------------------------------------------------------------------


def stdlib_corpus() -> str:
    """Python source from the running interpreter's standard library (~1 MB).

    Deterministic for a given Python version: a fixed list of modules, in order,
    keeping printable ASCII and newlines only.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    parts = []
    for name in STDLIB_FILES:
        path = root / name
        if path.is_file():
            text = path.read_text(encoding="utf-8", errors="replace")
            parts.append(f"# ---- {name} ----\n" + _printable_ascii(text))
    if not parts:
        raise TrainError(f"found no standard-library sources under {root}")
    return "\n".join(parts)


def _printable_ascii(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\t", "    ")
    return "".join(c for c in text if c == "\n" or " " <= c <= "~")


def load_text(data: str) -> tuple[str, str]:
    """(text, description) of `data`: a UTF-8 file path, or `stdlib`."""
    if data == "stdlib":
        version = ".".join(map(str, sys.version_info[:3]))
        return stdlib_corpus(), f"stdlib (Python {version})"
    path = Path(data)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TrainError(
            f"no such data file: {data} (pass a text file, or `stdlib` for a "
            "corpus of Python standard-library sources)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TrainError(f"cannot read {data} as UTF-8 text: {exc}") from None
    return text, str(path)


def token_lines(text: str, mode: str) -> list[list[str]]:
    """The text's tokens line by line: characters (newline included) or words."""
    if mode == "char":
        return [list(line) for line in text.splitlines(keepends=True)]
    if mode == "word":
        lines = (line.split() for line in text.splitlines())
        return [words + [EOL] for words in lines if words]
    raise ValueError(f"tokens must be 'char' or 'word', got {mode!r}")


class Vocab:
    """Token strings ↔ ids; `mode` is 'char' or 'word'. Ids follow sorted order."""

    def __init__(self, tokens: Sequence[str], mode: str) -> None:
        if mode not in ("char", "word"):
            raise ValueError(f"tokens must be 'char' or 'word', got {mode!r}")
        self.tokens = list(tokens)
        self.mode = mode
        self.index = {token: i for i, token in enumerate(self.tokens)}

    @classmethod
    def build(cls, lines: Sequence[Sequence[str]], mode: str) -> Vocab:
        return cls(sorted({token for line in lines for token in line}), mode)

    def __len__(self) -> int:
        return len(self.tokens)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Vocab):
            return NotImplemented
        return (self.tokens, self.mode) == (other.tokens, other.mode)

    def encode(self, text: str) -> tuple[list[int], list[str]]:
        """(ids, unknown tokens) of `text`; unknown tokens are left out of the ids."""
        tokens = [t for line in token_lines(text, self.mode) for t in line]
        if self.mode == "word" and tokens and not text.rstrip(" ").endswith("\n"):
            tokens.pop()  # no end-of-line the text did not have
        ids = [self.index[t] for t in tokens if t in self.index]
        return ids, [t for t in tokens if t not in self.index]

    def decode(self, ids: Sequence[int]) -> str:
        tokens = [self.tokens[i] for i in ids]
        if self.mode == "char":
            return "".join(tokens)
        parts: list[str] = []
        for token in tokens:
            if token == EOL:
                parts.append("\n")
            else:
                if parts and parts[-1] != "\n":
                    parts.append(" ")
                parts.append(token)
        return "".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "tokens": self.tokens}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Vocab:
        return cls(data["tokens"], data["mode"])


class TextDataset:
    """Sequences of 2..`max_len` token ids, cut from whole lines where they fit.

    Lines are packed greedily into sequences of at most `max_len` tokens; a line
    longer than that is cut. Item i is a language-model pair: inputs
    `ids[:-1]`, targets `ids[1:]`.
    """

    def __init__(self, sequences: Sequence[Sequence[int]]) -> None:
        if not sequences:
            raise ValueError("no sequences")
        self.lengths = [len(s) - 1 for s in sequences]  # steps of each input
        self.offsets = list(
            itertools.accumulate((len(s) for s in sequences), initial=0)
        )
        self.ids = torch.tensor([i for s in sequences for i in s], dtype=torch.long)

    @staticmethod
    def cut(lines: Sequence[Sequence[int]], max_len: int) -> list[list[int]]:
        """Pack lines of ids into sequences of 2..max_len ids, in text order."""
        sequences: list[list[int]] = []
        current: list[int] = []
        for line in lines:
            if len(current) + len(line) <= max_len:
                current.extend(line)
                continue
            sequences.append(current)
            line = list(line)
            while len(line) > max_len:
                sequences.append(line[:max_len])
                line = line[max_len:]
            current = line
        sequences.append(current)
        return [s for s in sequences if len(s) >= 2]

    def __len__(self) -> int:
        return len(self.lengths)

    def tokens(self) -> int:
        """Predicted tokens in the whole dataset."""
        return sum(self.lengths)

    def collate(self, indices: Sequence[int]) -> tuple[Tensor, Tensor, Tensor]:
        """(inputs (B, T), targets (B, T) with IGNORE past each end, lengths (B,))."""
        lengths = torch.tensor([self.lengths[i] for i in indices], dtype=torch.long)
        steps = int(lengths.max())
        x = torch.zeros(len(indices), steps, dtype=torch.long)
        y = torch.full((len(indices), steps), IGNORE, dtype=torch.long)
        for row, i in enumerate(indices):
            start, n = self.offsets[i], self.lengths[i]
            x[row, :n] = self.ids[start : start + n]
            y[row, :n] = self.ids[start + 1 : start + n + 1]
        return x, y, lengths


# -- the model ------------------------------------------------------------------------


def load_spec(path: str, model: str | None = None) -> tuple[ModelSpec, str]:
    """(spec, spec file text) of model `model` (or the file's only model)."""
    try:
        source = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise TrainError(f"cannot read spec {path}: {exc.strerror}") from None
    try:
        specs = parse(source, filename=path)
    except SpecError as exc:
        raise TrainError(str(exc)) from None
    names = [s.name for s in specs]
    if model is None:
        if len(specs) > 1:
            raise TrainError(
                f"{path} holds models {', '.join(names)}; pick one with --model NAME"
            )
        return specs[0], source
    for spec in specs:
        if spec.name == model:
            return spec, source
    raise TrainError(f"{path} has no model {model!r}; it has {', '.join(names)}")


def _language_model_problems(spec: ModelSpec) -> list[str]:
    """Why `spec` is no language model (empty when it is one)."""
    problems = []
    if spec.encoder != "recurrent":
        problems.append(f"it has encoder {spec.encoder}")
    if not isinstance(spec.input, TokensInput):
        problems.append("it reads features, not `input tokens VOCAB embed=E`")
    if not isinstance(spec.head, LogitsHead):
        kind = spec.head.kind if spec.head is not None else "none"
        problems.append(f"its head is {kind}, not `head logits`")
    if spec.directions == 2:
        problems.append(
            "it is bidirectional (`directions 2`): its output at a step would see "
            "the token it has to predict"
        )
    return problems


def fit_vocab(
    spec: ModelSpec, vocab_size: int, strict: bool = False, fixed: bool = False
) -> tuple[ModelSpec, str | None]:
    """The language model of `spec` for a vocabulary of `vocab_size` tokens.

    Returns the spec (with VOCAB replaced when it differs) and a note saying so,
    or raises TrainError when `spec` is no language model (or strict and sizes
    differ). `fixed`: VOCAB cannot change (a built class); the data must fit in it.
    """
    problems = _language_model_problems(spec)
    if problems:
        raise TrainError(
            f"model {spec.name} is not a language model: {'; '.join(problems)}"
        )
    assert isinstance(spec.input, TokensInput)
    declared = spec.input.vocab
    if declared == vocab_size or (fixed and vocab_size < declared):
        return spec, None
    if fixed:
        raise TrainError(
            f"the data has {vocab_size} distinct tokens but the built model "
            f"{spec.name} has `input tokens {declared}`; raise VOCAB in the spec and "
            "rebuild, or train without --generated"
        )
    embed = spec.input.embed
    if strict:
        raise TrainError(
            f"the data has {vocab_size} distinct tokens but model {spec.name} says "
            f"`input tokens {declared}`; put `input tokens {vocab_size} embed={embed}` "
            "in the spec (or drop --strict-vocab to fit it automatically)"
        )
    update: dict[str, Any] = {"vocab": vocab_size}
    if spec.input.padding is not None and spec.input.padding >= vocab_size:
        update["padding"] = None
    fitted = spec.model_copy(update={"input": spec.input.model_copy(update=update)})
    fitted = ModelSpec.model_validate(fitted.model_dump())  # re-check every rule
    note = (
        f"note: the data has {vocab_size} distinct tokens; model {spec.name} says "
        f"`input tokens {declared}`, so it is built with `input tokens {vocab_size}` "
        f"(saved as {SPEC}; --strict-vocab makes this an error)"
    )
    return fitted, note


def load_generated(path: str, spec: ModelSpec, spec_source: str) -> type[nn.Module]:
    """Class `spec.name` of the module that `rnnspec build` wrote from `spec_source`.

    The module's header names the sha256 of the spec text it was built from; a
    different hash means a stale build, which is refused rather than trained.
    """
    import importlib.util

    from rnnspec.compile.codegen import built_spec_sha256, spec_sha256

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise TrainError(f"cannot read {path}: {exc.strerror}") from None
    built_from = built_spec_sha256(text)
    if built_from is None:
        raise TrainError(f"{path} was not written by `rnnspec build`")
    if built_from != spec_sha256(spec_source):
        raise TrainError(
            f"{path} was built from another version of the spec; rebuild it with "
            "`rnnspec build SPEC -o DIR`"
        )
    name = f"_rnnspec_generated_{Path(path).stem}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    cls = getattr(module, spec.name, None)
    if cls is None:
        raise TrainError(f"{path} has no class {spec.name}")
    return cls


def _forward(model: nn.Module, spec: ModelSpec, x: Tensor, lengths, state=None):
    """The model on batch-first `x` (B, T), whatever its layout: (logits, state)."""
    if not spec.batch_first:
        x = x.transpose(0, 1)
    out, state = model(x, lengths if spec.packing else None, state)
    if not spec.batch_first:
        out = out.transpose(0, 1)
    return out, state


# -- distributed ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun launch (world 1 when not launched)."""

    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> Distributed:
        env = os.environ
        if int(env.get("WORLD_SIZE", "1")) <= 1:
            return cls()
        return cls(
            int(env["WORLD_SIZE"]), int(env["RANK"]), int(env.get("LOCAL_RANK", "0"))
        )


def cpu_threads() -> int:
    """torch's thread count, lowered to the cores other processes leave idle.

    On a busy machine, torch's threads wait on each other at every small parallel
    op of a recurrent step: one thread per idle core (at least one) runs several
    times faster there, and as fast as before on an idle machine.
    """
    threads = torch.get_num_threads()
    try:
        cores = len(os.sched_getaffinity(0))
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not on Linux/macOS
        return threads
    return max(1, min(threads, round(cores - load)))


def resolve_device(name: str, dist: Distributed) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise TrainError("--device cuda, but torch sees no CUDA device")
        return torch.device("cuda", dist.local_rank % torch.cuda.device_count())
    if name == "cpu":
        return torch.device("cpu")
    raise TrainError(f"device must be auto, cpu or cuda, got {name!r}")


# -- training -------------------------------------------------------------------------


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
}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


#: The values each number of a run may take: (test, what it says to expect).
#: `rnnspec train` checks the same in argument parsing (commands/train.py).
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
    "threads": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "checkpoint_every": (
        lambda v: _is_int(v) and v >= 0,
        "an integer >= 0 (0: at the end only)",
    ),
    "tokens": (lambda v: v in ("char", "word"), "char or word"),
}


def _setting_problem(name: str, value: Any) -> str | None:
    """'expected lr to be ..., got nan', or None when `value` is allowed."""
    if name not in SETTING_RULES:
        return None
    test, expected = SETTING_RULES[name]
    return None if test(value) else f"expected {name} to be {expected}, got {value!r}"


def _check_config(config: TrainConfig) -> None:
    """Every number of `config` in range, before anything is read or written."""
    for name in SETTING_RULES:
        value = getattr(config, name)
        problem = None if value is None else _setting_problem(name, value)
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
    progress: bool = True
    plot: bool = True


@dataclasses.dataclass
class TrainResult:
    out: Path
    spec: ModelSpec
    vocab: Vocab
    model: nn.Module  # unwrapped, on its device
    start_step: int
    steps: int
    losses: list[float]  # train loss of every step since step 1 (mean over tokens)
    val_loss: float
    val_ppl: float
    tokens_per_s: float  # this session's, over all processes
    notes: list[str]


def _settings(config: TrainConfig, saved: dict[str, Any] | None) -> dict[str, Any]:
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
        _check_resumable(checkpoint)
        return checkpoint
    if any(path.name != LOCK for path in out.iterdir()) and not config.force:
        raise TrainError(
            f"{out} already holds files; pass --resume to continue its run, --force "
            "to start over in it, or another --out"
        )
    return None


def _amp(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    mode = config.amp
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None
    if mode == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if mode == "bf16":
        return torch.bfloat16
    if mode == "fp16":
        if device.type != "cuda":
            raise TrainError("--amp fp16 needs CUDA; use bf16 or off on CPU")
        return torch.float16
    raise TrainError(f"amp must be auto, off, bf16 or fp16, got {mode!r}")


def _rng_state(device: torch.device) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def train(config: TrainConfig) -> TrainResult:
    """Run (or resume) one training run; see the module docstring.

    Launched by torchrun (WORLD_SIZE > 1 in the environment), it joins the process
    group (NCCL on CUDA, gloo on CPU) unless one is initialized already, trains
    with DistributedDataParallel on a shard of each batch step, and only rank 0
    writes.
    """
    import torch.distributed as tdist

    _check_config(config)
    dist = Distributed.from_env()
    if tdist.is_available() and tdist.is_initialized():
        dist = Distributed(tdist.get_world_size(), tdist.get_rank(), dist.local_rank)
    device = resolve_device(config.device, dist)
    if device.type == "cpu":
        torch.set_num_threads(config.threads or cpu_threads())
    amp_dtype = _amp(config, device)

    created_group = False
    if dist.world > 1 and not tdist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        tdist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        created_group = True
    try:
        with contextlib.ExitStack() as cleanup:  # holds OUT's lock until the end
            return _train(config, dist, device, amp_dtype, cleanup)
    finally:
        if created_group:
            tdist.destroy_process_group()


def _on_rank0(dist: Distributed, work):
    """`work()` on rank 0 alone, its result (or TrainError) sent to every rank.

    So only rank 0 needs OUT: nodes need no shared filesystem, even to resume.
    """
    if dist.world == 1:
        return work()
    import torch.distributed as tdist

    message: list[Any] = [None]
    if dist.main:
        try:
            message = [("ok", work())]
        except TrainError as exc:
            message = [("error", str(exc))]
    tdist.broadcast_object_list(message, src=0)
    kind, value = message[0]
    if kind == "error":
        raise TrainError(value)
    return value


def _train(
    config: TrainConfig,
    dist: Distributed,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    cleanup: contextlib.ExitStack,
) -> TrainResult:
    import torch.distributed as tdist

    from rnnspec.compile.runtime import instantiate

    def say(message: str) -> None:
        if dist.main:
            _write(message, bar)

    bar = None
    base, spec_source = load_spec(config.spec, config.model)
    out = Path(config.out or Path("runs") / base.name)
    saved = _on_rank0(dist, lambda: _prepare_out(out, config, cleanup))
    settings = _settings(config, saved["settings"] if saved else None)
    if settings["model"] is not None and settings["model"] != base.name:
        base, spec_source = load_spec(config.spec, settings["model"])
    settings["model"] = base.name

    built = None  # the class `rnnspec build` wrote, when asked to train it
    if config.generated is not None:
        built = load_generated(config.generated, base, spec_source)

    text, description = load_text(config.data)
    lines = token_lines(text, settings["tokens"])
    vocab = Vocab.build(lines, settings["tokens"])
    if len(vocab) < 2:
        raise TrainError(f"{description} has fewer than 2 distinct tokens")
    if saved is not None and saved["data_sha256"] != _sha256(text):
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
    notes = [note] if note else []

    ids = [[vocab.index[t] for t in line] for line in lines]
    sequences = TextDataset.cut(ids, settings["seq_len"] + 1)
    n_val = max(1, round(len(sequences) * settings["val_fraction"]))
    if len(sequences) - n_val < 1:
        raise TrainError(
            f"{description} is too short: {len(sequences)} sequence(s) of up to "
            f"{settings['seq_len']} tokens, none left for training after validation"
        )
    train_set = TextDataset(sequences[:-n_val])
    val_set = TextDataset(sequences[-n_val:])

    for note in notes:
        say(note)

    seed = settings["seed"]
    torch.manual_seed(seed)  # the same initial weights on every rank
    model = (instantiate(spec) if built is None else built()).to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings["lr"], weight_decay=settings["weight_decay"]
    )
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    start = 0
    losses: list[float] = []
    if saved is not None:
        _load_weights(saved, model)
        _restore(
            saved, "optimizer", lambda: optimizer.load_state_dict(saved["optimizer"])
        )
        if saved["scaler"] and scaler.is_enabled():  # empty when saved without fp16
            _restore(saved, "scaler", lambda: scaler.load_state_dict(saved["scaler"]))
        start = saved["step"]
        losses = list(saved["losses"])
        say(f"resuming {out} at step {start} (loss {losses[-1]:.4f})")
        if len(saved["rng"]) == dist.world:
            state = saved["rng"][dist.rank]
            _restore(saved, "RNG state", lambda: _set_rng_state(state, device))
        else:
            torch.manual_seed(seed + dist.rank + 1_000_003 * start)
            random.seed(seed + dist.rank + 1_000_003 * start)
            say(
                f"note: the run had {len(saved['rng'])} process(es), this has "
                f"{dist.world}: batches and dropout differ from an uninterrupted run"
            )
    else:
        torch.manual_seed(seed + dist.rank)  # dropout differs across ranks
        random.seed(seed + dist.rank)

    def start_files() -> None:
        _remove_temporaries(out)
        if config.force and saved is None:
            for name in RUN_FILES:
                (out / name).unlink(missing_ok=True)
        out.mkdir(parents=True, exist_ok=True)  # made by RunLock, except on Windows
        vocab_json = json.dumps(vocab.to_json()) + "\n"
        _write_run_file(out / VOCAB, _text_writer(vocab_json))
        _write_run_file(out / SPEC, _text_writer(spec.to_source()))

    _on_rank0(dist, start_files)  # after every check: a refused run writes nothing
    wrapped: nn.Module = model
    if dist.world > 1:
        wrapped = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    sampler = BucketBatchSampler(
        train_set.lengths,
        settings["batch_size"],
        seed=seed,
        num_replicas=dist.world,
        rank=dist.rank,
    )
    if dist.main:
        say(
            f"training {spec.name}"
            + (f" of {config.generated}" if config.generated else "")
            + f" ({spec.summary().rstrip('.')}; "
            f"{sum(p.numel() for p in model.parameters()):,} parameters) on "
            f"{description}: {train_set.tokens():,} train / {val_set.tokens():,} "
            f"validation tokens, vocab {len(vocab)}, {len(sampler)} batches of "
            f"{settings['batch_size']} per epoch"
            + (f" x {dist.world} processes" if dist.world > 1 else "")
            + f", device {device}"
            + (_threads_note() if device.type == "cpu" else "")
            + (f", autocast {str(amp_dtype).split('.')[-1]}" if amp_dtype else "")
        )
    if start >= config.steps:
        say(f"the run is at step {start} already (--steps {config.steps})")

    bar = _progress(config, dist, start)
    context = (
        torch.autocast(device.type, dtype=amp_dtype)
        if amp_dtype is not None
        else contextlib.nullcontext()
    )
    batches = _batches(sampler, train_set, start)
    model.train()
    session_tokens, session_time = 0, 0.0
    smooth, rate = None, None
    step = start
    last_saved = start if saved is not None else -1
    for step in range(start + 1, config.steps + 1):
        tick = time.perf_counter()
        x, y, lengths = next(batches)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with context:
            logits, _ = _forward(wrapped, spec, x, lengths)
        loss = F.cross_entropy(
            logits.float().flatten(0, 1), y.flatten(), ignore_index=IGNORE
        )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if settings["clip"] > 0:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), settings["clip"])
        for group in optimizer.param_groups:  # a function of the step: resumable
            group["lr"] = settings["lr"] * min(1.0, step / max(settings["warmup"], 1))
        scaler.step(optimizer)
        scaler.update()

        count = int(lengths.sum())
        totals = torch.tensor([loss.item() * count, float(count)], dtype=torch.float64)
        if dist.world > 1:
            totals = totals.to(device)
            tdist.all_reduce(totals)
            totals = totals.cpu()
        step_loss = float(totals[0] / totals[1])
        losses.append(step_loss)
        elapsed = time.perf_counter() - tick
        session_tokens += int(totals[1])
        session_time += elapsed
        smooth = step_loss if smooth is None else 0.9 * smooth + 0.1 * step_loss
        step_rate = totals[1].item() / max(elapsed, 1e-9)
        rate = step_rate if rate is None else 0.9 * rate + 0.1 * step_rate
        if bar is not None:
            bar.set_postfix_str(f"loss {smooth:.3f}, {rate:,.0f} tok/s", refresh=False)
            bar.update(1)
        if config.checkpoint_every > 0 and step % config.checkpoint_every == 0:
            _save(
                out, dist, device, step, model, optimizer, scaler, losses, settings,
                spec, spec_source, vocab, text, description, config,
            )  # fmt: skip
            last_saved = step
            say(f"step {step}: loss {smooth:.4f}, saved {out / CHECKPOINT}")
    if bar is not None:
        bar.close()
    if step != last_saved and step > start:
        _save(
            out, dist, device, step, model, optimizer, scaler, losses, settings,
            spec, spec_source, vocab, text, description, config,
        )  # fmt: skip

    val_loss = _on_rank0(
        dist,
        lambda: evaluate(
            model, spec, val_set, settings["batch_size"], device, amp_dtype
        ),
    )
    val_ppl = math.exp(min(val_loss, 700.0))
    tokens_per_s = session_tokens / session_time if session_time else 0.0

    def finish() -> None:
        if step > start:
            n = min(10, step - start)
            first, last = _mean(losses[start : start + n]), _mean(losses[-n:])
            say(
                f"steps {start + 1}-{step}: train loss {first:.4f} (mean of the first "
                f"{n}) -> {last:.4f} (of the last {n}), {tokens_per_s:,.0f} tokens/s, "
                f"{session_time:.1f} s"
            )
        say(
            f"validation: loss {val_loss:.4f}, perplexity {val_ppl:.2f} "
            f"({val_set.tokens():,} tokens)"
        )
        metrics = {
            "model": spec.name,
            "data": description,
            "steps": step,
            "vocab": len(vocab),
            "train_loss": losses[-1] if losses else None,
            "val_loss": val_loss,
            "val_perplexity": val_ppl,
            "tokens_per_s": tokens_per_s,
            "world_size": dist.world,
            "losses": losses,
        }
        metrics_json = json.dumps(metrics, indent=1) + "\n"
        _write_run_file(out / METRICS, _text_writer(metrics_json))
        wrote = [CHECKPOINT, VOCAB, SPEC, METRICS]
        try:
            if config.plot and plot_losses(out / PLOT, losses, val_loss, spec.name):
                wrote.append(PLOT)
        except OSError as exc:
            reason = exc.strerror or exc
            raise TrainError(f"cannot write {out / PLOT}: {reason}") from None
        say(f"wrote {', '.join(str(out / name) for name in wrote)}")

    _on_rank0(dist, finish)  # every rank waits for rank 0's files
    if dist.world > 1:
        tdist.barrier()  # no rank leaves the group while another still talks in it
    return TrainResult(
        out, spec, vocab, model, start, step, losses, val_loss, val_ppl,
        tokens_per_s, notes,
    )  # fmt: skip


def _batches(
    sampler: BucketBatchSampler, dataset: TextDataset, step: int
) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    """Batches from global step `step` on: epoch after epoch, the same on resume."""
    per_epoch = len(sampler)
    if per_epoch == 0:
        raise TrainError("not enough training data for one batch per process")
    epoch, skip = divmod(step, per_epoch)
    while True:
        sampler.set_epoch(epoch)
        for indices in itertools.islice(sampler, skip, None):
            yield dataset.collate(indices)
        epoch, skip = epoch + 1, 0


@torch.no_grad()
def evaluate(
    model: nn.Module,
    spec: ModelSpec,
    dataset: TextDataset,
    batch_size: int,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
) -> float:
    """Mean cross-entropy (nats per token) of `model` over `dataset`."""
    was_training = model.training
    model.eval()
    sampler = BucketBatchSampler(
        dataset.lengths, batch_size, shuffle=False, num_replicas=1, rank=0
    )
    total, count = 0.0, 0
    context = (
        torch.autocast(device.type, dtype=amp_dtype)
        if amp_dtype is not None
        else contextlib.nullcontext()
    )
    for indices in sampler:
        x, y, lengths = dataset.collate(indices)
        with context:
            logits, _ = _forward(model, spec, x.to(device), lengths)
        total += F.cross_entropy(
            logits.float().flatten(0, 1),
            y.to(device).flatten(),
            ignore_index=IGNORE,
            reduction="sum",
        ).item()
        count += int(lengths.sum())
    model.train(was_training)
    return total / count


def _threads_note() -> str:
    threads = torch.get_num_threads()
    return f", {threads} thread{'s' if threads != 1 else ''}"


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


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


def _write(message: str, bar) -> None:
    if bar is not None:
        bar.write(message)
    else:
        print(message, flush=True)


# -- the run directory ----------------------------------------------------------------


class RunLock:
    """An exclusive lock on a run directory OUT, held by one run from start to end.

    Two runs writing one OUT would interleave their files, so the second is refused.
    `fcntl.flock` on OUT/.lock: the kernel releases it when the holder exits, however
    it exits, so a killed run never leaves OUT locked. The holder writes its pid
    into the file, for the refusal message. On release the file is removed (under the
    lock; `acquire` retries when the file it locked was removed meanwhile), and so
    are the directories the lock created, when the run left them empty.
    """

    def __init__(self, out: Path) -> None:
        self.out = out
        self.path = out / LOCK
        self._fd: int | None = None
        self._created: list[Path] = []  # directories made for the lock, deepest first

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def acquire(self) -> None:
        """Lock OUT (creating it), or raise TrainError naming the run that holds it."""
        if self.out.exists() and not self.out.is_dir():
            raise TrainError(f"--out {self.out} is a file, not a directory")
        if fcntl is None:
            return
        missing = [d for d in (self.out, *self.out.parents) if not d.exists()]
        while True:
            try:
                self.out.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:  # OUT removed by a run ending just now: again
                continue
            except OSError as exc:
                reason = exc.strerror or exc
                raise TrainError(f"cannot lock {self.out}: {reason}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_pid(fd)
                os.close(fd)
                by = f" (pid {holder})" if holder else ""
                raise TrainError(
                    f"{self.out} is in use by another training run{by}; wait for "
                    "it to end, or pass another --out"
                ) from None
            except OSError as exc:  # a file system without locks (some NFS, FUSE)
                os.close(fd)
                print(
                    f"note: cannot lock {self.out} ({exc.strerror}); nothing stops "
                    "another run from writing into it meanwhile",
                    file=sys.stderr,
                )
                return
            if _same_file(fd, self.path):
                break
            os.close(fd)  # locked a file its holder removed on release: again
        self._fd, self._created = fd, missing
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = None
        for directory in self._created:  # only while the run left them empty
            try:
                directory.rmdir()
            except OSError:
                break
        self._created = []


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


def _same_file(fd: int, path: Path) -> bool:
    try:
        there = os.stat(path)
    except FileNotFoundError:
        return False
    here = os.fstat(fd)
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _write_atomic(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write `path` by `write(file)` into a temporary file beside it and a rename.

    The temporary name is unique and the data reaches the disk (fsync) before the
    rename, and the rename before return (fsync of the directory, where the system
    allows it): a reader, or a crash, sees the old file or the new one, never half
    of one. The file gets the usual permissions (a temporary one is owner-only).
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # Windows opens no directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_run_file(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """`_write_atomic`, an OS error (disk full, no permission) a TrainError."""
    try:
        _write_atomic(path, write)
    except OSError as exc:
        raise TrainError(f"cannot write {path}: {exc.strerror or exc}") from None


def _text_writer(text: str) -> Callable[[IO[bytes]], None]:
    return lambda handle: handle.write(text.encode("utf-8"))


def _remove_temporaries(out: Path) -> None:
    """Temporary files of runs killed mid-write (call only holding OUT's lock)."""
    for name in RUN_FILES:
        for path in out.glob(f".{name}.*.tmp"):
            path.unlink(missing_ok=True)


# -- checkpoints ----------------------------------------------------------------------


def _save(
    out: Path,
    dist: Distributed,
    device: torch.device,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    losses: list[float],
    settings: dict[str, Any],
    spec: ModelSpec,
    spec_source: str,
    vocab: Vocab,
    text: str,
    description: str,
    config: TrainConfig,
) -> None:
    """Write OUT/checkpoint.pt (rank 0; every rank's RNG state gathered into it)."""
    rng = [_rng_state(device)]
    if dist.world > 1:
        import torch.distributed as tdist

        rng = [None] * dist.world
        tdist.all_gather_object(rng, _rng_state(device))
    payload = {
        "format": "rnnspec-train/1",
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": [_to_cpu(state) for state in rng],
        "losses": list(losses),
        "settings": dict(settings),
        "spec": spec.model_dump(),
        "spec_text": spec.to_source(),
        "spec_source": spec_source,
        "spec_path": config.spec,
        "vocab": vocab.to_json(),
        "data": description,
        "data_sha256": _sha256(text),
        "world_size": dist.world,
    }
    _on_rank0(  # a failed write stops every rank
        dist,
        lambda: _write_run_file(
            out / CHECKPOINT, lambda handle: torch.save(payload, handle)
        ),
    )


def _to_cpu(state: dict[str, Any]) -> dict[str, Any]:
    return {k: v.cpu() if isinstance(v, Tensor) else v for k, v in state.items()}


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """torch.save via a unique temporary file, fsync and a rename: never half a
    checkpoint, even for a reader that loads it meanwhile."""
    _write_atomic(Path(path), lambda handle: torch.save(payload, handle))


#: What a checkpoint needs to be sampled from, and to be resumed.
SAMPLE_KEYS = {"spec": dict, "model": dict, "vocab": dict}
RESUME_KEYS = {
    **SAMPLE_KEYS,
    "step": int,
    "optimizer": dict,
    "scaler": dict,
    "rng": list,
    "losses": list,
    "settings": dict,
    "data": str,
    "data_sha256": str,
}


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by `train` (a file, or a run directory holding one).

    Loaded with `weights_only=True`: tensors and plain data only, so a checkpoint
    cannot run code. Anything else is refused with one line saying why. The dict
    gets `path`: the file it was read from, named by later errors about it.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    try:
        handle = open(path, "rb")  # noqa: SIM115 (closed below)
    except FileNotFoundError:
        raise TrainError(f"no checkpoint at {path}") from None
    except OSError as exc:
        reason = exc.strerror or exc
        raise TrainError(f"cannot read checkpoint {path}: {reason}") from None
    try:
        with handle, warnings.catch_warnings():  # torch warns about odd pickles
            warnings.simplefilter("ignore")
            payload = torch.load(handle, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" not in str(exc):  # not a refused class: garbage
            raise _not_a_checkpoint(path) from None
        raise TrainError(
            f"{path} holds Python objects besides tensors and plain data, which a "
            "checkpoint of `rnnspec train` does not; it is not loaded, since loading "
            "such objects can run code"
        ) from None
    except Exception:  # zip reader, pickle, read errors: truncated or another format
        raise _not_a_checkpoint(path) from None
    if not isinstance(payload, dict) or payload.get("format") != "rnnspec-train/1":
        raise TrainError(f"{path} is not a checkpoint written by `rnnspec train`")
    payload["path"] = str(path)
    _check_keys(payload, SAMPLE_KEYS)
    return payload


def _not_a_checkpoint(path: Path) -> TrainError:
    return TrainError(
        f"{path} is not a checkpoint written by `rnnspec train` (not a complete torch "
        "file: truncated, or another format)"
    )


def _damaged(checkpoint: dict[str, Any], problem: str) -> TrainError:
    where = checkpoint.get("path", "the checkpoint")
    return TrainError(f"{where} is damaged: {problem}")


def _check_keys(checkpoint: dict[str, Any], keys: dict[str, type]) -> None:
    missing = [key for key in keys if key not in checkpoint]
    if missing:
        raise _damaged(checkpoint, f"it lacks {', '.join(missing)}")
    for key, kind in keys.items():
        value = checkpoint[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            expected = _KIND_NAMES.get(kind, kind.__name__)
            raise _damaged(
                checkpoint,
                f"expected {key} to be {expected}, got {type(value).__name__}",
            )


_KIND_NAMES = {dict: "a dict", int: "an integer", list: "a list", str: "a string"}


def _check_resumable(checkpoint: dict[str, Any]) -> None:
    """Raise TrainError unless `checkpoint` has everything `--resume` reads."""
    _check_keys(checkpoint, RESUME_KEYS)
    _checkpoint_spec(checkpoint)
    step, losses = checkpoint["step"], checkpoint["losses"]
    if step < 1 or len(losses) != step:
        raise _damaged(
            checkpoint, f"step {step} with {len(losses)} losses (expected one a step)"
        )
    if not all(isinstance(x, float) for x in losses):
        raise _damaged(checkpoint, "its losses are not all numbers")
    if not checkpoint["rng"] or not all(isinstance(s, dict) for s in checkpoint["rng"]):
        raise _damaged(checkpoint, "its RNG states are not a list of dicts")
    settings = checkpoint["settings"]
    missing = [name for name in RUN_DEFAULTS if name not in settings]
    if missing:
        raise _damaged(checkpoint, f"its settings lack {', '.join(missing)}")
    for name in RUN_DEFAULTS:
        problem = _setting_problem(name, settings[name])
        if problem or (name == "model" and not isinstance(settings[name], str)):
            raise _damaged(checkpoint, f"setting {name} is {settings[name]!r}")


def _load_weights(checkpoint: dict[str, Any], model: nn.Module) -> None:
    """`model.load_state_dict(checkpoint["model"])`; a mismatch said in one line."""
    state, expected = checkpoint["model"], model.state_dict()
    missing = [name for name in expected if name not in state]
    unexpected = [name for name in state if name not in expected]
    wrong = [
        name
        for name, value in state.items()
        if name in expected
        and not (isinstance(value, Tensor) and value.shape == expected[name].shape)
    ]
    problems = [
        f"{label} {', '.join(map(str, names[:3]))}{' ...' if len(names) > 3 else ''}"
        for label, names in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("wrong shape or type:", wrong),
        )
        if names
    ]
    if problems:
        raise _damaged(
            checkpoint, f"its weights do not fit its model ({'; '.join(problems)})"
        )
    _restore(checkpoint, "model state", lambda: model.load_state_dict(state))


def _restore(checkpoint: dict[str, Any], what: str, load: Callable[[], Any]) -> None:
    """`load()`, which restores `what` from the checkpoint; failure said in one line."""
    try:
        load()
    except (RuntimeError, ValueError, TypeError, KeyError, IndexError) as exc:
        text = str(exc).strip()
        reason = text.splitlines()[0] if text else type(exc).__name__
        raise _damaged(checkpoint, f"its {what} does not load: {reason}") from None


def _checkpoint_spec(checkpoint: dict[str, Any]) -> ModelSpec:
    try:
        spec = ModelSpec.model_validate(checkpoint["spec"])
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "spec"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise _damaged(
            checkpoint, f"its spec is invalid: {where}: {error['msg']}{more}"
        ) from None
    problems = _language_model_problems(spec)
    if problems:
        raise _damaged(checkpoint, f"its spec is no language model: {problems[0]}")
    return spec


def _checkpoint_vocab(checkpoint: dict[str, Any], spec: ModelSpec) -> Vocab:
    data = checkpoint["vocab"]
    tokens, mode = data.get("tokens"), data.get("mode")
    if mode not in ("char", "word"):
        raise _damaged(checkpoint, f"expected vocab mode char or word, got {mode!r}")
    if (
        not isinstance(tokens, list)
        or not tokens
        or not all(isinstance(t, str) for t in tokens)
        or len(set(tokens)) != len(tokens)
    ):
        raise _damaged(checkpoint, "its vocab tokens are not distinct strings")
    assert isinstance(spec.input, TokensInput)
    if len(tokens) > spec.input.vocab:
        raise _damaged(
            checkpoint,
            f"its vocab has {len(tokens)} tokens, its model reads {spec.input.vocab}",
        )
    return Vocab(tokens, mode)


def model_from_checkpoint(
    checkpoint: dict[str, Any], device: str | torch.device = "cpu"
) -> tuple[nn.Module, ModelSpec, Vocab]:
    """(model in eval mode, its spec, its vocabulary) of a loaded checkpoint.

    A checkpoint whose spec, vocabulary or weights do not fit raises TrainError.
    """
    from rnnspec.compile.runtime import instantiate

    _check_keys(checkpoint, SAMPLE_KEYS)
    spec = _checkpoint_spec(checkpoint)
    vocab = _checkpoint_vocab(checkpoint, spec)
    model = instantiate(spec)
    _load_weights(checkpoint, model)
    return model.to(device).eval(), spec, vocab


# -- sampling -------------------------------------------------------------------------


@torch.no_grad()
def generate(
    model: nn.Module,
    spec: ModelSpec,
    prompt: Sequence[int],
    length: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    context: int = 256,
    vocab_size: int | None = None,
) -> list[int]:
    """`length` token ids following `prompt` (at least one id).

    Models without attention carry their recurrent state from step to step; with
    attention, each step reruns the last `context` tokens (attention looks back
    over its input only). `temperature` 0 picks the most likely token, and so does
    one so small that the scaled scores overflow (the limit as it goes to 0). Only
    ids below `vocab_size` are drawn (a built model's VOCAB may exceed the data's).
    A model whose scores are NaN or infinite (diverged weights) raises TrainError.
    """
    if not prompt:
        raise ValueError("generate needs a prompt of at least one token")
    if not 0 <= temperature < math.inf:
        raise ValueError(
            f"expected temperature to be a finite number >= 0, got {temperature}"
        )
    model.eval()
    device = next(model.parameters()).device
    ids = list(prompt)
    stateful = spec.attention is None
    first = ids if stateful else ids[-context:]
    logits, state = _forward(model, spec, torch.tensor([first], device=device), None)
    generated: list[int] = []
    for i in range(length):
        scores = logits[0, -1, :vocab_size].float()  # (V,)
        token = _pick(scores, temperature, top_k, generator)
        generated.append(token)
        ids.append(token)
        if i == length - 1:
            break
        if stateful:
            x = torch.tensor([[token]], device=device)
            logits, state = _forward(model, spec, x, None, state)
        else:
            x = torch.tensor([ids[-context:]], device=device)
            logits, _ = _forward(model, spec, x, None)
    return generated


def _pick(
    logits: Tensor,
    temperature: float,
    top_k: int | None,
    generator: torch.Generator | None,
) -> int:
    if not bool(torch.isfinite(logits).all()):
        raise TrainError(
            "the model's scores are not finite (NaN or infinite): its weights have "
            "diverged; sample from an earlier checkpoint, or train with a lower --lr"
        )
    if temperature <= 0:
        return int(logits.argmax())
    scaled = logits / temperature
    if not bool(torch.isfinite(scaled).all()):  # overflow: temperature ~0, greedy
        return int(logits.argmax())
    logits = scaled
    if top_k is not None and 0 < top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, -math.inf)
    probs = torch.softmax(logits, -1).cpu()
    return int(torch.multinomial(probs, 1, generator=generator))


def start_token(vocab: Vocab) -> int:
    """The id a prompt-less sample starts from: a newline (or end-of-line)."""
    for token in ("\n", EOL):
        if token in vocab.index:
            return vocab.index[token]
    return 0


# -- the loss curve -------------------------------------------------------------------


def plot_losses(
    path: Path, losses: Sequence[float], val_loss: float | None, title: str
) -> bool:
    """Write the loss curve as a PNG (matplotlib's Agg backend); False without it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"note: matplotlib is not installed; no {path.name}", file=sys.stderr)
        return False
    steps = range(1, len(losses) + 1)
    window = max(1, len(losses) // 30)
    smooth = [_mean(losses[max(0, i - window + 1) : i + 1]) for i in range(len(losses))]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(steps, losses, color="tab:blue", alpha=0.3, linewidth=0.8, label="train")
    ax.plot(steps, smooth, color="tab:blue", label=f"train ({window}-step mean)")
    if val_loss is not None:
        ax.scatter([len(losses)], [val_loss], color="tab:red", zorder=3)
        ax.annotate(
            f"validation {val_loss:.3f}",
            (len(losses), val_loss),
            textcoords="offset points",
            xytext=(-10, 10),
            ha="right",
            color="tab:red",
        )
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(f"{title}: training loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        _write_atomic(path, lambda handle: fig.savefig(handle, format="png"))
    finally:
        plt.close(fig)
    return True


__all__ = [
    "Distributed",
    "RunLock",
    "TextDataset",
    "TrainConfig",
    "TrainError",
    "TrainResult",
    "Vocab",
    "evaluate",
    "fit_vocab",
    "generate",
    "load_checkpoint",
    "load_spec",
    "load_text",
    "model_from_checkpoint",
    "plot_losses",
    "save_checkpoint",
    "start_token",
    "stdlib_corpus",
    "token_lines",
    "train",
]
