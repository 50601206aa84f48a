"""The training loop: optimiser, schedule, clipping, AMP, seeding, checkpoints, resume and DDP.

The model follows the project's model contract: in train mode ``model(images, targets)`` returns a dict of
loss terms already multiplied by their weights (det / sem / pan, sec. 3.4 of the paper); the loop minimises
their sum ``L = sum_k L_k``. Nothing in this module knows about panoptic segmentation.

Resume determinism (see :mod:`unipan_pipeline.training.sampler` and :mod:`.checkpoint`): a checkpoint taken
after ``t`` steps holds the model, optimiser (momentum buffers), scheduler, GradScaler, the python / numpy /
torch / CUDA RNG states of every rank and the sampler's consumed stream position. Data order and per-sample
augmentation are functions of the stream position only, so a resumed run sees exactly the batches, the
augmentations and the training-time randomness (dropout, RoI sampling) of the uninterrupted run and -- on
deterministic kernels (CPU, or CUDA with ``deterministic: true``) -- ends with bit-identical weights.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import os
import random
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from unipan_pipeline.devices import resolve_device
from unipan_pipeline.training import checkpoint as ckpt_io
from unipan_pipeline.training import distributed as dist_utils
from unipan_pipeline.training.config import TrainerConfig
from unipan_pipeline.training.precision import Autocast
from unipan_pipeline.training.sampler import InfiniteShardedSampler, SeededDataset, worker_init_fn
from unipan_pipeline.training.schedule import WarmupStepSchedule, build_optimizer, build_scheduler

log = logging.getLogger(__name__)

Batch = tuple[list[torch.Tensor], list[dict[str, Any]]]
ValidateFn = Callable[[nn.Module, int], Mapping[str, float]]


@runtime_checkable
class MetricLogger(Protocol):
    """What the loop needs from a metric sink (``MlflowLogger`` implements it)."""

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN / inf loss term or gradient norm.

    Attributes:
        iteration: the 1-based step whose forward/backward was non-finite.
        term: the offending loss key (``"loss_mask"``, ...) or ``"gradient norm"``.
        checkpoint_path: the ``last_finite_*.pt`` checkpoint of the weights before that step (rank 0, when
            a checkpoint folder is configured), else None.
    """

    def __init__(self, iteration: int, term: str, value: float, checkpoint_path: Path | None) -> None:
        where = f"; last finite state saved to {checkpoint_path}" if checkpoint_path else ""
        super().__init__(f"non-finite {term} ({value}) at iteration {iteration}{where}")
        self.iteration = iteration
        self.term = term
        self.value = value
        self.checkpoint_path = checkpoint_path

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # picklable (DDP workers hand it back to the launching process)
        return type(self), (self.iteration, self.term, self.value, self.checkpoint_path)


