"""What a training run is made of (model, optimiser, schedule, precision, data position), what it returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from unipan_pipeline.training.config import TrainerConfig
from unipan_pipeline.training.distributed import DistInfo
from unipan_pipeline.training.precision import Autocast
from unipan_pipeline.training.sampler import InfiniteShardedSampler
from unipan_pipeline.training.schedule import build_optimizer, build_scheduler


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` wrapper (the model itself otherwise)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


@dataclass
class TrainState:
    """Everything a checkpoint captures and a resume restores.

    Attributes:
        model: the network (wrapped in DDP once training starts in a multi-process job).
        optimizer / scheduler: the optimiser and its warm-up + step-decay schedule.
        amp: autocast mode and, for fp16, the ``GradScaler``.
        sampler: the endless sharded sampler; its position is the data stream's position.
        cfg: the run's configuration.
        info: this process's rank in the job.
        device: where the model trains.
        start_iteration: the step this invocation (re)started from.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    amp: Autocast
    sampler: InfiniteShardedSampler
    cfg: TrainerConfig
    info: DistInfo
    device: torch.device
    start_iteration: int = 0


def build_state(
    model: nn.Module, dataset_size: int, cfg: TrainerConfig, info: DistInfo, device: torch.device
) -> TrainState:
    """Move ``model`` to ``device`` in train mode and build its optimiser, schedule, autocast and sampler."""
    cfg.per_process_batch(info.world_size)  # fails early when the batch does not split
    model.to(device)
    model.train()
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg)
    amp = Autocast(cfg.amp, device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    sampler = InfiniteShardedSampler(
        dataset_size,
        cfg.images_per_batch,
        rank=info.rank,
        world_size=info.world_size,
        seed=cfg.seed,
        shuffle=cfg.shuffle,
    )
    return TrainState(model, optimizer, scheduler, amp, sampler, cfg, info, device)


@dataclass
class TrainResult:
    """Outcome of :func:`unipan_pipeline.training.train` (as seen by rank 0).

    Attributes:
        iteration: steps completed (== ``cfg.iterations`` after a full run).
        start_iteration: step the run (re)started from (0 for a fresh run).
        resumed_from: checkpoint the run resumed from, if any.
        final_checkpoint: path of the last checkpoint written, if any.
        history: the metrics sent to the logger, one dict per logged step (``"iteration"`` included),
            loss terms averaged over the ranks.
        validation: ``{iteration: metrics}`` returned by ``validate_fn``.
        world_size: number of training processes.
        wall_time_s: seconds spent in this call.
        model_state: only when :func:`train` launched the workers itself: rank 0's final ``state_dict``
            (already loaded into the caller's model; cleared before returning).
    """

    iteration: int
    start_iteration: int = 0
    resumed_from: str | None = None
    final_checkpoint: str | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    validation: dict[int, dict[str, float]] = field(default_factory=dict)
    world_size: int = 1
    wall_time_s: float = 0.0
    model_state: dict[str, torch.Tensor] | None = None
