"""Deterministic, resumable, rank-sharded infinite sampling.

The global sample stream is the concatenation of per-epoch permutations of ``range(len(dataset))``; epoch
``e``'s permutation depends only on ``(seed, e)``. Global step ``t`` (0-based) consumes the stream positions
``[t * G, (t + 1) * G)`` where ``G`` is the global batch; rank ``r`` of ``W`` takes the ``r``-th contiguous
chunk of ``G / W`` of them. Consequences:

* the union of the ranks' batches at step ``t`` is the same set of images whatever ``W`` is (so 1 process
  and 2 processes see the same global batch);
* the position in the stream is a pure function of the number of steps taken, so a checkpoint stores the
  consumed position (``t * G`` for a constant batch) and resuming starts the sampler there -- no DataLoader
  prefetch state needs saving, with or without workers (prefetched-but-unused batches are simply re-made).

Each item the sampler yields is ``(index, sample_seed)``; :class:`SeededDataset` seeds python / numpy / torch
with ``sample_seed`` around ``dataset[index]`` and computes it on one intra-op thread (as a DataLoader
worker does), so random augmentations (crops, flips, scale jitter) are bit-for-bit a function of the stream
position only -- not of which process ran them (``num_workers`` 0 or more), of the caller's thread count,
nor of whether the run was resumed.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

_SEED_MASK = (1 << 63) - 1


def sample_seed(seed: int, position: int) -> int:
    """Seed of the augmentation of the sample at global stream ``position`` (63-bit, well mixed)."""
    return int(
        np.random.SeedSequence([seed & 0xFFFFFFFF, position]).generate_state(2, dtype=np.uint64)[0]
    ) & (_SEED_MASK)


class InfiniteShardedSampler(Sampler[tuple[int, int]]):
    """Endless, deterministic, rank-sharded sampler that can start at any iteration.

    Args:
        dataset_size: number of images in the data set.
        global_batch: images per optimiser step over all processes.
        rank, world_size: this process's shard.
        seed: base seed of the per-epoch permutations and per-sample seeds.
        shuffle: if False the stream is ``0, 1, ..., N-1, 0, 1, ...``.
        start_position: global stream position (samples consumed by all processes so far) of the first
            step to produce; ``iteration * global_batch`` for an unchanged batch size (``resume``).
    """

    def __init__(
        self,
        dataset_size: int,
        global_batch: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        start_position: int = 0,
    ) -> None:
        if dataset_size <= 0:
            raise ValueError("cannot sample from an empty data set")
        if global_batch % world_size != 0:
            raise ValueError(f"global batch {global_batch} not divisible by world size {world_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world size {world_size}")
        self.dataset_size = dataset_size
        self.global_batch = global_batch
        self.local_batch = global_batch // world_size
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.shuffle = shuffle
        self.start_position = start_position
        self._perm_epoch = -1
        self._perm: list[int] = []

    def permutation(self, epoch: int) -> list[int]:
        """Order of the data set in ``epoch`` (cached for the current epoch)."""
        if epoch != self._perm_epoch:
            if self.shuffle:
                g = torch.Generator()
                g.manual_seed(sample_seed(self.seed ^ 0x5EED, epoch))
                self._perm = torch.randperm(self.dataset_size, generator=g).tolist()
            else:
                self._perm = list(range(self.dataset_size))
            self._perm_epoch = epoch
        return self._perm

    def position_after(self, steps: int) -> int:
        """Global stream position after ``steps`` steps produced by this sampler."""
        return self.start_position + steps * self.global_batch

    def state_dict(self, steps: int) -> dict[str, Any]:
        """Sampler state to store in a checkpoint taken after this sampler produced ``steps`` steps.

        ``consumed`` is the global stream position; ``epoch`` / ``position`` locate it in the data set.
        """
        consumed = self.position_after(steps)
        return {
            "seed": self.seed,
            "shuffle": self.shuffle,
            "dataset_size": self.dataset_size,
            "global_batch": self.global_batch,
            "consumed": consumed,
            "epoch": consumed // self.dataset_size,
            "position": consumed % self.dataset_size,
        }

    def __iter__(self) -> Iterator[tuple[int, int]]:
        base = self.start_position + self.rank * self.local_batch
        while True:
            for j in range(self.local_batch):
                p = base + j
                yield (
                    self.permutation(p // self.dataset_size)[p % self.dataset_size],
                    sample_seed(self.seed, p),
                )
            base += self.global_batch


class SeededDataset(Dataset):
    """Wraps a map-style data set so item ``(index, seed)`` is produced under a fixed RNG seed.

    The global python / numpy / torch RNG states and torch's thread count are restored afterwards, so
    loading in the main process (``num_workers=0``) does not disturb the training RNG (dropout, RoI
    sampling). The item is computed with ONE torch thread: multi-threaded resampling rounds differently
    (~1e-7), and DataLoader workers always run on one thread, so ``num_workers=0`` would otherwise see
    slightly different images.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, int]) -> Any:
        index, seed = item
        py_state = random.getstate()
        np_state = np.random.get_state()
        threads = torch.get_num_threads()
        with torch.random.fork_rng(devices=[]):
            random.seed(seed)
            np.random.seed(seed & 0xFFFFFFFF)
            torch.manual_seed(seed)
            if threads != 1:
                torch.set_num_threads(1)
            try:
                return self.dataset[index]
            finally:
                if threads != 1:
                    torch.set_num_threads(threads)
                random.setstate(py_state)
                np.random.set_state(np_state)


def worker_init_fn(worker_id: int) -> None:
    """Seed python/numpy in DataLoader workers from torch's per-worker seed (torch seeds itself)."""
    seed = torch.initial_seed() & _SEED_MASK
    random.seed(seed)
    np.random.seed((seed + worker_id) & 0xFFFFFFFF)
