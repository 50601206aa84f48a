"""Multi-scale RoIAlign for CPUs: torchvision's ``MultiScaleRoIAlign`` with the RoIs split across threads, and
as matrix products on small levels.

torchvision's CPU RoIAlign kernels, forward and backward, loop over the RoIs on one thread: on this
2-core machine, 256 RoIs of a 4x128x32x64 level take 486 ms (forward + backward) with one torch thread and
533 ms with two, and the detector's three poolers (box pass, mask pass, the panoptic head's mask pass) were
a quarter of a trained demo step. Here every level's RoIs are cut into contiguous chunks that run in a
thread pool, one chunk per torch thread (the op releases the GIL); the backward pass does the same and adds
the chunks' gradients of each level in a fixed order. The values are torchvision's own kernels' (the
forward pass is bit-identical; the gradients differ only in the order of the additions), and a run stays
deterministic for a given number of threads.

On a small level (at most ``SEPARABLE_MAX_CELLS`` cells, e.g. every level of the demo's 128x256 images)
the RoIs are pooled as matrix products instead (:func:`separable_roi_align`). RoIAlign's bilinear samples,
averaged over a bin, are a product of a row weight and a column weight, so one RoI's output is
``Wy @ F @ Wx^T`` with ``Wy`` ``[PH, H]`` and ``Wx`` ``[PW, W]``; autograd then gives the backward pass as
two more matrix products instead of torchvision's scalar scatter loop. Measured on a 4x128x32x64 level (2
threads, forward + backward), against torchvision's kernel: 256 RoIs of 7x7 106 -> 51 ms, 64 RoIs of 14x14
92 -> 31 ms. The values equal torchvision's up to fp32 rounding (the same weights, summed in another order).
On a large level the dense product costs more than the loop (``C*H*W*PW`` per RoI), so those keep the
threaded kernels.

Used on CPU tensors in fp32; otherwise (CUDA, other dtypes, tracing) it is torchvision's
``MultiScaleRoIAlign`` unchanged. With one torch thread, large levels use torchvision's kernels directly.
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

__all__ = ["CpuMultiScaleRoIAlign", "separable_roi_align", "threaded_roi_align"]

SEPARABLE_MAX_CELLS = 4096
"""Levels of at most this many cells (H x W) are pooled by :func:`separable_roi_align`."""

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


def _axis_weights(start: Tensor, extent: Tensor, bins: int, grid: int, length: int) -> Tensor:
    """``[R, bins, length]``: for each RoI and bin along one axis, the sum of the bilinear weights of its
    ``grid`` sample points over the ``length`` cells, with torchvision's rules (``aligned=False``): a sample
    beyond ``[-1, length]`` weighs nothing, one in ``[-1, 0]`` is clamped to 0, one past the last cell takes
    the last cell."""
    bin_size = (extent / bins)[:, None, None]
    bin_index = torch.arange(bins, dtype=start.dtype, device=start.device)[None, :, None]
    sample = (torch.arange(grid, dtype=start.dtype, device=start.device) + 0.5)[None, None, :]
    coord = start[:, None, None] + bin_index * bin_size + sample * (bin_size / grid)  # [R, bins, grid]
    inside = ((coord >= -1.0) & (coord <= length)).to(start.dtype)
    coord = coord.clamp(min=0.0)
    low = coord.floor().long()
    at_end = low >= length - 1
    low = low.clamp(max=length - 1)
    high = torch.where(at_end, low, low + 1)
    frac = torch.where(at_end, torch.zeros_like(coord), coord - low.to(coord.dtype))
    weights = start.new_zeros((len(start), bins, length))
    weights.scatter_add_(2, low, (1.0 - frac) * inside)
    weights.scatter_add_(2, high, frac * inside)
    return weights


def separable_roi_align(
    feature: Tensor, rois: Tensor, scale: float, output_size: tuple[int, int], sampling_ratio: int
) -> Tensor:
    """torchvision's ``roi_align(feature, rois, output_size, scale, sampling_ratio, aligned=False)`` as
    ``Wy @ F[b] @ Wx^T`` per RoI (module docstring): ``feature`` ``[B, C, H, W]``, ``rois`` ``[R, 5]`` (batch
    index, xyxy); ``sampling_ratio > 0``. Differentiable in ``feature``; returns ``[R, C, PH, PW]``."""
    if sampling_ratio <= 0:
        raise ValueError(f"separable_roi_align needs a fixed sampling_ratio > 0, got {sampling_ratio}")
    _, channels, height, width = feature.shape
    ph, pw = output_size
    x1, y1, x2, y2 = (rois[:, k] * scale for k in range(1, 5))
    row_weights = _axis_weights(y1, (y2 - y1).clamp(min=1.0), ph, sampling_ratio, height)
    row_weights = row_weights / float(sampling_ratio * sampling_ratio)  # the bin's mean over its samples
    col_weights = _axis_weights(x1, (x2 - x1).clamp(min=1.0), pw, sampling_ratio, width)
    image_of = rois[:, 0].long()
    planes = feature.unbind(0)  # one gradient buffer for the batch, not one per image
    result = feature.new_empty((len(rois), channels, ph, pw))
    for image in torch.unique(image_of).tolist():
        idx = torch.where(image_of == image)[0]
        r = len(idx)
        # contract the columns of the whole plane, then the rows: [C*H, W] @ [W, r*PW] -> [r, H, C*PW]
        cols = planes[image].reshape(channels * height, width) @ col_weights[idx].reshape(r * pw, width).t()
        cols = cols.view(channels, height, r, pw).permute(2, 1, 0, 3).reshape(r, height, channels * pw)
        pooled = torch.bmm(row_weights[idx], cols)  # [r, PH, C*PW]
        result[idx] = pooled.view(r, ph, channels, pw).permute(0, 2, 1, 3)
    return result


class CpuMultiScaleRoIAlign(MultiScaleRoIAlign):
    """torchvision's ``MultiScaleRoIAlign`` (same arguments, levels, scales and values) whose RoIAlign runs on
    every torch thread on a CPU, and as matrix products on small levels (module docstring)."""

    def forward(
        self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]
    ) -> Tensor:
        x_filtered = _filter_input(x, self.featmap_names)
        cpu_fp32 = (
            len(x_filtered) > 1
            and sum(len(b) for b in boxes) > 0
            and all(f.device.type == "cpu" and f.dtype == torch.float32 for f in x_filtered)
            and not torchvision._is_tracing()
            and not torch.jit.is_scripting()
        )
        if not cpu_fp32:
            return super().forward(x, boxes, image_shapes)
        if self.scales is None or self.map_levels is None:
            self.scales, self.map_levels = _setup_scales(
                x_filtered, image_shapes, self.canonical_scale, self.canonical_level
            )
        with torch.autocast(device_type="cpu", enabled=False):
            return self._pool_on_cpu(x_filtered, _convert_to_roi_format(boxes), self.map_levels(boxes))

    def _pool_on_cpu(self, features: list[Tensor], rois: Tensor, levels: Tensor) -> Tensor:
        """``rois`` ``[R, 5]`` pooled on ``features[levels[r]]`` (CPU, fp32): small levels by
        :func:`separable_roi_align`, the others by the threaded kernels (torchvision's with one thread)."""
        size = (int(self.output_size[0]), int(self.output_size[1]))
        ratio, scales = self.sampling_ratio, self.scales
        small = [ratio > 0 and f.shape[-2] * f.shape[-1] <= SEPARABLE_MAX_CELLS for f in features]
        result = features[0].new_empty((len(rois), features[0].shape[1], *size))
        for level, feature in enumerate(features):
            idx = torch.where(levels == level)[0]
            if small[level] and len(idx):
                result[idx] = separable_roi_align(feature, rois[idx], scales[level], size, ratio)
        large = torch.where(~torch.tensor(small, device=levels.device)[levels])[0]
        workers = torch.get_num_threads()
        if len(large) and workers > 1:
            result[large] = threaded_roi_align(
                features,
                rois[large],
                levels[large],
                output_size=size,
                sampling_ratio=ratio,
                scales=scales,
                workers=workers,
            )
        elif len(large):
            for level, feature in enumerate(features):
                idx = large[levels[large] == level]
                if len(idx):
                    result[idx] = torchvision.ops.roi_align(feature, rois[idx], size, scales[level], ratio)
        return result
