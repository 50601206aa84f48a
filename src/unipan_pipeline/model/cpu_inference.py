"""The one rule of the inference-only fast paths: on a CPU without autograd.

Some computations have a cheaper exact form when nothing is differentiated and the tensors live on a CPU:
the dynamic potential built box by box (:mod:`.dynamic_potential`) and the affinity's phi0 / phi1 as matrix
products (:mod:`.instance_affinity`). Training and GPUs keep the dense forms, so seeded training runs do not
change.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["cpu_inference"]


def cpu_inference(*tensors: Tensor | None) -> bool:
    """Whether every given tensor (``None`` ignored) is on a CPU and no gradient is taken through any."""
    present = [t for t in tensors if t is not None]
    return all(t.device.type == "cpu" for t in present) and not (
        torch.is_grad_enabled() and any(t.requires_grad for t in present)
    )
