"""Optimiser and learning-rate schedule: linear warm-up followed by step decay.

``lr(t) = base_lr * warmup(t) * gamma ** #{s in lr_steps : s <= t}`` where
``warmup(t) = warmup_factor + (1 - warmup_factor) * t / warmup_iters`` for ``t < warmup_iters`` and 1 after.
``t`` is the number of optimiser steps already taken (the lr used by step ``t + 1``), the convention of
detectron2's ``WarmupMultiStepLR`` used by Panoptic FPN / UPSNet and, through them, the paper.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

import torch
from torch import nn

from unipan_pipeline.training.config import TrainerConfig

_NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
    nn.modules.instancenorm._InstanceNorm,
)


def lr_factor(
    iteration: int, *, warmup_iters: int, warmup_factor: float, lr_steps: Iterable[int], gamma: float
) -> float:
    """Multiplier of the base lr after ``iteration`` optimiser steps (see module docstring)."""
    if iteration < 0:
        raise ValueError(f"iteration must be >= 0, got {iteration}")
    factor = 1.0
    if warmup_iters > 0 and iteration < warmup_iters:
        alpha = iteration / warmup_iters
        factor = warmup_factor * (1.0 - alpha) + alpha
    steps = sorted(lr_steps)
    return factor * gamma ** bisect.bisect_right(steps, iteration)


class WarmupStepSchedule:
    """Picklable ``lr_lambda`` for :class:`torch.optim.lr_scheduler.LambdaLR`."""

    def __init__(self, cfg: TrainerConfig) -> None:
        self.warmup_iters = cfg.warmup_iters
        self.warmup_factor = cfg.warmup_factor
        self.lr_steps = list(cfg.lr_steps)
        self.gamma = cfg.gamma

    def __call__(self, iteration: int) -> float:
        return lr_factor(
            iteration,
            warmup_iters=self.warmup_iters,
            warmup_factor=self.warmup_factor,
            lr_steps=self.lr_steps,
            gamma=self.gamma,
        )


def parameter_groups(model: nn.Module, weight_decay: float, decay_norm_and_bias: bool = False) -> list[dict]:
    """Split trainable parameters into a decayed group and (optionally) a no-decay group.

    Normalisation-layer parameters and biases get no weight decay unless ``decay_norm_and_bias``
    (the common practice in detectron2-style trainers; the paper does not say); scalar parameters (the
    affinity's learnt gain) never get it. Frozen parameters (``requires_grad=False``, e.g. frozen BN of a
    pretrained backbone) are left out.
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            if p.ndim == 0 or (  # a scalar (a gain): never decayed
                not decay_norm_and_bias and (isinstance(module, _NORM_TYPES) or name == "bias")
            ):
                no_decay.append(p)
            else:
                decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    if not decay and not no_decay:
        raise ValueError("model has no trainable parameters")
    return groups


def build_optimizer(model: nn.Module, cfg: TrainerConfig) -> torch.optim.Optimizer:
    """SGD with momentum (paper) or AdamW over :func:`parameter_groups`."""
    groups = parameter_groups(model, cfg.weight_decay, cfg.weight_decay_norm_and_bias)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.adam_betas)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainerConfig, *, steps_taken: int = 0
) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR implementing warm-up + step decay; call ``.step()`` once per optimiser step.

    The schedule is a pure function of ``(cfg, steps_taken)``: a resumed run builds its scheduler at the
    checkpoint's ``steps_taken`` through torch's own resume protocol (``initial_lr`` in each parameter group
    and ``last_epoch``), which sets every group's lr to ``cfg.lr * lr_factor(steps_taken)``. The current
    configuration's lr and schedule apply, also when they changed since the checkpoint.
    """
    if steps_taken < 0:
        raise ValueError(f"steps_taken must be >= 0, got {steps_taken}")
    for group in optimizer.param_groups:
        group["initial_lr"] = cfg.lr
    # LambdaLR takes one step on construction: last_epoch = steps_taken - 1 leaves it at steps_taken.
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupStepSchedule(cfg), last_epoch=steps_taken - 1)
