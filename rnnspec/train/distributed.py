"""Where a process trains: its place in a torchrun launch, its device and threads.

Launched by torchrun (WORLD_SIZE > 1 in the environment), a run joins the process
group (NCCL on CUDA, gloo on CPU) unless one is initialized already; only rank 0
touches OUT, and `on_rank0` sends what it found (or its refusal) to every rank.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator
from typing import Any

import torch

from rnnspec.train.errors import TrainError


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

    @classmethod
    def current(cls) -> Distributed:
        """The initialized process group's world and rank, else torchrun's."""
        import torch.distributed as tdist

        dist = cls.from_env()
        if tdist.is_available() and tdist.is_initialized():
            dist = cls(tdist.get_world_size(), tdist.get_rank(), dist.local_rank)
        return dist


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


def on_rank0(dist: Distributed, work):
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


@contextlib.contextmanager
def process_group(dist: Distributed, device: torch.device) -> Iterator[None]:
    """Join torchrun's process group for the run, and leave it after.

    A group initialized already (by the caller) is used as it is, and left to it.
    """
    import torch.distributed as tdist

    if dist.world == 1 or tdist.is_initialized():
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    tdist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield
    finally:
        tdist.destroy_process_group()
