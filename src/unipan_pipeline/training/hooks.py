"""Hooks of the training loop: what happens around a step, kept out of the step itself.

In the manner of detectron2's ``HookBase``: the :class:`.loop.Trainer` calls, for every hook in order,
``before_train`` once, then per step ``after_forward`` (losses known, nothing updated yet),
``after_backward`` (gradient norm known, weights not yet updated) and ``after_step`` (weights and schedule
updated, ``trainer.iteration`` counts the step), and ``after_train`` once, also when the run stops early.

The default hooks, in the order :func:`default_hooks` gives them: :class:`NonFiniteStop`,
:class:`ProgressBar`, :class:`MetricsWriter`, :class:`PeriodicValidation`, :class:`PeriodicCheckpointer`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from torch import nn
from tqdm.auto import tqdm

from unipan_pipeline.training import distributed as dist_utils
from unipan_pipeline.training.checkpoint import save_checkpoint
from unipan_pipeline.training.seeding import preserved_rng
from unipan_pipeline.training.state import unwrap

if TYPE_CHECKING:
    from unipan_pipeline.training.loop import Trainer

log = logging.getLogger(__name__)

ValidateFn = Callable[[nn.Module, int], Mapping[str, float]]
"""``validate_fn(model, iteration) -> {metric: value}``, called on rank 0 in eval mode under ``no_grad``."""


@runtime_checkable
class MetricLogger(Protocol):
    """What the loop needs from a metric sink (the tracking package's run loggers implement it)."""

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


class Hook:
    """Base class: every method does nothing; a hook overrides the moments it cares about."""

    def before_train(self, trainer: Trainer) -> None:
        """Once, before the first step of this invocation."""

    def after_forward(self, trainer: Trainer) -> None:
        """After the forward pass: ``trainer.step`` holds the (rank-averaged) losses."""

    def after_backward(self, trainer: Trainer) -> None:
        """After backward and clipping: ``trainer.step.grad_norm`` is set; the weights are not updated yet."""

    def after_step(self, trainer: Trainer) -> None:
        """After the update: ``trainer.iteration`` steps are done."""

    def after_train(self, trainer: Trainer) -> None:
        """Once, at the end of the run or when it stops with an exception."""


def due(iteration: int, every: int, last: int) -> bool:
    """True every ``every`` steps (never when 0) and after the ``last`` one."""
    return bool(every and iteration % every == 0) or iteration == last


class NonFiniteStop(Hook):
    """Stop at the first NaN / inf loss term or gradient norm, saving the last finite state first.

    The check runs before the weights change, so ``last_finite_<iteration>.pt`` holds the weights, optimiser
    and RNG states before the bad step. Loss values are all-reduced, so every rank stops at the same step.
    With fp16 loss scaling a non-finite gradient is the ``GradScaler``'s business (it skips the step).
    """

    def after_forward(self, trainer: Trainer) -> None:
        for term, value in [*trainer.step.losses.items(), ("loss", trainer.step.loss)]:
            if not math.isfinite(value):
                self._stop(trainer, term, value)

    def after_backward(self, trainer: Trainer) -> None:
        if trainer.state.amp.scaler is None and not math.isfinite(trainer.step.grad_norm):
            self._stop(trainer, "gradient norm", trainer.step.grad_norm)

    @staticmethod
    def _stop(trainer: Trainer, term: str, value: float) -> None:
        done = trainer.iteration
        reason = f"non-finite {term} ({value}) at iteration {done + 1}"
        path = save_checkpoint(trainer.state, done, "last_finite", {"reason": reason})
        raise NonFiniteLossError(done + 1, term, value, path)


class ProgressBar(Hook):
    """A tqdm bar of the steps with the loss and lr (rank 0, when ``cfg.progress_bar``)."""

    def __init__(self) -> None:
        self.bar: Any = None

    def before_train(self, trainer: Trainer) -> None:
        state = trainer.state
        self.bar = tqdm(
            total=state.cfg.iterations,
            initial=trainer.iteration,
            desc="train",
            dynamic_ncols=True,
            disable=not (state.info.is_main and state.cfg.progress_bar),
        )

    def after_step(self, trainer: Trainer) -> None:
        self.bar.update(1)
        postfix = {"loss": f"{trainer.step.loss:.4f}", "lr": f"{trainer.step.lr:.2e}"}
        self.bar.set_postfix(postfix, refresh=False)

    def after_train(self, trainer: Trainer) -> None:
        if self.bar is not None:
            self.bar.close()


class MetricsWriter(Hook):
    """Every ``cfg.log_every`` steps and after the last: losses, lr, gradient norm and timings into
    ``trainer.result.history`` and the logger (rank 0)."""

    def __init__(self, logger: MetricLogger | None) -> None:
        self.logger = logger

    def after_step(self, trainer: Trainer) -> None:
        state, step, it = trainer.state, trainer.step, trainer.iteration
        if not (state.info.is_main and due(it, state.cfg.log_every, state.cfg.iterations)):
            return
        metrics = {f"train/{k}": v for k, v in step.losses.items()}
        metrics.update(
            {
                "train/loss": step.loss,
                "train/lr": step.lr,
                "train/grad_norm": step.grad_norm,
                "time/data_s": step.data_time,
                "time/step_s": step.step_time,
                "time/images_per_s": state.cfg.images_per_batch / max(step.step_time, 1e-9),
            }
        )
        if state.amp.scaler is not None:
            metrics["train/amp_scale"] = float(state.amp.scaler.get_scale())
        trainer.result.history.append({"iteration": float(it), **metrics})
        if self.logger is not None:
            self.logger.log_metrics(metrics, step=it)


class PeriodicValidation(Hook):
    """Every ``cfg.validate_every`` steps and after the last: ``validate_fn`` on rank 0 in eval mode, under
    ``no_grad`` and without touching the training RNG streams; the other ranks wait at a barrier."""

    def __init__(self, validate_fn: ValidateFn, logger: MetricLogger | None) -> None:
        self.validate_fn = validate_fn
        self.logger = logger

    def after_step(self, trainer: Trainer) -> None:
        state, it = trainer.state, trainer.iteration
        if not due(it, state.cfg.validate_every, state.cfg.iterations):
            return
        if state.info.is_main:
            module = unwrap(state.model)
            module.eval()
            try:
                with preserved_rng(state.device), torch.no_grad():
                    metrics = {k: float(v) for k, v in dict(self.validate_fn(module, it)).items()}
            finally:
                module.train()
            trainer.result.validation[it] = metrics
            if self.logger is not None:
                self.logger.log_metrics({f"val/{k}": v for k, v in metrics.items()}, step=it)
            log.info("validation at iteration %d: %s", it, metrics)
        dist_utils.barrier()


class PeriodicCheckpointer(Hook):
    """Every ``cfg.checkpoint_every`` steps and after the last: an atomic checkpoint (collective; written by
    rank 0, older ones pruned to ``cfg.keep_last_n``)."""

    def after_step(self, trainer: Trainer) -> None:
        state, it = trainer.state, trainer.iteration
        if state.cfg.checkpoint_path is None or not due(it, state.cfg.checkpoint_every, state.cfg.iterations):
            return
        path = save_checkpoint(state, it, "final" if it == state.cfg.iterations else "periodic")
        if path is not None:
            trainer.result.final_checkpoint = str(path)


def default_hooks(validate_fn: ValidateFn | None, logger: MetricLogger | None) -> list[Hook]:
    """The loop's hooks in order: non-finite stop, progress, metrics, validation, checkpoints."""
    hooks: list[Hook] = [NonFiniteStop(), ProgressBar(), MetricsWriter(logger)]
    if validate_fn is not None:
        hooks.append(PeriodicValidation(validate_fn, logger))
    hooks.append(PeriodicCheckpointer())
    return hooks
