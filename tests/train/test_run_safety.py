"""Issue 11, items 5 and 17: `train` runs cannot corrupt each other; bad numbers and
damaged checkpoints give one line, never a traceback, and write nothing."""

from __future__ import annotations

import errno
import math
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from rnnspec.cli import main
from rnnspec.train import (
    RunLock,
    TrainConfig,
    TrainError,
    generate,
    load_checkpoint,
    save_checkpoint,
    train,
)
from rnnspec.train.rundir import LOCK

SPEC = """
model Tiny {
    input tokens 20 embed=8
    cell gru
    hidden 8
    head logits
}
"""
TEXT = "".join(
    " ".join(["alpha", "beta", "gamma"][(i + k) % 3] for k in range(1 + i % 4)) + "\n"
    for i in range(200)
)
SMALL = ["--batch", "4", "--seq-len", "16", "--no-progress"]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "tiny.rnn").write_text(SPEC)
    (tmp_path / "text.txt").write_text(TEXT)
    return {
        "spec": str(tmp_path / "tiny.rnn"),
        "text": str(tmp_path / "text.txt"),
        "out": str(tmp_path / "run"),
    }


def train_args(files: dict[str, str], *extra: str, plot: bool = False) -> list[str]:
    command = ["train", files["spec"], "--data", files["text"], "--out", files["out"]]
    return command + SMALL + ([] if plot else ["--no-plot"]) + list(extra)


def snapshot(directory: str | Path) -> dict[str, bytes]:
    """Every file of `directory` (hidden ones too) by name: proves nothing changed."""
    directory = Path(directory)
    if not directory.exists():
        return {}
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def one_error_line(err: str, command: str) -> str:
    """`err`, which must be one `rnnspec COMMAND: error: ...` line (no traceback,
    no warning, no advice to load with weights_only=False)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"rnnspec {command}: error:"), err
    assert "weights_only" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished 4-step run, copied by tests that damage its checkpoint."""
    root = tmp_path_factory.mktemp("trained")
    (root / "tiny.rnn").write_text(SPEC)
    (root / "text.txt").write_text(TEXT)
    files = {"spec": str(root / "tiny.rnn"), "text": str(root / "text.txt")}
    files["out"] = str(root / "run")
    assert main(train_args(files, "--steps", "4")) == 0
    return root / "run"


# -- item 5: one run per --out, files replaced whole ----------------------------------


