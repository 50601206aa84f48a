"""torchvision's mask head and mask predictor, run in the caller's low precision on RoI batches padded to a
fixed set of sizes while training.

The detector runs in fp32 under autocast (see :meth:`.DetectionSubmodule.forward`), but its mask branch is
four convolutions over every RoI at 14x14 and 28x28: on a CPU it was the largest part of a trained demo
step after the backbone (measured: 240 ms fp32 against 120 ms bf16 forward + backward for 64 RoIs). Two
things make it cheap without touching the box coordinates that must stay in fp32:

* the dtype: the detector runs the mask branch inside :func:`mask_branch_precision` with the caller's autocast
  dtype (fp32 without autocast), and the convolutions run under that autocast; outputs are returned in the
  input's dtype (fp32).
* ``bucket``: with gradients on (training), the RoI batch is zero-padded to a multiple of ``bucket`` and the
  padding dropped afterwards. The number of positive RoIs changes at every step, and every new batch size
  costs oneDNN a new kernel; with buckets a few sizes recur. The padded rows are zeros, independent of the
  others (no normalisation across RoIs), and get no gradient, so the result is the same computation.

Parameter names are torchvision's, so state dicts of either class load into the other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch
from torch import Tensor
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

__all__ = ["MaskHead", "MaskPredictor", "caller_autocast_dtype", "mask_branch_precision"]

DEFAULT_BUCKET = 32
"""RoI batches are padded to a multiple of this many RoIs in training."""

_COMPUTE_DTYPE: ContextVar[torch.dtype | None] = ContextVar("mask_branch_dtype", default=None)


def caller_autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype of the autocast the caller runs under on ``device_type``, ``None`` when it is off."""
    if not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


@contextmanager
def mask_branch_precision(dtype: torch.dtype | None) -> Iterator[None]:
    """Run the mask branch (:class:`MaskHead`, :class:`MaskPredictor`) in ``dtype`` inside this block
    (``None``: fp32, also the default outside any block)."""
    token = _COMPUTE_DTYPE.set(dtype)
    try:
        yield
    finally:
        _COMPUTE_DTYPE.reset(token)


def _run_padded(forward: Callable[[Tensor], Tensor], x: Tensor, bucket: int) -> Tensor:
    dtype = _COMPUTE_DTYPE.get()
    n = x.shape[0]
    pad = (-n) % bucket if bucket > 0 and torch.is_grad_enabled() and n > 0 else 0
    if pad:
        x = torch.cat([x, x.new_zeros((pad, *x.shape[1:]))])
    with torch.autocast(device_type=x.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        y = forward(x)
    return (y[:n] if pad else y).to(x.dtype)


class _PaddedRoIBatches:
    """Mixin of a torchvision RoI module: its forward in :func:`mask_branch_precision`'s dtype, on RoI
    batches padded to a multiple of ``bucket`` while training (module docstring)."""

    def __init__(self, *args: Any, bucket: int = DEFAULT_BUCKET, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bucket = bucket

    def forward(self, x: Tensor) -> Tensor:
        return _run_padded(super().forward, x, self.bucket)  # type: ignore[misc]


class MaskHead(_PaddedRoIBatches, MaskRCNNHeads):
    """torchvision's ``MaskRCNNHeads`` (same layers and parameters), padded and in the mask branch's dtype."""


class MaskPredictor(_PaddedRoIBatches, MaskRCNNPredictor):
    """torchvision's ``MaskRCNNPredictor`` (same layers and parameters), padded and in the mask branch's
    dtype."""
