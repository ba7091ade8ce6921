"""Batches of sequences of similar length, shardable across processes.

`BucketBatchSampler` is a batch sampler for `torch.utils.data.DataLoader`
(`DataLoader(dataset, batch_sampler=sampler, collate_fn=...)`) or for a plain loop:
it yields lists of dataset indices whose sequences have similar lengths, so that a
padded batch wastes few steps. Each epoch it

1. shuffles the indices (seeded by `seed + epoch`: every process draws the same
   order without communicating),
2. cuts them into pools of `pool_batches * num_replicas` batches and sorts each pool
   by length (so batches stay random across the epoch but uniform within),
3. cuts each pool into batches, and groups `num_replicas` consecutive batches into a
   *step*: the batches that the replicas process together, all of similar length, so
   no process waits long for a slower one,
4. shuffles the steps, and gives replica `rank` the `rank`-th batch of every step.

Like `torch.utils.data.DistributedSampler`, every replica gets the same number of
batches: with `drop_last=False` the last step is completed by repeating the batches
sorted just before it; with `drop_last=True` an incomplete step (and a short last
batch) is dropped. Call `set_epoch(epoch)` before each epoch to reshuffle.

The module imports torch only to find the distributed rank when it is not given.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence


class BucketBatchSampler:
    """Yield batches of indices of similar-length sequences; one shard per replica.

    Args:
        lengths: the length of every sequence of the dataset (index i → lengths[i]).
        batch_size: sequences per batch (per replica).
        shuffle: reshuffle every epoch (False: batches in order of length, as for
            evaluation).
        seed: base seed; epoch e uses `seed + e`.
        pool_batches: batches per sorting pool and replica; larger pools give more
            uniform lengths and less randomness.
        drop_last: drop an incomplete last step instead of repeating batches.
        num_replicas, rank: the shard; default from `torch.distributed` when it is
            initialized, else 1 and 0.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        pool_batches: int = 50,
        drop_last: bool = False,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if pool_batches < 1:
            raise ValueError(f"pool_batches must be >= 1, got {pool_batches}")
        if num_replicas is None or rank is None:
            world, me = _distributed_rank()
            num_replicas = world if num_replicas is None else num_replicas
            rank = me if rank is None else rank
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(
                f"rank must be in 0..{num_replicas - 1}, got rank {rank} of "
                f"{num_replicas} replicas"
            )
        if not lengths:
            raise ValueError("no sequences to sample from")
        self.lengths = [int(n) for n in lengths]
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.pool_batches = pool_batches
        self.drop_last = drop_last
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffle of `epoch` (same on every replica)."""
        self.epoch = epoch

    def steps(self) -> list[list[list[int]]]:
        """This epoch's steps: each `num_replicas` batches of similar lengths."""
        order = list(range(len(self.lengths)))
        rng = random.Random(self.seed + self.epoch)
        if self.shuffle:
            rng.shuffle(order)
        pool = self.batch_size * self.pool_batches * self.num_replicas
        batches: list[list[int]] = []
        for start in range(0, len(order), pool):
            chunk = order[start : start + pool]
            # Stable sort: equal lengths keep their shuffled order.
            chunk.sort(key=self.lengths.__getitem__, reverse=True)
            batches.extend(
                chunk[i : i + self.batch_size]
                for i in range(0, len(chunk), self.batch_size)
            )
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        replicas = self.num_replicas
        incomplete = len(batches) % replicas
        if incomplete and self.drop_last:
            del batches[len(batches) - incomplete :]
        elif incomplete:
            # Complete the last step with the batches sorted just before it, whose
            # lengths are the closest (cycling when there are fewer than a step).
            before = batches[:-incomplete] or batches
            missing = replicas - incomplete
            batches.extend(before[-1 - i % len(before)] for i in range(missing))
        steps = [batches[i : i + replicas] for i in range(0, len(batches), replicas)]
        if self.shuffle:
            rng.shuffle(steps)
        return steps

    def __iter__(self) -> Iterator[list[int]]:
        for step in self.steps():
            yield step[self.rank]

    def __len__(self) -> int:
        """Batches per epoch for this replica (the same for every replica)."""
        batches, short = divmod(len(self.lengths), self.batch_size)
        if short and not self.drop_last:
            batches += 1
        if self.drop_last:
            return batches // self.num_replicas
        return -(-batches // self.num_replicas)


def _distributed_rank() -> tuple[int, int]:
    """(world size, rank) of the initialized default process group, else (1, 0)."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch is a dependency
        return 1, 0
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0
