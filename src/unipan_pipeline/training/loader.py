"""The training data loader: an endless, sharded, resumable stream of batches, and moving them to a device."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from unipan_pipeline.training.config import TrainerConfig
from unipan_pipeline.training.sampler import InfiniteShardedSampler, SeededDataset, worker_init_fn

Batch = tuple[list[torch.Tensor], list[dict[str, Any]]]
"""``(images, targets)``: what a collate function returns and the model takes in train mode."""


def make_loader(
    dataset: Dataset,
    sampler: InfiniteShardedSampler,
    cfg: TrainerConfig,
    collate_fn: Callable[[list[Any]], Batch],
    device: torch.device,
) -> DataLoader:
    """A ``DataLoader`` over ``dataset`` in ``sampler``'s order, each item augmented from its own seed.

    Worker seeds come from a private generator seeded with ``cfg.seed``, so building the loader consumes
    no global randomness.
    """
    generator = torch.Generator()
    generator.manual_seed(cfg.seed)
    return DataLoader(
        SeededDataset(dataset),
        batch_size=sampler.local_batch,
        sampler=sampler,
        num_workers=cfg.num_workers,
        collate_fn=collate_fn,
        pin_memory=cfg.pin_memory and device.type == "cuda",
        worker_init_fn=worker_init_fn,
        generator=generator,
        persistent_workers=cfg.num_workers > 0,
        prefetch_factor=2 if cfg.num_workers > 0 else None,
    )


def to_device(batch: Batch, device: torch.device, non_blocking: bool | None = None) -> Batch:
    """The batch's images and the tensors of its targets on ``device`` (by default asynchronous copies on
    CUDA)."""
    if non_blocking is None:
        non_blocking = device.type == "cuda"
    images, targets = batch
    moved_images = [im.to(device, non_blocking=non_blocking) for im in images]
    moved_targets = [
        {k: v.to(device, non_blocking=non_blocking) if torch.is_tensor(v) else v for k, v in t.items()}
        for t in targets
    ]
    return moved_images, moved_targets
