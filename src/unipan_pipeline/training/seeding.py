"""Seeding and determinism: the run's seed, deterministic kernels, and RNG isolation for side work."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy's global RNG and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)
    torch.manual_seed(seed)


def configure_determinism(deterministic: bool) -> None:
    """With ``deterministic``: deterministic kernels (``warn_only``), no cuDNN autotuner, fixed cuBLAS
    workspace. Without: torch's global settings are left as they are.

    ``warn_only`` because some CUDA kernels of the detector (e.g. RoIAlign backward, index_put with
    accumulate) have no deterministic implementation: they warn and stay non-deterministic on GPU. On CPU
    the toy tests are bit-exact either way.
    """
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


@contextlib.contextmanager
def preserved_rng(device: torch.device) -> Iterator[None]:
    """Keep the enclosed work (validation) from consuming the training RNG streams (python, numpy, torch)."""
    py, npy = random.getstate(), np.random.get_state()
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)
