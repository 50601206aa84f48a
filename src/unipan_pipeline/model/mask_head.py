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
    dtype, computed as two matrix products.

    Its 2x2 stride-2 transposed convolution writes each input cell to its own 2x2 block, and its 1x1
    logits are a per-cell linear map: on RoI rows ``[N*h*w, C]`` they are ``addmm`` with the same weights,
    then one reshape to ``[N, K, 2h, 2w]``. The values are the convolutions' (bit-identical in bf16 on
    this CPU, fp32 rounding otherwise), and a forward + backward costs 37 ms instead of 61 ms for 64 RoIs
    of 128x14x14 in bf16: oneDNN's kernels for a transposed and a 9-channel 1x1 convolution are slow on
    these shapes."""

    def forward(self, x: Tensor) -> Tensor:
        return _run_padded(self._as_matrix_products, x, self.bucket)

    def _as_matrix_products(self, x: Tensor) -> Tensor:
        deconv, logits = self.conv5_mask, self.mask_fcn_logits
        n, c, h, w = x.shape
        k = logits.out_channels
        # [C_in, C_out, 2, 2] -> [C_in, (2, 2, C_out)]: column (a, b, o) is output channel o at offset (a, b)
        up_weight = deconv.weight.permute(0, 2, 3, 1).reshape(c, -1)
        rows = x.permute(0, 2, 3, 1).reshape(n * h * w, c)
        up = torch.relu(torch.addmm(deconv.bias.repeat(4), rows, up_weight))  # [N*h*w, 2*2*C_out]
        out = torch.addmm(logits.bias, up.reshape(-1, deconv.out_channels), logits.weight.flatten(1).t())
        # [(n, y, x, a, b), K] -> [n, K, (y, a), (x, b)]
        return out.view(n, h, w, 2, 2, k).permute(0, 5, 1, 3, 2, 4).reshape(n, k, 2 * h, 2 * w)
