"""Mixed precision: which autocast dtype a run uses on this machine, and the autocast context itself.

``amp`` (a :class:`~unipan_pipeline.training.config.TrainerConfig` field) is one of

* ``"off"``: fp32 everywhere;
* ``"bf16"``: ``torch.autocast`` with bfloat16 on CPU or CUDA, fp32 master weights, no loss scaling (bf16
  has fp32's exponent range);
* ``"fp16"``: float16 autocast with a ``GradScaler``, CUDA only (on a CPU it is ignored with a warning);
* ``"auto"``: bf16 where the hardware computes it natively (CUDA with bf16 support; a CPU with AVX512-BF16
  or AMX), else fp16 on CUDA and fp32 on a CPU. On a CPU without native bf16, bf16 is emulated and slower
  than fp32, which is why ``auto`` does not pick it there.

Reductions that overflow or lose precision in half precision (the affinity's sum over all cells, the
matching loss's ``log``) run in fp32 inside the model whatever is chosen here.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from typing import Any

import torch

log = logging.getLogger(__name__)

AMP_MODES = ("off", "bf16", "fp16", "auto")


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively (CUDA: ``is_bf16_supported``; CPU: AVX512-BF16/AMX)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)
    return False


def resolve_amp(mode: str, device: torch.device) -> str:
    """The autocast mode a run with ``amp=mode`` uses on ``device``: ``"off"``, ``"bf16"`` or ``"fp16"``."""
    if mode not in AMP_MODES:
        raise ValueError(f"amp must be one of {AMP_MODES}, got {mode!r}")
    if mode == "auto":
        if native_bf16(device):
            return "bf16"
        return "fp16" if device.type == "cuda" else "off"
    if mode == "fp16" and device.type != "cuda":
        warnings.warn(
            f"amp='fp16' ignored on {device.type}: float16 autocast is used on CUDA only", stacklevel=3
        )
        return "off"
    if mode == "bf16" and device.type == "cpu" and not native_bf16(device):
        warnings.warn(
            "amp='bf16' on a CPU without native bf16 (AVX512-BF16/AMX): it is emulated and slower than fp32; "
            "use amp: auto to let the machine decide",
            stacklevel=3,
        )
    return mode


class Autocast:
    """``torch.autocast`` for the resolved mode, plus the ``GradScaler`` that fp16 needs."""

    def __init__(self, mode: str, device: torch.device) -> None:
        self.mode = resolve_amp(mode, device)
        self.enabled = self.mode != "off"
        self.device_type = device.type
        self.dtype = torch.bfloat16 if self.mode == "bf16" else torch.float16
        self.scaler = torch.amp.GradScaler("cuda") if self.mode == "fp16" else None
        if mode != self.mode or mode == "auto":
            log.info("mixed precision: amp=%s resolves to %s on %s", mode, self.mode, device)

    def __call__(self) -> contextlib.AbstractContextManager[Any]:
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)
