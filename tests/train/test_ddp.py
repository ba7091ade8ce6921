"""DistributedDataParallel training: 2 CPU processes over gloo on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rnnspec.cli.train import _leave_worker
from rnnspec.train import (
    RunLock,
    TrainConfig,
    TrainError,
    load_checkpoint,
    train,
)
from rnnspec.train.rundir import LOCK

pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(),
    reason="torch.distributed with gloo is not available in this torch build",
)

SPEC = """
model Small {
    input tokens 20 embed=16 dropout=0.1
    cell lstm
    hidden 24
    dropout 0.1
    layers 2
    head logits dropout=0.1
}
"""
TEXT = "".join(
    f"{' '.join(['abc', 'de', 'fgh'][: 1 + i % 3])} {i % 10}\n" for i in range(600)
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launched(rank: int, world: int, port: int) -> None:
    """Set what torchrun sets for each process."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE=str(world),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)


def _worker(rank: int, world: int, port: int, settings: dict, results: str) -> None:
    _launched(rank, world, port)
    result = train(TrainConfig(**settings))
    torch.save(
        {
            "state": result.model.state_dict(),
            "losses": result.losses,
            "regularization": result.regularization,
        },
        Path(results) / f"rank{rank}.pt",
    )
    _leave_worker(0)  # as `rnnspec train` ends a torchrun worker: see there


def _refused_worker(
    rank: int, world: int, port: int, settings: dict, results: str
) -> None:
    _launched(rank, world, port)
    try:
        train(TrainConfig(**settings))
    except TrainError as exc:
        (Path(results) / f"rank{rank}.txt").write_text(str(exc))
    _leave_worker(0)  # as `rnnspec train` ends a torchrun worker: see there


def _join(context, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"2-process training took over {seconds} s")


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "small.rnn").write_text(SPEC)
    (tmp_path / "text.txt").write_text(TEXT)
    return {
        "spec": str(tmp_path / "small.rnn"),
        "text": str(tmp_path / "text.txt"),
        "out": str(tmp_path / "run"),
    }


def test_two_processes_train_in_step(files, tmp_path):
    settings = dict(
        spec=files["spec"],
        data=files["text"],
        out=files["out"],
        steps=30,
        seq_len=16,
        batch_size=8,
        lr=1e-2,
        warmup=0,
        checkpoint_every=15,
        progress=False,
        plot=False,
        ar=2.0,  # AR and TAR hook the model inside its DDP wrapper
        tar=1.0,
    )
    context = mp.spawn(
        _worker,
        args=(2, free_port(), settings, str(tmp_path)),
        nprocs=2,
        join=False,
    )
    _join(context, 60)

    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    assert ranks[0]["state"].keys() == ranks[1]["state"].keys()
    for name, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][name]), name
    losses = ranks[0]["losses"]
    assert losses == ranks[1]["losses"]  # all-reduced over both shards
    terms = ranks[0]["regularization"]
    assert terms == ranks[1]["regularization"] and sorted(terms) == ["ar", "tar"]
    assert all(len(v) == 30 and min(v) > 0 for v in terms.values())
    assert sum(losses[-5:]) < 0.6 * sum(losses[:5]), losses

    ckpt = load_checkpoint(files["out"])
    assert ckpt["step"] == 30 and ckpt["world_size"] == 2
    assert len(ckpt["rng"]) == 2  # each rank's own dropout stream
    assert not torch.equal(ckpt["rng"][0]["torch"], ckpt["rng"][1]["torch"])
    for name, value in ckpt["model"].items():
        assert torch.equal(value, ranks[0]["state"][name]), name
    assert not (Path(files["out"]) / LOCK).exists()  # rank 0's lock, released


def test_a_locked_out_refuses_every_rank_without_hanging(files, tmp_path):
    """Rank 0 alone takes --out's lock; its refusal reaches rank 1 too."""
    settings = dict(
        spec=files["spec"], data=files["text"], out=files["out"], steps=4,
        seq_len=16, batch_size=8, progress=False, plot=False,
    )  # fmt: skip
    results = tmp_path / "results"
    results.mkdir()
    with RunLock(Path(files["out"])):  # another run holds it
        context = mp.spawn(
            _refused_worker,
            args=(2, free_port(), settings, str(results)),
            nprocs=2,
            join=False,
        )
        _join(context, 60)
        assert [p.name for p in Path(files["out"]).iterdir()] == [LOCK]
    for rank in (0, 1):
        message = (results / f"rank{rank}.txt").read_text()
        assert f"is in use by another training run (pid {os.getpid()})" in message


def test_torchrun_launch_and_resume(files):
    """The documented launch: `torchrun --nproc_per_node=2 -m rnnspec train ...`."""
    common = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--standalone",  # rendezvous on a free local port
        "-m",
        "rnnspec",
        "train",
        files["spec"],
        "--data",
        files["text"],
        "--out",
        files["out"],
        "--batch",
        "8",
        "--seq-len",
        "16",
        "--no-progress",
        "--device",
        "cpu",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.run(
        [*common, "--steps", "6"], capture_output=True, text=True, env=env, timeout=90
    )
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.count("validation: loss") == 1  # rank 0 alone reports
    assert "x 2 processes" in first.stdout
    again = subprocess.run(  # rank 0's refusal reaches every rank: no hang
        [*common, "--steps", "8"],
        capture_output=True,
        text=True,
        env=env,
        timeout=90,
    )
    assert again.returncode != 0
    assert again.stderr.count("rnnspec train: error:") == 1  # printed by rank 0
    assert "--resume" in again.stderr
    resumed = subprocess.run(
        [*common, "--steps", "10", "--resume"],
        capture_output=True,
        text=True,
        env=env,
        timeout=90,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stdout and "steps 7-10" in resumed.stdout
    ckpt = load_checkpoint(files["out"])
    assert ckpt["step"] == 10 and ckpt["world_size"] == 2 and len(ckpt["losses"]) == 10
