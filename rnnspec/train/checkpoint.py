"""Checkpoints: written whole, loaded without running code, checked before use.

A checkpoint of `train` is a dict of tensors and plain data (`torch.save`): the
weights, the optimizer, scaler and RNG states, the losses, the run's settings, its
spec and vocabulary, and the hash of its text. `load_checkpoint` refuses anything
else in one line; `check_resumable` and `model_from_checkpoint` check that what they
read fits together, so that a damaged file never ends in a traceback.
"""

from __future__ import annotations

import pickle
import random
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from torch import Tensor, nn

from rnnspec.lang.ir import ModelSpec, TokensInput
from rnnspec.train.config import LATER_SETTINGS, RUN_DEFAULTS, setting_problem
from rnnspec.train.distributed import Distributed
from rnnspec.train.errors import TrainError
from rnnspec.train.model import language_model_problems
from rnnspec.train.rundir import CHECKPOINT, write_atomic
from rnnspec.train.text import Vocab

#: The "format" of every checkpoint `train` writes.
FORMAT = "rnnspec-train/1"


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """torch.save via a unique temporary file, fsync and a rename: never half a
    checkpoint, even for a reader that loads it meanwhile."""
    write_atomic(Path(path), lambda handle: torch.save(payload, handle))


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
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
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


def check_resumable(checkpoint: dict[str, Any]) -> None:
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
    for name, value in LATER_SETTINGS.items():
        settings.setdefault(name, value)
    missing = [name for name in RUN_DEFAULTS if name not in settings]
    if missing:
        raise _damaged(checkpoint, f"its settings lack {', '.join(missing)}")
    for name in RUN_DEFAULTS:
        problem = setting_problem(name, settings[name])
        if problem or (name == "model" and not isinstance(settings[name], str)):
            raise _damaged(checkpoint, f"setting {name} is {settings[name]!r}")
    _check_regularization(checkpoint, step)


def _check_regularization(checkpoint: dict[str, Any], step: int) -> None:
    """The AR/TAR term of every step, for each one the run has on (absent before
    AR/TAR existed: an empty dict)."""
    terms = checkpoint.setdefault("regularization", {})
    settings = checkpoint["settings"]
    expected = [name for name in ("ar", "tar") if settings[name] > 0]
    if not isinstance(terms, dict) or sorted(terms) != expected:
        raise _damaged(
            checkpoint,
            f"expected regularization terms {expected}, got "
            f"{sorted(terms) if isinstance(terms, dict) else type(terms).__name__}",
        )
    for name, values in terms.items():
        if not isinstance(values, list) or len(values) != step:
            raise _damaged(checkpoint, f"expected {step} {name} terms (one a step)")
        if not all(isinstance(x, float) for x in values):
            raise _damaged(checkpoint, f"its {name} terms are not all numbers")


def load_weights(checkpoint: dict[str, Any], model: nn.Module) -> None:
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
    restore(checkpoint, "model state", lambda: model.load_state_dict(state))


def restore(checkpoint: dict[str, Any], what: str, load: Callable[[], Any]) -> None:
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
    problems = language_model_problems(spec)
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
    load_weights(checkpoint, model)
    return model.to(device).eval(), spec, vocab


# -- random number generators ---------------------------------------------------------


def rng_state(device: torch.device) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def gathered_rng_states(
    dist: Distributed, device: torch.device
) -> list[dict[str, Any]]:
    """Every rank's RNG state, on the CPU, in rank order (a collective call)."""
    rng: list[Any] = [rng_state(device)]
    if dist.world > 1:
        import torch.distributed as tdist

        rng = [None] * dist.world
        tdist.all_gather_object(rng, rng_state(device))
    return [_to_cpu(state) for state in rng]


def _to_cpu(state: dict[str, Any]) -> dict[str, Any]:
    return {k: v.cpu() if isinstance(v, Tensor) else v for k, v in state.items()}
