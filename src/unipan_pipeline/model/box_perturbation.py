"""Imperfect boxes on purpose: shrink and shift detections (Fig. 1's truncated objects).

:func:`shrink_and_shift` is the one geometric rule: each side moves inwards by ``f / 2`` of the box's width
/ height, then the box moves by ``r * (w cos t, h sin t)``, and is clipped to the image. Two users:

* :func:`jitter_boxes` - training augmentation (``ModelConfig.train_box_jitter``): every detection given to
  the panoptic head gets its own ``f ~ U(0, max_fraction)``, ``r ~ U(0, f)``, ``t ~ U(0, 2 pi)``, while its
  target stays the whole ground-truth segment. Psi of a cut box lacks the cut-off parts; only the dense
  instance affinity (eq. 4) can bring them back, so the matching loss rewards propagation. With exact boxes
  it does not: trained on ground-truth detections, the affinity switches itself off (P == Psi).
* the robustness experiment (:func:`unipan_pipeline.experiment.robustness.perturb_boxes`): one ``f`` for
  every box at test time.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["jitter_boxes", "shrink_and_shift"]


def shrink_and_shift(
    boxes: Tensor, fraction: Tensor, radius: Tensor, angle: Tensor, image_size: tuple[int, int]
) -> Tensor:
    """Boxes shrunk by ``fraction`` of their size and moved by ``radius`` of it in direction ``angle``.

    Args:
        boxes: [D, 4] xyxy image pixels.
        fraction, radius, angle: [D] (or broadcastable), float64 on any device; ``radius <= fraction < 1``
            keeps a box that is inside the image inside, with a positive size.
        image_size: (H, W) to clip to.

    Returns:
        [D, 4] of ``boxes``' dtype and device.
    """
    b = boxes.to(torch.float64)
    fraction, radius, angle = (v.to(b.device, torch.float64) for v in (fraction, radius, angle))
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    dx = radius * torch.cos(angle) * w
    dy = radius * torch.sin(angle) * h
    x1 = b[:, 0] + 0.5 * fraction * w + dx
    x2 = b[:, 2] - 0.5 * fraction * w + dx
    y1 = b[:, 1] + 0.5 * fraction * h + dy
    y2 = b[:, 3] - 0.5 * fraction * h + dy
    height, width = image_size
    out = torch.stack([x1.clamp(0, width), y1.clamp(0, height), x2.clamp(0, width), y2.clamp(0, height)], 1)
    return out.to(boxes.dtype)


def jitter_boxes(
    boxes: Tensor,
    max_fraction: float,
    image_size: tuple[int, int],
    generator: torch.Generator | None = None,
) -> Tensor:
    """Training-time box jitter: box ``i`` shrunk by ``f_i ~ U(0, max_fraction)`` of its size and shifted by
    ``r_i ~ U(0, f_i)`` of it in a random direction (:func:`shrink_and_shift`); ``max_fraction = 0`` or no
    boxes returns a copy. Draws from ``generator`` (CPU; default: torch's global generator, which the
    trainer seeds, so a seeded run jitters identically)."""
    if not 0.0 <= max_fraction < 0.5:
        raise ValueError(f"jitter_boxes: max_fraction={max_fraction} must be in [0, 0.5)")
    d = boxes.shape[0]
    if max_fraction == 0.0 or d == 0:
        return boxes.clone()
    draws = torch.rand(3, d, generator=generator, dtype=torch.float64)
    fraction = draws[0] * max_fraction
    return shrink_and_shift(boxes, fraction, draws[1] * fraction, draws[2] * (2 * math.pi), image_size)
