"""A tiny model and data set that follow the project's model and batch contracts.

Used by the training tests, the pyfunc tests and as the default of ``benchmarks/loader_throughput.py``
(so they run before / without the real ``unipan_pipeline.model``). Not a panoptic method: the "panoptic"
output simply makes one segment per predicted class.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from unipan_pipeline.categories import IGNORE_INDEX, Category, CategoryMap


def toy_categories(num_stuff: int = 2, num_things: int = 2) -> CategoryMap:
    """A small category map: stuff first, dataset ids = 10 * (train id + 1)."""
    cats = [
        Category(
            id=10 * (i + 1),
            name=f"class{i}",
            isthing=i >= num_stuff,
            color=((50 * i) % 256, (90 * i) % 256, (130 * i) % 256),
            train_id=i,
        )
        for i in range(num_stuff + num_things)
    ]
    return CategoryMap("toy", cats)


@dataclass
class ToyModelConfig:
    """Configuration of :class:`ToyPanopticNet` (mirrors ``ModelConfig.from_dict`` for the pyfunc tests)."""

    width: int = 8
    dropout: float = 0.0
    semantic_loss_weight: float = 1.0
    aux_loss_weight: float = 0.1

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> ToyModelConfig:
        data = dict(data or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"toy model config: unknown key(s) {unknown}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class ToyPanopticNet(nn.Module):
    """Two 3x3 convs + 1x1 classifier; no batch-dependent layers (so DDP splits give identical losses).

    Train mode: ``{"loss_semantic": w_sem * CE, "loss_aux": w_aux * mean(logits^2)}`` where the CE is the
    mean over images of each image's mean pixel CE (invariant to how a batch is split across processes).
    Eval mode: per-image dicts with ``panoptic``, ``segments_info`` and ``semantic`` as in the model contract.
    """

    def __init__(self, cfg: ToyModelConfig, categories: CategoryMap) -> None:
        super().__init__()
        self.cfg = cfg
        self.categories = categories
        self.conv1 = nn.Conv2d(3, cfg.width, 3, padding=1)
        self.conv2 = nn.Conv2d(cfg.width, cfg.width, 3, padding=1)
        self.drop = nn.Dropout2d(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(cfg.width, categories.num_classes, 1)

    def _logits(self, image: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(image[None]))
        x = self.drop(F.relu(self.conv2(x)))
        return self.classifier(x)[0]

    def forward(self, images: Sequence[torch.Tensor], targets: Sequence[dict[str, Any]] | None = None) -> Any:
        logits = [self._logits(im) for im in images]
        if self.training:
            if targets is None:
                raise ValueError("ToyPanopticNet needs targets in train mode")
            ce = torch.stack(
                [
                    F.cross_entropy(lg[None], t["semantic"][None], ignore_index=IGNORE_INDEX)
                    for lg, t in zip(logits, targets, strict=True)
                ]
            ).mean()
            aux = torch.stack([lg.pow(2).mean() for lg in logits]).mean()
            return {
                "loss_semantic": self.cfg.semantic_loss_weight * ce,
                "loss_aux": self.cfg.aux_loss_weight * aux,
            }
        outputs = []
        for lg in logits:
            semantic = lg.argmax(0)
            panoptic = torch.zeros_like(semantic, dtype=torch.int32)
            segments = []
            for seg_id, train_id in enumerate(torch.unique(semantic).tolist(), start=1):
                mask = semantic == train_id
                panoptic[mask] = seg_id
                cat = self.categories.by_dataset_id(self.categories.dataset_id(train_id))
                segments.append(
                    {
                        "id": seg_id,
                        "category_id": cat.id,
                        "isthing": cat.isthing,
                        "score": 1.0,
                        "area": int(mask.sum()),
                    }
                )
            outputs.append({"panoptic": panoptic, "segments_info": segments, "semantic": semantic})
        return outputs


def build_toy_model(cfg: ToyModelConfig | Mapping[str, Any], categories: CategoryMap) -> ToyPanopticNet:
    """Factory with the signature of ``unipan_pipeline.model.build_model``."""
    if not isinstance(cfg, ToyModelConfig):
        cfg = ToyModelConfig.from_dict(cfg)
    return ToyPanopticNet(cfg, categories)


class ToyPanopticDataset(Dataset):
    """Random-rectangle scenes as ``(image [3,H,W] float32, target dict)`` following the batch contract.

    Scene ``i`` is a pure function of ``(seed, i)``; with ``augment`` a random horizontal flip and pixel
    noise are drawn from the *global* torch RNG, like a real augmentation pipeline would.
    """

    def __init__(
        self,
        num_images: int = 16,
        height: int = 16,
        width: int = 16,
        *,
        seed: int = 0,
        augment: bool = True,
        num_stuff: int = 2,
        num_things: int = 2,
    ) -> None:
        self.num_images = num_images
        self.height = height
        self.width = width
        self.seed = seed
        self.augment = augment
        self.categories = toy_categories(num_stuff, num_things)

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        if not 0 <= index < self.num_images:
            raise IndexError(f"toy data set index {index} out of range 0..{self.num_images - 1}")
        g = torch.Generator().manual_seed(self.seed * 100_003 + index)
        h, w, n = self.height, self.width, self.categories.num_classes
        semantic = torch.zeros(h, w, dtype=torch.int64)
        for _ in range(3):
            y0, x0 = (int(v) for v in torch.randint(0, max(1, h - 2), (2,), generator=g))
            y1, x1 = (
                y0 + int(torch.randint(2, max(3, h // 2), (1,), generator=g)),
                x0 + int(torch.randint(2, max(3, w // 2), (1,), generator=g)),
            )
            semantic[y0:y1, x0:x1] = int(torch.randint(0, n, (1,), generator=g))
        palette = torch.linspace(-1.0, 1.0, n)
        image = torch.stack([palette[semantic], palette.flip(0)[semantic], 0.5 * palette[semantic]]).float()
        image = image + 0.1 * torch.randn(3, h, w, generator=g)
        if self.augment:
            if torch.rand(()) < 0.5:
                image, semantic = image.flip(-1), semantic.flip(-1)
            image = image + 0.05 * torch.randn_like(image)
        classes = torch.unique(semantic)
        panoptic = torch.zeros_like(semantic)
        for k, c in enumerate(classes.tolist(), start=1):
            panoptic[semantic == c] = k
        target = {
            "boxes": torch.zeros(0, 4, dtype=torch.float32),
            "labels": torch.zeros(0, dtype=torch.int64),
            "masks": torch.zeros(0, h, w, dtype=torch.uint8),
            "semantic": semantic,
            "panoptic": panoptic,
            "segment_classes": classes.to(torch.int64),
            "segment_iscrowd": torch.zeros(len(classes), dtype=torch.bool),
            "image_id": f"toy_{index:05d}",
            "orig_size": (h, w),
        }
        return image.contiguous(), target


def collate_lists(
    batch: Sequence[tuple[torch.Tensor, dict[str, Any]]],
) -> tuple[list[torch.Tensor], list[dict]]:
    """``[(image, target), ...] -> (images, targets)`` -- the shape of ``collate_panoptic``'s output."""
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)


def build_toy_dataset(
    num_images: int = 64, height: int = 64, width: int = 64, seed: int = 0
) -> ToyPanopticDataset:
    """Factory used by the throughput benchmark's defaults."""
    return ToyPanopticDataset(num_images, height, width, seed=seed)


def build_toy_model_default() -> ToyPanopticNet:
    """Zero-argument factory used by the throughput benchmark's defaults."""
    return build_toy_model(ToyModelConfig(width=16), toy_categories())