def _start_trainer(files: dict[str, str]) -> subprocess.Popen:
    """`rnnspec train` in another process, long enough to be caught mid-run."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "rnnspec", *train_args(files, "--steps", "100000")]
    command += ["--threads", "1", "--checkpoint-every", "0"]
    return subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def _wait_until_training(process: subprocess.Popen, out: Path) -> None:
    deadline = time.monotonic() + 60
    while not ((out / LOCK).is_file() and (out / "spec.rnn").is_file()):
        if process.poll() is not None:
            pytest.fail(f"trainer exited: {process.stderr.read().decode()}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("the trainer did not start within 60 s")
        time.sleep(0.05)


def test_a_second_trainer_in_a_running_out_exits_1_and_writes_nothing(files, capsys):
    out = Path(files["out"])
    first = _start_trainer(files)
    try:
        _wait_until_training(first, out)
        assert (out / LOCK).read_text().strip() == str(first.pid)
        before = snapshot(out)
        for mode in ([], ["--force"], ["--resume"]):
            assert main(train_args(files, "--steps", "3", *mode)) == 1, mode
            line = one_error_line(capsys.readouterr().err, "train")
            assert f"{out} is in use by another training run (pid {first.pid})" in line
            assert snapshot(out) == before, mode  # nothing removed, nothing written
        assert first.poll() is None  # the first run goes on
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # A killed run leaves a .lock file but no lock: the kernel released it.
    assert (out / LOCK).exists()
    assert main(train_args(files, "--steps", "2", "--force")) == 0
    assert load_checkpoint(out)["step"] == 2
    assert not (out / LOCK).exists()  # removed by a run that ends


def test_the_lock_is_exclusive_and_left_behind_by_no_run(files, tmp_path):
    out = tmp_path / "a" / "b"
    with RunLock(out):
        assert (out / LOCK).read_text() == f"{os.getpid()}\n"
        with pytest.raises(TrainError, match=rf"pid {os.getpid()}\)"):
            RunLock(out).acquire()
    assert not (tmp_path / "a").exists()  # the directories it made, left empty
    # A refused run takes the lock and leaves neither it nor --out behind.
    assert main(train_args({**files, "out": str(out)}, "--resume")) == 1
    assert not (tmp_path / "a").exists()
    out.mkdir(parents=True)
    with RunLock(out):
        pass
    assert out.is_dir() and not any(out.iterdir())  # kept: it was there before


def test_a_full_disk_is_one_line_and_leaves_no_temporary_file(
    files, monkeypatch, capsys
):
    def full(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full)
    assert main(train_args(files, "--steps", "2")) == 1
    line = one_error_line(capsys.readouterr().err, "train")
    out = Path(files["out"])
    assert f"cannot write {out / 'checkpoint.pt'}: No space left on device" in line
    assert sorted(p.name for p in out.iterdir()) == ["spec.rnn", "vocab.json"]


def test_a_file_system_without_locks_trains_with_a_note(files, monkeypatch, capsys):
    fcntl = pytest.importorskip("fcntl")

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    assert main(train_args(files, "--steps", "2")) == 0
    err = capsys.readouterr().err
    assert f"note: cannot lock {files['out']} (No locks available)" in err


def test_concurrent_checkpoint_writes_never_collide_or_tear(tmp_path):
    path = tmp_path / "checkpoint.pt"
    payloads = [{"format": "rnnspec-train/1", "w": torch.full((50_000,), float(i))}
                for i in range(2)]  # fmt: skip
    save_checkpoint(path, payloads[0])
    errors: list[BaseException] = []

    def write(payload) -> None:
        try:
            for _ in range(40):
                save_checkpoint(path, payload)
        except BaseException as exc:  # noqa: BLE001 - collected for the assert
            errors.append(exc)

    def read() -> None:
        try:
            for _ in range(80):
                values = torch.load(path, weights_only=True)["w"].unique()
                assert values.numel() == 1  # one writer's tensor, whole
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(p,)) for p in payloads]
    threads.append(threading.Thread(target=read))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temp files


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_every_run_file_is_synced_then_renamed_into_place(files, monkeypatch):
    out = Path(files["out"])
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.path.realpath(src)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    assert main(train_args(files, "--steps", "2", plot=True)) == 0
    monkeypatch.undo()
    names = ["vocab.json", "spec.rnn", "checkpoint.pt", "metrics.json", "loss.png"]
    replaced = [path for kind, path in events if kind == "replace"]
    for name in names:
        temps = [p for p in replaced if Path(p).name.startswith(f".{name}.")]
        assert len(temps) == 1, (name, replaced)
        at = events.index(("replace", temps[0]))
        assert ("fsync", temps[0]) in events[:at], name  # data on disk first
        assert ("fsync", str(out.resolve())) in events[at:], name  # then the rename
    assert sorted(p.name for p in out.iterdir()) == sorted(names)


def test_run_files_are_replaced_not_rewritten_in_place(files, tmp_path):
    """A reader holding the old file (here: a hard link) never sees a half-new one."""
    out = Path(files["out"])
    assert main(train_args(files, "--steps", "2", plot=True)) == 0
    links = tmp_path / "links"
    links.mkdir()
    old = {}
    for path in out.iterdir():
        os.link(path, links / path.name)
        old[path.name] = path.read_bytes()
    (out / ".checkpoint.pt.x1y2.tmp").write_bytes(b"left by a killed run")
    assert main(train_args(files, "--steps", "3", "--resume", plot=True)) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(old)  # temp file gone
    for name, content in old.items():
        assert (links / name).read_bytes() == content, name
        assert os.stat(links / name).st_ino != os.stat(out / name).st_ino, name


# -- item 17: numbers checked before anything is written ------------------------------


@pytest.mark.parametrize(
    "flag, value, expected",
    [
        ("--lr", "nan", "a finite number > 0"),
        ("--lr", "-1", "a finite number > 0"),
        ("--lr", "0", "a finite number > 0"),
        ("--lr", "inf", "a finite number > 0"),
        ("--weight-decay", "-5", "a finite number >= 0"),
        ("--weight-decay", "nan", "a finite number >= 0"),
        ("--clip", "nan", "a finite number >= 0"),
        ("--clip", "inf", "a finite number >= 0"),
        ("--clip", "-1", "a finite number >= 0"),
        ("--steps", "0", "an integer >= 1"),
        ("--steps", "-3", "an integer >= 1"),
        ("--steps", "1.5", "an integer >= 1"),
        ("--batch", "0", "an integer >= 1"),
        ("--seq-len", "-1", "an integer >= 1"),
        ("--warmup", "-1", "an integer >= 0"),
        ("--seed", "-1", "an integer in 0..9223372036854775807"),
        ("--seed", str(2**64), "an integer in 0..9223372036854775807"),
        ("--val-fraction", "nan", "a number in (0, 1)"),
        ("--val-fraction", "1", "a number in (0, 1)"),
        ("--val-fraction", "0", "a number in (0, 1)"),
        ("--threads", "0", "an integer >= 1"),
        ("--checkpoint-every", "-1", "an integer >= 0"),
    ],
)
def test_train_rejects_bad_numbers_in_argument_parsing(
    files, capsys, flag, value, expected
):
    with pytest.raises(SystemExit) as exit_info:
        main(train_args(files, flag, value))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"error: argument {flag}: expected {expected}, got '{value}'" in err
    assert "Traceback" not in err
    assert not Path(files["out"]).exists()


@pytest.mark.parametrize(
    "field, value",
    [
        ("lr", math.nan),
        ("lr", -1.0),
        ("weight_decay", -5.0),
        ("clip", math.nan),
        ("clip", math.inf),
        ("steps", 0),
        ("batch_size", 0),
        ("seq_len", -2),
        ("warmup", -1),
        ("seed", -1),
        ("val_fraction", math.nan),
        ("checkpoint_every", -1),
        ("threads", 0),
        ("steps", True),
        ("lr", "0.1"),
    ],
)
def test_train_config_rejects_bad_numbers_before_writing(files, field, value):
    config = TrainConfig(
        spec=files["spec"], data=files["text"], out=files["out"], steps=2,
        batch_size=4, seq_len=16, progress=False, plot=False,
    )  # fmt: skip
    setattr(config, field, value)
    with pytest.raises(TrainError, match=rf"^expected {field} to be .*, got "):
        train(config)
    assert not Path(files["out"]).exists()


def test_sample_temperature_is_checked_and_tiny_ones_are_greedy(trained, capsys):
    for value in ("nan", "-1", "inf", "-inf"):
        with pytest.raises(SystemExit) as exit_info:
            main(["sample", str(trained), f"--temperature={value}"])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert "argument --temperature: expected a finite number >= 0" in err
    outputs = {}
    for value in ("0", "1e-30", "1e-45", "5e-324"):
        args = ["sample", str(trained), "--length", "30", "--temperature", value]
        assert main(args) == 0
        captured = capsys.readouterr()
        assert captured.err == "", captured.err
        outputs[value] = captured.out
    assert len(set(outputs.values())) == 1, outputs  # all greedy
    assert main(["sample", str(trained), "--length", "30", "--temperature", "1"]) == 0
    assert capsys.readouterr().out != outputs["0"]  # while 1 samples


def test_generate_refuses_nan_temperature_and_diverged_models(trained):
    checkpoint = load_checkpoint(trained)
    from rnnspec.train import model_from_checkpoint

    model, spec, _ = model_from_checkpoint(checkpoint)
    with pytest.raises(ValueError, match="expected temperature to be a finite"):
        generate(model, spec, [0], 3, temperature=math.nan)
    with torch.no_grad():
        model.head.bias.fill_(math.nan)
    with pytest.raises(TrainError, match="scores are not finite"):
        generate(model, spec, [0], 3)


def test_sample_of_a_diverged_model_is_one_line(trained, tmp_path, capsys):
    checkpoint = load_checkpoint(trained)
    checkpoint["model"] = {k: v * math.nan for k, v in checkpoint["model"].items()}
    save_checkpoint(tmp_path / "nan.pt", checkpoint)
    assert main(["sample", str(tmp_path / "nan.pt"), "--length", "5"]) == 1
    line = one_error_line(capsys.readouterr().err, "sample")
    assert "scores are not finite (NaN or infinite)" in line


# -- item 17: damaged checkpoints -----------------------------------------------------


class Unexpected:
    """Pickled by reference: a weights-only load refuses it."""


def _damage(checkpoint: dict, case: str) -> dict | bytes:
    """The checkpoint (or raw bytes) of each damaged case."""
    ck = dict(checkpoint)
    ck.pop("path", None)
    model = dict(ck["model"])
    first = next(iter(model))
    changes = {
        "missing spec": lambda: ck.pop("spec"),
        "missing model": lambda: ck.pop("model"),
        "spec not a dict": lambda: ck.update(spec="model Tiny {}"),
        "invalid spec": lambda: ck.update(spec={**ck["spec"], "hidden": -3}),
        "not a language model": lambda: ck.update(spec={**ck["spec"], "head": None}),
        "wrong shape": lambda: ck.update(model={**model, first: model[first][:1]}),
        "missing weight": lambda: ck.update(
            model={k: model[k] for k in model if k != first}
        ),  # noqa: E501
        "extra weight": lambda: ck.update(model={**model, "junk": torch.ones(1)}),
        "weight not a tensor": lambda: ck.update(model={**model, first: [1.0]}),
        "vocab mode": lambda: ck.update(vocab={**ck["vocab"], "mode": "byte"}),
        "vocab duplicates": lambda: ck.update(
            vocab={"mode": "char", "tokens": ["a"] * 2}
        ),  # noqa: E501
        "vocab not strings": lambda: ck.update(
            vocab={"mode": "char", "tokens": [1, 2]}
        ),
        "vocab too large": lambda: ck.update(
            vocab={"mode": "char", "tokens": [chr(65 + i) for i in range(40)]}
        ),
        "python object": lambda: ck.update(extra=Unexpected()),
        "not a dict": lambda: None,
    }
    changes[case]()
    return [1, 2] if case == "not a dict" else ck


SAMPLE_CASES = {
    "missing spec": "is damaged: it lacks spec",
    "missing model": "is damaged: it lacks model",
    "spec not a dict": "is damaged: expected spec to be a dict, got str",
    "invalid spec": "is damaged: its spec is invalid: hidden: Input should be greater",
    "not a language model": "is damaged: its spec is no language model: its head is",
    "wrong shape": "is damaged: its weights do not fit its model (wrong shape or type:",
    "missing weight": "is damaged: its weights do not fit its model (missing ",
    "extra weight": "is damaged: its weights do not fit its model (unexpected junk)",
    "weight not a tensor": "its weights do not fit its model (wrong shape or type:",
    "vocab mode": "is damaged: expected vocab mode char or word, got 'byte'",
    "vocab duplicates": "is damaged: its vocab tokens are not distinct strings",
    "vocab not strings": "is damaged: its vocab tokens are not distinct strings",
    "vocab too large": "is damaged: its vocab has 40 tokens, its model reads 11",
    "python object": "holds Python objects besides tensors and plain data",
    "not a dict": "is not a checkpoint written by `rnnspec train`",
}
RAW_CASES = {
    "text": lambda data: b"hello, not a checkpoint\n",
    "other text": lambda data: b"not a checkpoint",  # torch: a refused pickle
    "a plain pickle": lambda data: pickle.dumps({"format": "rnnspec-train/1"}, 4),
    "empty": lambda data: b"",
    "truncated": lambda data: data[: len(data) // 2],
    "one byte short": lambda data: data[:-1],
}
NOT_TORCH = "is not a checkpoint written by `rnnspec train` (not a complete torch file"


def _write_case(trained: Path, directory: Path, case: str) -> Path:
    """A copy of the trained run whose checkpoint is damaged as `case` says."""
    directory.mkdir()
    for path in trained.iterdir():
        (directory / path.name).write_bytes(path.read_bytes())
    target = directory / "checkpoint.pt"
    if case in RAW_CASES:
        target.write_bytes(RAW_CASES[case](target.read_bytes()))
    else:
        torch.save(_damage(load_checkpoint(trained), case), target)
    return directory


@pytest.mark.parametrize("case", [*SAMPLE_CASES, *RAW_CASES])
def test_sample_of_a_damaged_checkpoint_is_one_line(trained, tmp_path, case, capsys):
    run = _write_case(trained, tmp_path / "run", case)
    assert main(["sample", str(run), "--length", "5"]) == 1
    captured = capsys.readouterr()
    line = one_error_line(captured.err, "sample")
    assert str(run / "checkpoint.pt") in line
    assert SAMPLE_CASES.get(case, NOT_TORCH) in line
    assert captured.out == ""


RESUME_CASES = {
    **SAMPLE_CASES,
    "missing optimizer": "is damaged: it lacks optimizer",
    "bad optimizer": "is damaged: its optimizer does not load: ",
    "bad rng": "is damaged: its RNG state does not load: ",
    "rng not dicts": "is damaged: its RNG states are not a list of dicts",
    "bad settings": "is damaged: setting lr is nan",
    "missing setting": "is damaged: its settings lack seq_len",
    "losses not per step": "is damaged: step 4 with 2 losses",
    "step not an int": "is damaged: expected step to be an integer, got float",
}
RESUME_ONLY = {
    "missing optimizer": lambda ck: ck.pop("optimizer"),
    "bad optimizer": lambda ck: ck.update(optimizer={"state": {}, "param_groups": []}),
    "bad rng": lambda ck: ck.update(
        rng=[{"torch": torch.zeros(3, dtype=torch.uint8), "python": (3, (), None)}]
    ),
    "rng not dicts": lambda ck: ck.update(rng=[1]),
    "bad settings": lambda ck: ck.update(settings={**ck["settings"], "lr": math.nan}),
    "missing setting": lambda ck: ck["settings"].pop("seq_len"),
    "losses not per step": lambda ck: ck.update(losses=ck["losses"][:2]),
    "step not an int": lambda ck: ck.update(step=4.0),
}
# Resume rebuilds the vocabulary from the data (checked by its sha256): the saved
# one is not read, so a damaged one does not stop it.
VOCAB_CASES = ("vocab mode", "vocab duplicates", "vocab not strings", "vocab too large")


@pytest.mark.parametrize(
    "case", [c for c in RESUME_CASES if c not in VOCAB_CASES] + list(RAW_CASES)
)
def test_resume_from_a_damaged_checkpoint_is_one_line_and_writes_nothing(
    trained, files, tmp_path, case, capsys
):
    if case in RESUME_ONLY:
        run = tmp_path / "run"
        _write_case(trained, run, "not a dict")  # replaced below
        checkpoint = load_checkpoint(trained)
        checkpoint.pop("path")
        checkpoint["settings"] = dict(checkpoint["settings"])
        RESUME_ONLY[case](checkpoint)
        torch.save(checkpoint, run / "checkpoint.pt")
    else:
        run = _write_case(trained, tmp_path / "run", case)
    before = snapshot(run)
    code = main(train_args({**files, "out": str(run)}, "--steps", "6", "--resume"))
    assert code == 1
    line = one_error_line(capsys.readouterr().err, "train")
    assert RESUME_CASES.get(case, NOT_TORCH) in line
    assert snapshot(run) == before


def test_resume_ignores_the_saved_vocab_it_rebuilds(trained, files, tmp_path):
    run = _write_case(trained, tmp_path / "run", "vocab duplicates")
    assert main(train_args({**files, "out": str(run)}, "--steps", "5", "--resume")) == 0
    assert load_checkpoint(run)["vocab"] == load_checkpoint(trained)["vocab"]
