"""``train(model, dataset, cfg)``: the one entry point of the training engine.

Where the pieces live: configuration (:mod:`.config`), optimiser and schedule (:mod:`.schedule`), mixed
precision (:mod:`.precision`), seeding (:mod:`.seeding`), the data stream (:mod:`.sampler`, :mod:`.loader`),
the state a checkpoint holds (:mod:`.state`), checkpoints and resume (:mod:`.checkpoint`), the step
(:mod:`.loop`), logging / validation / checkpointing / the non-finite stop (:mod:`.hooks`), and process setup
with the spawned worker (:mod:`.process`, :mod:`.distributed`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from unipan_pipeline.training import distributed as dist_utils
from unipan_pipeline.training.config import TrainerConfig
from unipan_pipeline.training.hooks import MetricLogger, NonFiniteLossError, ValidateFn
from unipan_pipeline.training.loader import Batch
from unipan_pipeline.training.process import train_in_process, worker_entry
from unipan_pipeline.training.seeding import seed_everything
from unipan_pipeline.training.state import TrainResult

__all__ = ["MetricLogger", "NonFiniteLossError", "TrainResult", "ValidateFn", "seed_everything", "train"]


def train(
    model: nn.Module,
    dataset: Dataset,
    cfg: TrainerConfig | Mapping[str, Any],
    *,
    collate_fn: Callable[[list[Any]], Batch],
    validate_fn: ValidateFn | None = None,
    logger: MetricLogger | None = None,
    resume: bool = True,
) -> TrainResult:
    """Train ``model`` on ``dataset`` for ``cfg.iterations`` steps.

    Args:
        model: an ``nn.Module`` following the model contract (train mode: dict of weighted loss tensors).
        dataset: map-style data set of ``(image, target)`` items.
        cfg: :class:`TrainerConfig` or a mapping for :meth:`TrainerConfig.from_dict`.
        collate_fn: e.g. ``unipan_pipeline.data.dataset.collate_panoptic`` -> ``(list[Tensor], list[dict])``.
        validate_fn: ``validate_fn(model, iteration) -> {metric: value}`` called on rank 0 in eval mode
            under ``no_grad`` every ``cfg.validate_every`` steps and after the last one (its RNG use does
            not perturb training).
        logger: receives ``log_metrics(metrics, step)`` every ``cfg.log_every`` steps (rank 0 only).
        resume: continue from the newest checkpoint in ``cfg.checkpoint_dir`` when there is one.

    With ``cfg.num_processes > 1`` (and no ``RANK``/``WORLD_SIZE`` in the environment) the call starts that
    many worker processes with torch's elastic launcher; ``model``, ``dataset``, ``collate_fn``,
    ``validate_fn`` and ``logger`` are then pickled to the workers (module-level functions, no lambdas or
    closures). Under an external ``torchrun`` every process calls ``train`` itself.

    Returns:
        :class:`TrainResult`. The caller's ``model`` holds the trained weights (also when
        ``cfg.num_processes > 1`` made this call launch worker processes).

    Raises:
        NonFiniteLossError: a loss term or the gradient norm became NaN/inf (after saving the last
            finite state as ``last_finite_<iteration>.pt``).
    """
    if not isinstance(cfg, TrainerConfig):
        cfg = TrainerConfig.from_dict(cfg)
    if len(dataset) == 0:  # type: ignore[arg-type]
        raise ValueError("train(): the data set is empty")
    if cfg.num_processes > 1 and dist_utils.env_dist_info() is None:
        results = dist_utils.launch_local(
            worker_entry, (model, dataset, cfg, collate_fn, validate_fn, logger, resume), cfg.num_processes
        )
        result = results[0]
        if isinstance(result, NonFiniteLossError):
            raise result
        if result is None:
            raise RuntimeError("rank 0 returned no result")
        if result.model_state is not None:
            model.load_state_dict(result.model_state)
            result.model_state = None
        return result
    return train_in_process(
        model=model,
        dataset=dataset,
        cfg=cfg,
        collate_fn=collate_fn,
        validate_fn=validate_fn,
        logger=logger,
        resume=resume,
    )
