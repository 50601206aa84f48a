"""Configuration of the training engine.

The paper's schedules (sec. 4.1 / implementation details) are plain values of :class:`TrainerConfig`:

* Cityscapes: 32 crops per batch, 65k iterations, SGD lr 0.01, divided by 10 at 40k and 55k.
* COCO: 200k iterations, lr 0.02, divided by 10 at 150k and 190k.

They live in ``conf/base/parameters_*.yml``; nothing here is dataset specific.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unipan_pipeline.params import from_params

_OPTIMIZERS = ("sgd", "adamw")
_AMP = ("off", "bf16", "fp16", "auto")
_DEVICES = ("auto", "cpu", "cuda")


@dataclass
class TrainerConfig:
    """Every knob of :func:`unipan_pipeline.training.train`.

    Attributes:
        iterations: total number of optimiser steps (the run ends at this iteration).
        images_per_batch: GLOBAL batch size; each of the ``world_size`` processes sees
            ``images_per_batch // world_size`` images per step (must divide evenly).
        optimizer: ``"sgd"`` (momentum, the paper's choice) or ``"adamw"`` (the CPU demo's choice).
        lr: base learning rate (reached at the end of the warm-up).
        momentum: SGD momentum (ignored by AdamW).
        weight_decay: L2 weight decay applied to conv/linear weights.
        weight_decay_norm_and_bias: if False (default) normalisation-layer parameters and biases get no decay.
        adam_betas: AdamW betas.
        warmup_iters: length of the linear warm-up (0 disables it).
        warmup_factor: learning-rate multiplier at iteration 0 of the warm-up.
        lr_steps: iterations at which the learning rate is multiplied by ``gamma``.
        gamma: step-decay factor.
        grad_clip_norm: max global L2 norm of the gradients; ``None`` disables clipping.
        amp: ``"off"``, ``"bf16"`` (CPU or CUDA autocast, fp32 master weights), ``"fp16"`` (CUDA, with a
            GradScaler) or ``"auto"`` (bf16 where the hardware has it natively); see :mod:`.precision`.
        channels_last: train with the model's weights (and so its convolutions) in channels-last layout.
        seed: base seed of python/numpy/torch, the sampler's shuffles and per-sample augmentation seeds.
        deterministic: request deterministic torch algorithms (``warn_only``: ops without a deterministic
            implementation, e.g. some CUDA RoIAlign backward kernels, warn instead of failing).
        shuffle: shuffle the data set each epoch (deterministically from ``seed`` and the epoch).
        num_workers: DataLoader workers per process.
        pin_memory: pin host memory when training on CUDA.
        checkpoint_every: write a checkpoint every N iterations (0 = only the final one).
        checkpoint_dir: folder of the checkpoints; ``None`` disables checkpointing and resuming.
        keep_last_n: number of periodic checkpoints kept (the final one is always kept).
        validate_every: call ``validate_fn`` every N iterations (0 = never during training; it is
            always called after the last iteration when given).
        log_every: send metrics to the logger every N iterations.
        num_processes: processes on THIS machine (DistributedDataParallel when > 1).
        device: ``"auto"`` (CUDA if available), ``"cpu"`` or ``"cuda"``.
        dist_backend: ``"auto"`` (NCCL on CUDA, gloo on CPU), ``"gloo"`` or ``"nccl"``.
        find_unused_parameters: passed to DistributedDataParallel (needed when some heads are
            skipped in a step).
        progress_bar: show a tqdm progress bar (rank 0 only).
    """

    iterations: int = 1000
    images_per_batch: int = 8
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    weight_decay_norm_and_bias: bool = False
    adam_betas: tuple[float, float] = (0.9, 0.999)
    warmup_iters: int = 1000
    warmup_factor: float = 0.001
    lr_steps: list[int] = field(default_factory=list)
    gamma: float = 0.1
    grad_clip_norm: float | None = None
    amp: str = "off"
    channels_last: bool = False
    seed: int = 0
    deterministic: bool = False
    shuffle: bool = True
    num_workers: int = 0
    pin_memory: bool = True
    checkpoint_every: int = 1000
    checkpoint_dir: str | None = None
    keep_last_n: int = 3
    validate_every: int = 0
    log_every: int = 20
    num_processes: int = 1
    device: str = "auto"
    dist_backend: str = "auto"
    find_unused_parameters: bool = False
    progress_bar: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.amp, bool) or self.amp is None:
            self.amp = "fp16" if self.amp else "off"
        self.optimizer = str(self.optimizer).lower()
        self.amp = str(self.amp).lower()
        self.device = str(self.device).lower()
        self.lr_steps = sorted(int(s) for s in (self.lr_steps or []))
        self.adam_betas = (float(self.adam_betas[0]), float(self.adam_betas[1]))
        if self.checkpoint_dir is not None:
            self.checkpoint_dir = str(self.checkpoint_dir)
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the offending field when a value is out of range."""
        problems: list[str] = []

        def need(cond: bool, msg: str) -> None:
            if not cond:
                problems.append(msg)

        need(self.iterations >= 1, f"iterations must be >= 1, got {self.iterations}")
        need(self.images_per_batch >= 1, f"images_per_batch must be >= 1, got {self.images_per_batch}")
        need(self.optimizer in _OPTIMIZERS, f"optimizer must be one of {_OPTIMIZERS}, got {self.optimizer!r}")
        need(self.lr > 0 and math.isfinite(self.lr), f"lr must be a positive finite number, got {self.lr}")
        need(0 <= self.momentum < 1, f"momentum must be in [0, 1), got {self.momentum}")
        need(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        need(self.warmup_iters >= 0, f"warmup_iters must be >= 0, got {self.warmup_iters}")
        need(0 < self.warmup_factor <= 1, f"warmup_factor must be in (0, 1], got {self.warmup_factor}")
        need(all(s > 0 for s in self.lr_steps), f"lr_steps must be positive iterations, got {self.lr_steps}")
        need(0 < self.gamma <= 1, f"gamma must be in (0, 1], got {self.gamma}")
        need(
            self.grad_clip_norm is None or self.grad_clip_norm > 0,
            f"grad_clip_norm must be > 0 or null, got {self.grad_clip_norm}",
        )
        need(self.amp in _AMP, f"amp must be one of {_AMP} (or a bool), got {self.amp!r}")
        need(self.num_workers >= 0, f"num_workers must be >= 0, got {self.num_workers}")
        need(self.checkpoint_every >= 0, f"checkpoint_every must be >= 0, got {self.checkpoint_every}")
        need(self.keep_last_n >= 1, f"keep_last_n must be >= 1, got {self.keep_last_n}")
        need(self.validate_every >= 0, f"validate_every must be >= 0, got {self.validate_every}")
        need(self.log_every >= 1, f"log_every must be >= 1, got {self.log_every}")
        need(self.num_processes >= 1, f"num_processes must be >= 1, got {self.num_processes}")
        need(self.device in _DEVICES, f"device must be one of {_DEVICES}, got {self.device!r}")
        need(
            self.dist_backend in ("auto", "gloo", "nccl"),
            f"dist_backend must be auto|gloo|nccl, got {self.dist_backend!r}",
        )
        if problems:
            raise ValueError("invalid TrainerConfig: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None, *, source: str = "trainer config") -> TrainerConfig:
        """Build from a (YAML-loaded) mapping through :func:`unipan_pipeline.params.from_params`; unknown keys
        raise ``ValueError`` listing the valid ones.

        Args:
            data: mapping of field names to values (``None`` -> all defaults).
            source: where the mapping came from (e.g. ``"conf/base/parameters_train.yml: trainer"``),
                quoted in error messages.
        """
        return from_params(cls, data, source)

    def to_dict(self) -> dict[str, Any]:
        """Plain-python dict (YAML/JSON serialisable), the inverse of :meth:`from_dict`."""
        out = dataclasses.asdict(self)
        out["adam_betas"] = list(self.adam_betas)
        return out

    def per_process_batch(self, world_size: int) -> int:
        """Images per process and step; raises when the global batch does not split evenly."""
        if self.images_per_batch % world_size != 0:
            raise ValueError(
                f"images_per_batch={self.images_per_batch} is not divisible by world size {world_size}"
            )
        return self.images_per_batch // world_size

    @property
    def checkpoint_path(self) -> Path | None:
        """``checkpoint_dir`` as a Path (or None)."""
        return None if self.checkpoint_dir is None else Path(self.checkpoint_dir)
