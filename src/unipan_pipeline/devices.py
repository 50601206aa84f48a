"""Where tensors go: the one resolver of the ``device`` knobs (``trainer.device``, the evaluation's,
prediction's and serving's ``device``)."""

from __future__ import annotations

import torch

__all__ = ["resolve_device"]


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` -> ``cuda:<local_rank>`` (the process's GPU
    under DistributedDataParallel); ``cuda:N``, ``cpu`` and other torch device strings as given.

    Raises:
        RuntimeError: a CUDA device is requested but CUDA is not available.
    """
    device = str(device).lower()
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available")
    if device == "cuda":
        return torch.device("cuda", local_rank)
    return torch.device(device)
