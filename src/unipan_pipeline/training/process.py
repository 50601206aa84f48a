"""Process setup of a training job: device, process group, the run in one process, the spawned worker.

One process trains by default. Under ``torchrun`` (``RANK``/``WORLD_SIZE`` set) every process joins the
process group and trains its shard; with ``num_processes > 1`` and no such environment,
:func:`unipan_pipeline.training.train` starts the workers itself (:func:`worker_entry`).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from unipan_pipeline.devices import resolve_device
from unipan_pipeline.training import distributed as dist_utils
from unipan_pipeline.training.checkpoint import resume_from_newest
from unipan_pipeline.training.config import TrainerConfig
from unipan_pipeline.training.hooks import MetricLogger, NonFiniteLossError, ValidateFn, default_hooks
from unipan_pipeline.training.loader import make_loader
from unipan_pipeline.training.loop import Trainer
from unipan_pipeline.training.seeding import configure_determinism, seed_everything
from unipan_pipeline.training.state import TrainResult, build_state, unwrap

log = logging.getLogger(__name__)


@contextlib.contextmanager
def joined_process_group(cfg: TrainerConfig) -> Iterator[tuple[torch.device, dist_utils.DistInfo]]:
    """This process's device and rank; under a multi-process launcher, inside the process group.

    Joins the group when the environment describes one of several processes and it is not joined yet, and
    leaves it on exit only then: a caller that joined first (to exchange results after training) keeps it.
    """
    env = dist_utils.env_dist_info()
    device = resolve_device(cfg.device, env.local_rank if env else 0)
    own_group = False
    if env is not None and env.world_size > 1:
        own_group = not torch.distributed.is_initialized()
        dist_utils.init_process_group(cfg.dist_backend, device)
    try:
        yield device, dist_utils.current_dist_info()
    finally:
        if own_group:
            dist_utils.destroy_process_group()


def train_in_process(
    *,
    model: nn.Module,
    dataset: Dataset,
    cfg: TrainerConfig,
    collate_fn: Callable,
    validate_fn: ValidateFn | None,
    logger: MetricLogger | None,
    resume: bool,
) -> TrainResult:
    """Set up and run the loop in this process (every process of a multi-process job calls it)."""
    t_start = time.perf_counter()
    with joined_process_group(cfg) as (device, info):
        configure_determinism(cfg.deterministic)
        seed_everything(cfg.seed + info.rank)
        state = build_state(model, len(dataset), cfg, info, device)  # type: ignore[arg-type]
        resumed_from = resume_from_newest(state) if resume else None
        if resumed_from is not None and info.is_main:
            log.info("resumed from %s at iteration %d", resumed_from, state.start_iteration)
        start = state.start_iteration
        result = TrainResult(
            iteration=start, start_iteration=start, resumed_from=resumed_from, world_size=info.world_size
        )
        if start >= cfg.iterations:
            if info.is_main:
                log.info(
                    "checkpoint at iteration %d >= iterations=%d: nothing to train", start, cfg.iterations
                )
            result.final_checkpoint = resumed_from
        else:
            if info.distributed:
                ddp_kwargs: dict[str, Any] = {"find_unused_parameters": cfg.find_unused_parameters}
                if device.type == "cuda":
                    ddp_kwargs["device_ids"] = [device.index]
                state.model = nn.parallel.DistributedDataParallel(model, **ddp_kwargs)
            loader = make_loader(dataset, state.sampler, cfg, collate_fn, device)
            hooks = default_hooks(validate_fn, logger if info.is_main else None)
            Trainer(state, loader, hooks, result).train()
    result.wall_time_s = time.perf_counter() - t_start
    return result


def worker_entry(  # noqa: PLR0917 - positional: called by the elastic launcher with an args tuple
    model: nn.Module,
    dataset: Dataset,
    cfg: TrainerConfig,
    collate_fn: Callable,
    validate_fn: ValidateFn | None,
    logger: MetricLogger | None,
    resume: bool,
) -> TrainResult | NonFiniteLossError | None:
    """Entry point of each process started by :func:`distributed.launch_local`: rank 0 returns its result
    with its final weights (or the non-finite-loss error), the other ranks None."""
    env = dist_utils.env_dist_info()
    if "OMP_NUM_THREADS" not in os.environ and env is not None:
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", env.world_size))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    # Spawned workers receive tensors through torch.multiprocessing, i.e. in shared memory: without a private
    # copy every rank would update the SAME parameter storage (N-fold updates).
    model = copy.deepcopy(model)
    try:
        result = train_in_process(
            model=model,
            dataset=dataset,
            cfg=cfg,
            collate_fn=collate_fn,
            validate_fn=validate_fn,
            logger=logger,
            resume=resume,
        )
    except NonFiniteLossError as exc:  # all ranks stop at the same step; the launcher re-raises rank 0's
        return exc if env is None or env.rank == 0 else None
    if env is not None and env.rank != 0:
        return None
    result.model_state = {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}
    return result
