"""torchvision's mask head and mask predictor, run in the caller's low precision on RoI batches padded to a
fixed set of sizes while training.

The detector runs in fp32 under autocast (see :meth:`.DetectionSubmodule.forward`), but its mask branch is
four convolutions over every RoI at 14x14 and 28x28: on a CPU it was the largest part of a trained demo
step after the backbone (measured: 240 ms fp32 against 120 ms bf16 forward + backward for 64 RoIs). Two
things make it cheap without touching the box coordinates that must stay in fp32:

* ``compute_dtype``: the detector sets it to the caller's autocast dtype (``None`` without autocast), and the
  convolutions run under that autocast; outputs are returned in the input's dtype (fp32).
* ``bucket``: with gradients on (training), the RoI batch is zero-padded to a multiple of ``bucket`` and the
  padding dropped afterwards. The number of positive RoIs changes at every step, and every new batch size
  costs oneDNN a new kernel; with buckets a few sizes recur. The padded rows are zeros, independent of the
  others (no normalisation across RoIs), and get no gradient, so the result is the same computation.

Parameter names are torchvision's, so state dicts of either class load into the other.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

__all__ = ["MaskHead", "MaskPredictor", "caller_autocast_dtype", "set_compute_dtype"]

DEFAULT_BUCKET = 32
"""RoI batches are padded to a multiple of this many RoIs in training."""


def caller_autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype of the autocast the caller runs under on ``device_type``, ``None`` when it is off."""
    if not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


def _run_padded(
    forward: Callable[[Tensor], Tensor], x: Tensor, bucket: int, dtype: torch.dtype | None
) -> Tensor:
    n = x.shape[0]
    pad = (-n) % bucket if bucket > 0 and torch.is_grad_enabled() and n > 0 else 0
    if pad:
        x = torch.cat([x, x.new_zeros((pad, *x.shape[1:]))])
    with torch.autocast(device_type=x.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        y = forward(x)
    return (y[:n] if pad else y).to(x.dtype)


class MaskHead(MaskRCNNHeads):
    """torchvision's ``MaskRCNNHeads`` (same layers and parameters) in ``compute_dtype`` on RoI batches padded
    to a multiple of ``bucket`` while training (module docstring)."""

    def __init__(
        self, in_channels: int, layers: list[int], dilation: int, bucket: int = DEFAULT_BUCKET
    ) -> None:
        super().__init__(in_channels, layers, dilation)
        self.bucket = bucket
        self.compute_dtype: torch.dtype | None = None

    def forward(self, x: Tensor) -> Tensor:
        return _run_padded(super().forward, x, self.bucket, self.compute_dtype)


class MaskPredictor(MaskRCNNPredictor):
    """torchvision's ``MaskRCNNPredictor`` (same layers and parameters) in ``compute_dtype`` on RoI batches
    padded to a multiple of ``bucket`` while training (module docstring)."""

    def __init__(
        self, in_channels: int, dim_reduced: int, num_classes: int, bucket: int = DEFAULT_BUCKET
    ) -> None:
        super().__init__(in_channels, dim_reduced, num_classes)
        self.bucket = bucket
        self.compute_dtype: torch.dtype | None = None

    def forward(self, x: Tensor) -> Tensor:
        return _run_padded(super().forward, x, self.bucket, self.compute_dtype)


def set_compute_dtype(modules: list[nn.Module | None], dtype: torch.dtype | None) -> None:
    """Point the mask branch's modules at the caller's autocast dtype (``None``: fp32)."""
    for m in modules:
        if isinstance(m, MaskHead | MaskPredictor):
            m.compute_dtype = dtype
