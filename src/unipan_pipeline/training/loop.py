"""The training loop: one step is forward, loss, backward, clip, update; everything else is a hook.

The model follows the project's model contract: in train mode ``model(images, targets)`` returns a dict of
loss terms already multiplied by their weights (det / sem / pan, sec. 3.4 of the paper); the loop minimises
their sum ``L = sum_k L_k``. Nothing in this module knows about panoptic segmentation.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from unipan_pipeline.training.hooks import Hook
from unipan_pipeline.training.loader import Batch, to_device
from unipan_pipeline.training.state import TrainResult, TrainState


@dataclass
class StepOutput:
    """What one step measured (loss values averaged over the ranks)."""

    losses: dict[str, float] = field(default_factory=dict)
    loss: float = math.nan
    grad_norm: float = math.nan
    lr: float = math.nan
    data_time: float = 0.0
    step_time: float = 0.0


def checked_losses(output: Any) -> dict[str, torch.Tensor]:
    """The model's train-mode output as ``{term: scalar tensor}``; a clear error if it breaks the contract."""
    if not isinstance(output, Mapping) or not output:
        raise TypeError(
            f"model returned {type(output).__name__} in train mode; the model contract "
            "requires a non-empty dict of loss tensors"
        )
    losses = {}
    for key, value in output.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"loss term {key!r} is a {type(value).__name__}, expected a tensor")
        if value.numel() != 1:
            raise ValueError(f"loss term {key!r} has shape {tuple(value.shape)}, expected a scalar")
        losses[key] = value.reshape(())
    return losses


class Trainer:
    """Runs ``state`` from its ``start_iteration`` to ``cfg.iterations`` over ``batches``, calling ``hooks``.

    Attributes read by hooks: ``state``, ``result``, ``iteration`` (steps completed) and ``step`` (the
    :class:`StepOutput` of the current step).
    """

    def __init__(self, state: TrainState, batches: Iterable[Batch], hooks: list[Hook], result: TrainResult):
        self.state = state
        self.batches = batches
        self.hooks = hooks
        self.result = result
        self.iteration = state.start_iteration
        self.step = StepOutput()
        self.params = [p for g in state.optimizer.param_groups for p in g["params"]]
        clip = state.cfg.grad_clip_norm
        self.max_norm = clip if clip is not None else math.inf
        self._data: Iterator[Batch] | None = None

    def train(self) -> TrainResult:
        """Run the remaining steps; the hooks' ``after_train`` runs also when a step raises."""
        self._data = iter(self.batches)
        self._call("before_train")
        try:
            while self.iteration < self.state.cfg.iterations:
                self.run_step()
                self.iteration += 1
                self.result.iteration = self.iteration
                self._call("after_step")
        finally:
            self._call("after_train")
            self._data = None  # shuts the loader's worker processes down
        return self.result

    def run_step(self) -> None:
        """One optimiser step on the next batch."""
        state, amp = self.state, self.state.amp
        t0 = time.perf_counter()
        images, targets = to_device(next(self._data), state.device)  # type: ignore[arg-type]
        data_time = time.perf_counter() - t0

        with amp():
            losses = checked_losses(state.model(images, targets))
        total = sum(v.float() for v in losses.values())
        # One (all-reduced) sync per step: logged values and the finiteness check agree on all ranks.
        values = torch.stack([v.detach().float() for v in losses.values()] + [total.detach()])
        if state.info.distributed:
            torch.distributed.all_reduce(values)
            values /= state.info.world_size
        *terms, loss = values.tolist()
        self.step = StepOutput(losses=dict(zip(losses, terms, strict=True)), loss=loss, data_time=data_time)
        self._call("after_forward")

        state.optimizer.zero_grad(set_to_none=True)
        if amp.scaler is not None:
            amp.scaler.scale(total).backward()
            amp.scaler.unscale_(state.optimizer)
        else:
            total.backward()
        self.step.grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, self.max_norm))
        self._call("after_backward")

        self.step.lr = state.optimizer.param_groups[0]["lr"]
        if amp.scaler is not None:
            amp.scaler.step(state.optimizer)
            amp.scaler.update()
        else:
            state.optimizer.step()
        state.scheduler.step()
        self.step.step_time = time.perf_counter() - t0

    def _call(self, moment: str) -> None:
        for hook in self.hooks:
            getattr(hook, moment)(self)
