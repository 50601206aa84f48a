"""Multi-scale RoIAlign on every CPU thread: torchvision's ``MultiScaleRoIAlign`` with the RoIs split across
threads.

torchvision's CPU RoIAlign kernels, forward and backward, loop over the RoIs on one thread: on this
2-core machine, 256 RoIs of a 4x128x32x64 level take 486 ms (forward + backward) with one torch thread and
533 ms with two, and the detector's three poolers (box pass, mask pass, the panoptic head's mask pass) were
a quarter of a trained demo step. Here every level's RoIs are cut into contiguous chunks that run in a
thread pool, one chunk per torch thread (the op releases the GIL); the backward pass does the same and adds
the chunks' gradients of each level in a fixed order. The values are torchvision's own kernels' (the
forward pass is bit-identical; the gradients differ only in the order of the additions), and a run stays
deterministic for a given number of threads.

Used on CPU tensors in fp32 with more than one torch thread; otherwise (CUDA, one thread, other dtypes,
tracing) it is torchvision's ``MultiScaleRoIAlign`` unchanged.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
import torchvision
from torch import Tensor
from torch.autograd.function import once_differentiable
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.poolers import _convert_to_roi_format, _filter_input, _setup_scales

__all__ = ["ThreadedMultiScaleRoIAlign", "threaded_roi_align"]

MIN_ROIS_PER_CHUNK = 8
"""A level's RoIs are split only into chunks of at least this many (a chunk costs a task and, in the backward
pass, a zeroed gradient of the whole level)."""

_POOL: list[Any] = []  # [(pid, workers, executor)]: one pool per process and thread count


def _executor(workers: int) -> ThreadPoolExecutor:
    """The process's thread pool of ``workers`` threads (a new one after a fork or a change of thread count:
    a forked child has the pool object but not its threads)."""
    if _POOL and _POOL[0][:2] == (os.getpid(), workers):
        return _POOL[0][2]
    if _POOL and _POOL[0][0] == os.getpid():  # the thread count changed: let the old pool's threads end
        _POOL[0][2].shutdown(wait=False)
    _POOL.clear()
    _POOL.append((os.getpid(), workers, ThreadPoolExecutor(workers, thread_name_prefix="roi_align")))
    return _POOL[0][2]


def _chunks(levels: Tensor, num_levels: int, workers: int) -> list[tuple[int, Tensor]]:
    """(level, RoI indices) tasks: each level's RoIs in up to ``workers`` contiguous chunks."""
    tasks = []
    for level in range(num_levels):
        idx = torch.where(levels == level)[0]
        if len(idx) == 0:
            continue
        pieces = max(1, min(workers, len(idx) // MIN_ROIS_PER_CHUNK))
        tasks.extend((level, chunk) for chunk in idx.tensor_split(pieces))
    return tasks


class _ThreadedRoIAlign(torch.autograd.Function):
    """RoIAlign of every RoI on its level's features, the chunks of :func:`_chunks` on a thread pool."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        rois: Tensor,
        levels: Tensor,
        spec: tuple[tuple[int, int], int, list[float], int],
        *features: Tensor,
    ) -> Tensor:
        output_size, sampling_ratio, scales, workers = spec
        tasks = _chunks(levels, len(features), workers)

        def pool(task: tuple[int, Tensor]) -> Tensor:
            level, idx = task
            with torch.no_grad():  # grad mode is per thread: a pool thread would record a needless graph
                return torch.ops.torchvision.roi_align(
                    features[level], rois[idx], scales[level], *output_size, sampling_ratio, False
                )

        result = features[0].new_zeros((len(rois), features[0].shape[1], *output_size))
        for (_, idx), out in zip(tasks, _executor(workers).map(pool, tasks), strict=True):
            result[idx] = out
        ctx.save_for_backward(rois)
        ctx.tasks = tasks
        ctx.spec, ctx.shapes = spec, [f.shape for f in features]
        return result

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        (rois,) = ctx.saved_tensors
        output_size, sampling_ratio, scales, workers = ctx.spec
        shapes = ctx.shapes
        tasks = [t for t in ctx.tasks if ctx.needs_input_grad[3 + t[0]]]

        def grad(task: tuple[int, Tensor]) -> Tensor:
            level, idx = task
            shape = shapes[level]
            with torch.no_grad():
                return torch.ops.torchvision._roi_align_backward(
                    grad_output[idx], rois[idx], scales[level], *output_size, *shape, sampling_ratio, False
                )

        grads: list[Tensor | None] = [None] * len(shapes)
        for (level, _), g in zip(tasks, _executor(workers).map(grad, tasks), strict=True):
            grads[level] = g if grads[level] is None else grads[level].add_(g)
        for level, shape in enumerate(shapes):  # a level without RoIs: zeros, as torchvision's
            if grads[level] is None and ctx.needs_input_grad[3 + level]:
                grads[level] = grad_output.new_zeros(shape)
        return (None, None, None, *grads)


def threaded_roi_align(
    features: list[Tensor],
    rois: Tensor,
    levels: Tensor,
    *,
    output_size: tuple[int, int],
    sampling_ratio: int,
    scales: list[float],
    workers: int | None = None,
) -> Tensor:
    """RoIAlign (``aligned=False``, torchvision's multi-scale pooling) of ``rois`` ``[R, 5]`` (batch index,
    xyxy) on ``features[levels[r]]``, over ``workers`` threads (default: torch's thread count).

    Returns ``[R, C, *output_size]``, equal to ``torchvision.ops.roi_align`` level by level."""
    workers = torch.get_num_threads() if workers is None else workers
    with torch.autocast(device_type="cpu", enabled=False):
        spec = (output_size, sampling_ratio, scales, workers)
        return _ThreadedRoIAlign.apply(rois, levels, spec, *features)


class ThreadedMultiScaleRoIAlign(MultiScaleRoIAlign):
    """torchvision's ``MultiScaleRoIAlign`` (same arguments, levels, scales and values) whose RoIAlign runs on
    every torch thread on a CPU (module docstring)."""

    def forward(
        self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]
    ) -> Tensor:
        x_filtered = _filter_input(x, self.featmap_names)
        workers = torch.get_num_threads()
        threaded = (
            workers > 1
            and len(x_filtered) > 1
            and all(f.device.type == "cpu" and f.dtype == torch.float32 for f in x_filtered)
            and not torchvision._is_tracing()
            and not torch.jit.is_scripting()
        )
        if not threaded:
            return super().forward(x, boxes, image_shapes)
        if self.scales is None or self.map_levels is None:
            self.scales, self.map_levels = _setup_scales(
                x_filtered, image_shapes, self.canonical_scale, self.canonical_level
            )
        rois = _convert_to_roi_format(boxes)
        levels = self.map_levels(boxes)
        size = (int(self.output_size[0]), int(self.output_size[1]))
        return threaded_roi_align(
            x_filtered,
            rois,
            levels,
            output_size=size,
            sampling_ratio=self.sampling_ratio,
            scales=self.scales,
            workers=workers,
        )
