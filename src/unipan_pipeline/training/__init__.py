"""Training engine: config, loop with hooks, schedule, checkpoints and resume, DDP launch.

Plain PyTorch: no Kedro, no MLflow (that is :mod:`unipan_pipeline.tracking`; ``training.tracking`` and
``training.pyfunc`` are aliases of it kept for old imports and for models pickled before the move).
"""

from __future__ import annotations

from unipan_pipeline.training.checkpoint import CheckpointError, find_resume_checkpoint, load_checkpoint
from unipan_pipeline.training.config import TrainerConfig
from unipan_pipeline.training.distributed import DistInfo, current_dist_info, is_main_process
from unipan_pipeline.training.hooks import Hook, MetricLogger, NonFiniteLossError
from unipan_pipeline.training.sampler import InfiniteShardedSampler, SeededDataset
from unipan_pipeline.training.schedule import build_optimizer, build_scheduler, lr_factor
from unipan_pipeline.training.seeding import seed_everything
from unipan_pipeline.training.state import TrainResult
from unipan_pipeline.training.trainer import train

__all__ = [
    "CheckpointError",
    "DistInfo",
    "Hook",
    "InfiniteShardedSampler",
    "MetricLogger",
    "NonFiniteLossError",
    "SeededDataset",
    "TrainResult",
    "TrainerConfig",
    "build_optimizer",
    "build_scheduler",
    "current_dist_info",
    "find_resume_checkpoint",
    "is_main_process",
    "load_checkpoint",
    "lr_factor",
    "seed_everything",
    "train",
]
