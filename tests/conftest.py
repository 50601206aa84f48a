"""Shared fixtures: a tiny category map and a synthetic panoptic batch following the batch contract."""

from __future__ import annotations

import pytest
import torch

from unipan_pipeline.categories import IGNORE_INDEX, Category, CategoryMap


@pytest.fixture
def tiny_categories() -> CategoryMap:
    """3 stuff + 2 thing classes with COCO-like dataset ids (gaps, not equal to train ids)."""
    spec = [
        (10, "sky", False),
        (20, "road", False),
        (30, "grass", False),
        (41, "car", True),
        (57, "person", True),
    ]
    return CategoryMap(
        "tiny",
        [Category(id=i, name=n, isthing=t, color=(k, k, k), train_id=k) for k, (i, n, t) in enumerate(spec)],
    )


def make_panoptic_sample(
    height: int,
    width: int,
    instances: list[tuple[int, int, int, int, int]],
    seed: int = 0,
    num_stuff: int = 3,
) -> tuple[torch.Tensor, dict]:
    """Image + target (batch contract) with stuff bands and rectangular thing instances.

    ``instances``: (x1, y1, x2, y2, train_id) drawn in order (later ones occlude earlier ones). The image
    encodes the classes in its colour so the task is learnable.
    """
    g = torch.Generator().manual_seed(seed)
    seg_classes: list[int] = []
    pan = torch.zeros(height, width, dtype=torch.int64)
    bands = torch.linspace(0, height, num_stuff + 1).long()
    for s in range(num_stuff):
        pan[bands[s] : bands[s + 1]] = len(seg_classes) + 1
        seg_classes.append(s)
    pan[:2] = 0  # a void strip
    for x1, y1, x2, y2, c in instances:
        pan[y1:y2, x1:x2] = len(seg_classes) + 1
        seg_classes.append(c)
    classes = torch.tensor(seg_classes, dtype=torch.int64)
    semantic = torch.where(pan > 0, classes[(pan - 1).clamp(min=0)], torch.full_like(pan, IGNORE_INDEX))
    palette = torch.rand(len(seg_classes) + 1, 3, generator=g)
    palette[0] = 0
    image = palette[pan].permute(2, 0, 1) * 2 - 1 + 0.1 * torch.randn(3, height, width, generator=g)
    boxes, labels, masks = [], [], []
    for k in range(num_stuff, len(seg_classes)):
        m = pan == k + 1
        if not m.any():
            continue
        ys, xs = torch.nonzero(m, as_tuple=True)
        boxes.append([xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1])
        labels.append(seg_classes[k] - num_stuff + 1)
        masks.append(m.to(torch.uint8))
    target = {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "masks": torch.stack(masks) if masks else torch.zeros(0, height, width, dtype=torch.uint8),
        "semantic": semantic,
        "panoptic": pan,
        "segment_classes": classes,
        "segment_iscrowd": torch.zeros(len(seg_classes), dtype=torch.bool),
        "image_id": f"synthetic_{seed}",
        "orig_size": (height, width),
    }
    return image.float(), target


@pytest.fixture
def synthetic_batch() -> tuple[list[torch.Tensor], list[dict]]:
    """Two images of different sizes (64x96 and 80x72) with 3 and 2 thing instances."""
    a = make_panoptic_sample(64, 96, [(8, 10, 40, 50, 3), (30, 20, 70, 60, 4), (60, 5, 90, 30, 3)], seed=1)
    b = make_panoptic_sample(80, 72, [(5, 40, 40, 78, 4), (35, 10, 70, 45, 3)], seed=2)
    return [a[0], b[0]], [a[1], b[1]]
