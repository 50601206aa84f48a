"""Joint augmentation of an image and its panoptic segment-index map.

All geometric operations act on the pair (RGB image, segment INDEX map) *before* any target is derived, so
masks, boxes and the semantic map are always recomputed from the augmented index map and can never disagree
with it (boxes of instances cut by a crop are tight, vanished instances disappear, no degenerate boxes).

Training protocols (sec. 4 of the paper follows Panoptic FPN [12]):

* Cityscapes: random scale in ``scale_range`` (0.5-2.0), then a random ``crop_size`` crop (512x1024 in
  the paper configuration), padded with void / mean colour where the scaled image is smaller.
* COCO: shorter side uniformly random in ``min_size_range`` (640-800), longer side at most ``max_size``
  (1333).
* Both: horizontal flip with probability ``hflip_prob`` (0.5).

Evaluation: no augmentation; optionally a fixed resize of the shorter side (``eval_min_size``, capped by
``eval_max_size``). Images are then normalised with ``mean``/``std`` (ImageNet by default).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from unipan_pipeline.params import from_params

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class TransformConfig:
    """Knobs of :class:`PanopticTransform` (all set from ``conf/``).

    Attributes:
        train: random augmentation on (True) or the deterministic evaluation path (False).
        scale_range: random scale factor range (Cityscapes ``(0.5, 2.0)``); None = no random scale.
        crop_size: ``(h, w)`` random crop after scaling, padded if the image is smaller; None = no crop.
        min_size_range: shorter side drawn uniformly from ``[lo, hi]`` (COCO ``(640, 800)``); None = off.
        max_size: cap of the longer side when ``min_size_range`` is used (COCO 1333).
        base_scale: fixed resize factor applied first in both modes (e.g. 0.25 for a CPU demo).
        hflip_prob: probability of a horizontal flip (training only).
        eval_min_size / eval_max_size: fixed shorter-side resize (and longer-side cap) in evaluation.
        mean / std: per-channel normalisation of the [0, 1] RGB image.
    """

    train: bool = True
    scale_range: tuple[float, float] | None = None
    crop_size: tuple[int, int] | None = None
    min_size_range: tuple[int, int] | None = None
    max_size: int | None = None
    base_scale: float = 1.0
    hflip_prob: float = 0.5
    eval_min_size: int | None = None
    eval_max_size: int | None = None
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @classmethod
    def from_params(
        cls, params: Mapping[str, Any] | None, train: bool, *, where: str = "augment"
    ) -> TransformConfig:
        """Build from a parameters dict through :func:`unipan_pipeline.params.from_params` (unknown keys
        raise, so typos in conf are caught); ``train`` decides the mode whatever the dict says."""
        return from_params(cls, {**(params or {}), "train": train}, where, noun="augmentation parameter")


def _shorter_side_scale(h: int, w: int, size: float, max_size: int | None) -> float:
    scale = size / min(h, w)
    if max_size is not None and max(h, w) * scale > max_size:
        scale = max_size / max(h, w)
    return scale


def _resize(image: Tensor, index: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    h, w = index.shape
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    if size == (h, w):
        return image, index
    image = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=scale < 1)[
        0
    ]
    index = F.interpolate(index[None, None].float(), size=size, mode="nearest-exact")[0, 0].long()
    return image, index


class PanopticTransform:
    """Callable ``(image uint8 [3,H,W], index int64 [H,W]) -> (image float32 normalised, index)``.

    Randomness comes from torch's global generator (seeded per DataLoader worker by PyTorch), so the object
    holds no state and pickles trivially.
    """

    def __init__(self, config: TransformConfig) -> None:
        self.config = config

    def __repr__(self) -> str:
        return f"PanopticTransform({self.config})"

    def __call__(self, image: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
        cfg = self.config
        if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"expected a uint8 [3,H,W] image, got {image.dtype} {tuple(image.shape)}")
        if index.shape != image.shape[1:]:
            raise ValueError(f"index map {tuple(index.shape)} does not match image {tuple(image.shape)}")
        h, w = index.shape
        scale = cfg.base_scale
        if cfg.train:
            if cfg.min_size_range is not None:
                lo, hi = cfg.min_size_range
                size = int(torch.randint(int(lo), int(hi) + 1, ()).item())
                cap = None if cfg.max_size is None else cfg.max_size * cfg.base_scale
                scale = _shorter_side_scale(h, w, size * cfg.base_scale, cap)
            if cfg.scale_range is not None:
                lo_s, hi_s = cfg.scale_range
                scale *= float(lo_s + (hi_s - lo_s) * torch.rand(()).item())
        elif cfg.eval_min_size is not None:
            cap = None if cfg.eval_max_size is None else cfg.eval_max_size * cfg.base_scale
            scale = _shorter_side_scale(h, w, cfg.eval_min_size * cfg.base_scale, cap)
        image = image.float().div_(255.0)
        if not math.isclose(scale, 1.0):
            image, index = _resize(image, index, scale)
            image = image.clamp_(0.0, 1.0)
        if cfg.train and cfg.hflip_prob > 0 and torch.rand(()).item() < cfg.hflip_prob:
            image, index = image.flip(-1), index.flip(-1)
        mean = torch.tensor(cfg.mean, dtype=image.dtype)[:, None, None]
        std = torch.tensor(cfg.std, dtype=image.dtype)[:, None, None]
        image = (image - mean) / std
        if cfg.train and cfg.crop_size is not None:
            image, index = self._pad_and_crop(image, index, cfg.crop_size)
        return image.contiguous(), index.contiguous()

    @staticmethod
    def _pad_and_crop(image: Tensor, index: Tensor, crop: tuple[int, int]) -> tuple[Tensor, Tensor]:
        ch, cw = int(crop[0]), int(crop[1])
        h, w = index.shape
        ph, pw = max(0, ch - h), max(0, cw - w)
        if ph or pw:  # pad bottom/right: image with the mean colour (0 after normalisation), index with void
            image = F.pad(image, (0, pw, 0, ph), value=0.0)
            index = F.pad(index, (0, pw, 0, ph), value=0)
            h, w = index.shape
        y0 = int(torch.randint(0, h - ch + 1, ()).item())
        x0 = int(torch.randint(0, w - cw + 1, ()).item())
        return image[:, y0 : y0 + ch, x0 : x0 + cw], index[y0 : y0 + ch, x0 : x0 + cw]