@dataclass
class TrainResult:
    """Outcome of :func:`train` (as seen by rank 0).

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


# ------------------------------------------------------------------------------------------------ seeding
def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy's global RNG and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)
    torch.manual_seed(seed)


def configure_determinism(deterministic: bool) -> None:
    """With ``deterministic``: deterministic kernels (``warn_only``), no cuDNN autotuner, fixed cuBLAS
    workspace. Without: torch's global settings are left as they are.

    ``warn_only`` because some CUDA kernels of the detector (e.g. RoIAlign backward, index_put with
    accumulate) have no deterministic implementation: they warn and stay non-deterministic on GPU. On CPU
    the toy tests are bit-exact either way.
    """
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


# ------------------------------------------------------------------------------------------------ helpers
def _to_device(batch: Batch, device: torch.device, non_blocking: bool) -> Batch:
    images, targets = batch
    images = [im.to(device, non_blocking=non_blocking) for im in images]
    moved = []
    for t in targets:
        moved.append(
            {
                k: v.to(device, non_blocking=non_blocking) if isinstance(v, torch.Tensor) else v
                for k, v in t.items()
            }
        )
    return images, moved


def _scalar_loss(key: str, value: Any) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"loss term {key!r} is a {type(value).__name__}, expected a tensor")
    if value.numel() != 1:
        raise ValueError(f"loss term {key!r} has shape {tuple(value.shape)}, expected a scalar")
    return value.reshape(())


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


@contextlib.contextmanager
def _preserve_rng(device: torch.device) -> Iterator[None]:
    """Keep validation from consuming the training RNG streams (python, numpy, torch CPU/CUDA)."""
    py, npy = random.getstate(), np.random.get_state()
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


@dataclass
class _State:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    amp: Autocast
    sampler: InfiniteShardedSampler
    cfg: TrainerConfig
    info: dist_utils.DistInfo
    start_iteration: int

    def checkpoint_payload(self, iteration: int, kind: str, extra: dict[str, Any] | None = None) -> dict:
        """Collective on all ranks (gathers RNG states); returns the payload (meaningful on rank 0)."""
        rng = dist_utils.all_gather_object(ckpt_io.capture_rng_state())
        payload = {
            "format": ckpt_io.CHECKPOINT_FORMAT,
            "kind": kind,
            "iteration": iteration,
            "model": _unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.amp.scaler.state_dict() if self.amp.scaler is not None else None,
            "rng": rng,
            "world_size": self.info.world_size,
            "sampler": self.sampler.state_dict(iteration - self.start_iteration),
            "config": self.cfg.to_dict(),
            "torch_version": str(torch.__version__),
        }
        if extra:
            payload.update(extra)
        return payload

    def save(self, iteration: int, kind: str, extra: dict[str, Any] | None = None) -> Path | None:
        """Write a checkpoint (rank 0); all ranks must call it. Returns the path on rank 0."""
        folder = self.cfg.checkpoint_path
        if folder is None:
            return None
        payload = self.checkpoint_payload(iteration, kind, extra)
        if not self.info.is_main:
            return None
        if kind == "last_finite":
            path = folder / ckpt_io.last_finite_name(iteration)
        else:
            path = folder / ckpt_io.checkpoint_name(iteration)
        ckpt_io.atomic_torch_save(payload, path)
        if kind != "last_finite":
            ckpt_io.prune_checkpoints(folder, self.cfg.keep_last_n)
        return path


def _apply_config_hyperparameters(optimizer: torch.optim.Optimizer, fresh_groups: list[dict]) -> None:
    """After loading an optimiser state, take hyper-parameters from the current config (not the file)."""
    for group, fresh in zip(optimizer.param_groups, fresh_groups, strict=True):
        for key in ("weight_decay", "momentum", "betas", "nesterov", "dampening", "eps"):
            if key in fresh:
                group[key] = fresh[key]


def _resume(state: _State, path: Path, ckpt: dict[str, Any], device: torch.device) -> int:
    """Load ``ckpt`` into the unwrapped model, optimiser, scheduler, scaler and RNG; return its iteration."""
    cfg, info = state.cfg, state.info
    model = _unwrap(state.model)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise ckpt_io.CheckpointError(f"{path}: model weights do not fit this model: {exc}") from exc
    fresh = [{k: v for k, v in g.items() if k != "params"} for g in state.optimizer.param_groups]
    try:
        state.optimizer.load_state_dict(ckpt["optimizer"])
    except (ValueError, KeyError) as exc:
        raise ckpt_io.CheckpointError(f"{path}: optimiser state does not fit ({exc})") from exc
    _apply_config_hyperparameters(state.optimizer, fresh)
    iteration = int(ckpt["iteration"])
    # The schedule is a pure function of (config, iteration): rebuild rather than trusting the pickled lambda.
    state.scheduler.load_state_dict(ckpt["scheduler"])
    state.scheduler.lr_lambdas = [WarmupStepSchedule(cfg) for _ in state.optimizer.param_groups]
    state.scheduler.base_lrs = [cfg.lr for _ in state.optimizer.param_groups]
    state.scheduler.last_epoch = iteration
    for group, fn in zip(state.optimizer.param_groups, state.scheduler.lr_lambdas, strict=True):
        group["initial_lr"] = cfg.lr
        group["lr"] = cfg.lr * fn(iteration)
    state.scheduler._last_lr = [g["lr"] for g in state.optimizer.param_groups]
    if state.amp.scaler is not None and ckpt.get("scaler") is not None:
        state.amp.scaler.load_state_dict(ckpt["scaler"])
    rng = ckpt.get("rng") or []
    if int(ckpt.get("world_size", 1)) == info.world_size and len(rng) == info.world_size:
        ckpt_io.restore_rng_state(rng[info.rank])
    else:
        warnings.warn(
            f"{path}: saved with world size {ckpt.get('world_size')} but resuming with {info.world_size}: "
            "RNG streams are re-seeded (data order is still exact, dropout/RoI sampling are not)",
            stacklevel=3,
        )
        seed_everything(cfg.seed + info.rank + iteration)
    samp = ckpt.get("sampler") or {}
    consumed = int(samp.get("consumed", iteration * cfg.images_per_batch))
    changed = [
        k for k in ("seed", "shuffle", "dataset_size") if k in samp and samp[k] != getattr(state.sampler, k)
    ]
    if changed:
        warnings.warn(
            f"{path}: sampler {changed} changed since the checkpoint; data order differs from "
            "an uninterrupted run",
            stacklevel=3,
        )
    state.sampler.start_position = consumed
    del device
    return iteration


def _make_loader(
    dataset: Dataset,
    sampler: InfiniteShardedSampler,
    cfg: TrainerConfig,
    collate_fn: Callable[[list[Any]], Batch],
    device: torch.device,
) -> DataLoader:
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


def _validate(
    *,
    state: _State,
    validate_fn: ValidateFn,
    iteration: int,
    device: torch.device,
    logger: MetricLogger | None,
    result: TrainResult,
) -> None:
    if state.info.is_main:
        module = _unwrap(state.model)
        module.eval()
        try:
            with _preserve_rng(device), torch.no_grad():
                metrics = {k: float(v) for k, v in dict(validate_fn(module, iteration)).items()}
        finally:
            module.train()
        result.validation[iteration] = metrics
        if logger is not None:
            logger.log_metrics({f"val/{k}": v for k, v in metrics.items()}, step=iteration)
        log.info("validation at iteration %d: %s", iteration, metrics)
    dist_utils.barrier()


def _train_in_process(
    *,
    model: nn.Module,
    dataset: Dataset,
    cfg: TrainerConfig,
    collate_fn: Callable,
    validate_fn: ValidateFn | None,
    logger: MetricLogger | None,
    resume: bool,
) -> TrainResult:
    """The loop proper; runs in every process of a (possibly single-process) job."""
    t_start = time.perf_counter()
    env = dist_utils.env_dist_info()
    own_group = False
    local_rank = env.local_rank if env else 0
    device = resolve_device(cfg.device, local_rank)
    if env is not None and env.world_size > 1:
        own_group = not torch.distributed.is_initialized()
        dist_utils.init_process_group(cfg.dist_backend, device)
    info = dist_utils.current_dist_info()
    try:
        return _run(
            model=model,
            dataset=dataset,
            cfg=cfg,
            collate_fn=collate_fn,
            validate_fn=validate_fn,
            logger=logger if info.is_main else None,
            resume=resume,
            device=device,
            info=info,
            t_start=t_start,
        )
    finally:
        if own_group:
            dist_utils.destroy_process_group()


def _run(
    *,
    model: nn.Module,
    dataset: Dataset,
    cfg: TrainerConfig,
    collate_fn: Callable,
    validate_fn: ValidateFn | None,
    logger: MetricLogger | None,
    resume: bool,
    device: torch.device,
    info: dist_utils.DistInfo,
    t_start: float,
) -> TrainResult:
    configure_determinism(cfg.deterministic)
    seed_everything(cfg.seed + info.rank)
    cfg.per_process_batch(info.world_size)  # fails early when the batch does not split
    model.to(device)
    model.train()
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg)
    amp = Autocast(cfg.amp, device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    sampler = InfiniteShardedSampler(
        len(dataset),
        cfg.images_per_batch,
        rank=info.rank,  # type: ignore[arg-type]
        world_size=info.world_size,
        seed=cfg.seed,
        shuffle=cfg.shuffle,
    )
    state = _State(model, optimizer, scheduler, amp, sampler, cfg, info, 0)

    start = 0
    resumed_from: str | None = None
    if resume and cfg.checkpoint_path is not None:
        found_path: str | None = None
        if info.is_main:
            found = ckpt_io.find_resume_checkpoint(cfg.checkpoint_path)
            found_path = str(found[0]) if found else None
        found_path = dist_utils.broadcast_object(found_path)
        if found_path is not None:
            ckpt = ckpt_io.load_checkpoint(found_path, map_location="cpu")
            start = _resume(state, Path(found_path), ckpt, device)
            resumed_from = found_path
            del ckpt
            if info.is_main:
                log.info("resumed from %s at iteration %d", found_path, start)
    state.start_iteration = start
    result = TrainResult(
        iteration=start, start_iteration=start, resumed_from=resumed_from, world_size=info.world_size
    )
    if start >= cfg.iterations:
        if info.is_main:
            log.info("checkpoint at iteration %d >= iterations=%d: nothing to train", start, cfg.iterations)
        result.final_checkpoint = resumed_from
        result.wall_time_s = time.perf_counter() - t_start
        return result

    if info.distributed:
        ddp_kwargs: dict[str, Any] = {"find_unused_parameters": cfg.find_unused_parameters}
        if device.type == "cuda":
            ddp_kwargs["device_ids"] = [device.index]
        model = nn.parallel.DistributedDataParallel(model, **ddp_kwargs)
        state.model = model

    loader = _make_loader(dataset, sampler, cfg, collate_fn, device)
    data_iter = iter(loader)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    max_norm = cfg.grad_clip_norm if cfg.grad_clip_norm is not None else math.inf
    bar = tqdm(
        total=cfg.iterations,
        initial=start,
        desc="train",
        dynamic_ncols=True,
        disable=not (info.is_main and cfg.progress_bar),
    )
    non_blocking = device.type == "cuda"

    def fail(iteration: int, term: str, value: float) -> None:
        path = state.save(
            iteration, "last_finite", {"reason": f"non-finite {term} ({value}) at iteration {iteration + 1}"}
        )
        bar.close()
        raise NonFiniteLossError(iteration + 1, term, value, path)

    try:
        for it in range(start, cfg.iterations):
            t0 = time.perf_counter()
            images, targets = _to_device(next(data_iter), device, non_blocking)
            t_data = time.perf_counter() - t0
            with amp():
                loss_dict = model(images, targets)
            if not isinstance(loss_dict, Mapping) or not loss_dict:
                raise TypeError(
                    f"model returned {type(loss_dict).__name__} in train mode; the model contract "
                    "requires a non-empty dict of loss tensors"
                )
            keys = list(loss_dict)
            loss_dict = {k: _scalar_loss(k, loss_dict[k]) for k in keys}
            total = sum(loss_dict[k].float() for k in keys)
            # One (all-reduced) sync per step: logged values and the finiteness check agree on all ranks.
            values = torch.stack([loss_dict[k].detach().float() for k in keys] + [total.detach()])
            if info.distributed:
                torch.distributed.all_reduce(values)
                values /= info.world_size
            vals = values.tolist()
            for k, v in zip([*keys, "loss"], vals, strict=True):
                if not math.isfinite(v):
                    fail(it, k, v)

            optimizer.zero_grad(set_to_none=True)
            if amp.scaler is not None:
                amp.scaler.scale(total).backward()
                amp.scaler.unscale_(optimizer)
            else:
                total.backward()
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
            if amp.scaler is None and not math.isfinite(grad_norm):
                fail(it, "gradient norm", grad_norm)
            lr = optimizer.param_groups[0]["lr"]
            if amp.scaler is not None:
                amp.scaler.step(optimizer)
                amp.scaler.update()
            else:
                optimizer.step()
            scheduler.step()
            iteration = it + 1
            result.iteration = iteration
            step_time = time.perf_counter() - t0

            bar.update(1)
            bar.set_postfix({"loss": f"{vals[-1]:.4f}", "lr": f"{lr:.2e}"}, refresh=False)
            if info.is_main and (iteration % cfg.log_every == 0 or iteration == cfg.iterations):
                metrics = {f"train/{k}": v for k, v in zip(keys, vals, strict=False)}
                metrics.update(
                    {
                        "train/loss": vals[-1],
                        "train/lr": lr,
                        "train/grad_norm": grad_norm,
                        "time/data_s": t_data,
                        "time/step_s": step_time,
                        "time/images_per_s": cfg.images_per_batch / max(step_time, 1e-9),
                    }
                )
                if amp.scaler is not None:
                    metrics["train/amp_scale"] = float(amp.scaler.get_scale())
                result.history.append({"iteration": float(iteration), **metrics})
                if logger is not None:
                    logger.log_metrics(metrics, step=iteration)
            if validate_fn is not None and (
                (cfg.validate_every and iteration % cfg.validate_every == 0) or iteration == cfg.iterations
            ):
                _validate(
                    state=state,
                    validate_fn=validate_fn,
                    iteration=iteration,
                    device=device,
                    logger=logger,
                    result=result,
                )
            if cfg.checkpoint_path is not None and (
                (cfg.checkpoint_every and iteration % cfg.checkpoint_every == 0)
                or iteration == cfg.iterations
            ):
                path = state.save(iteration, "final" if iteration == cfg.iterations else "periodic")
                if path is not None:
                    result.final_checkpoint = str(path)
    finally:
        bar.close()
        del data_iter
    result.wall_time_s = time.perf_counter() - t_start
    return result


def _worker_entry(  # noqa: PLR0917 - positional: called by the elastic launcher with an args tuple
    model: nn.Module,
    dataset: Dataset,
    cfg: TrainerConfig,
    collate_fn: Callable,
    validate_fn: ValidateFn | None,
    logger: MetricLogger | None,
    resume: bool,
) -> TrainResult | NonFiniteLossError | None:
    """Entry point of each process started by :func:`distributed.launch_local`."""
    env = dist_utils.env_dist_info()
    if "OMP_NUM_THREADS" not in os.environ and env is not None:
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", env.world_size))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    # Spawned workers receive tensors through torch.multiprocessing, i.e. in shared memory: without a private
    # copy every rank would update the SAME parameter storage (N-fold updates).
    model = copy.deepcopy(model)
    try:
        result = _train_in_process(
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
    result.model_state = {k: v.detach().cpu() for k, v in _unwrap(model).state_dict().items()}
    return result


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
            _worker_entry, (model, dataset, cfg, collate_fn, validate_fn, logger, resume), cfg.num_processes
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
    return _train_in_process(
        model=model,
        dataset=dataset,
        cfg=cfg,
        collate_fn=collate_fn,
        validate_fn=validate_fn,
        logger=logger,
        resume=resume,
    )
