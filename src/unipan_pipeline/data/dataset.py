"""Training / evaluation Dataset over an ingested panoptic data set, and its collate function.

Each item is ``(image, target)`` following the project's batch contract:

* ``image``: float32 ``[3, H, W]``, RGB normalised with the configured mean/std.
* ``target["boxes"]`` float32 ``[N, 4]`` xyxy (pixel edges: a one-pixel object at column x spans
  ``[x, x + 1]``), ``["labels"]`` int64 ``[N]`` detector labels ``1..N_th``, ``["masks"]`` uint8
  ``[N, H, W]`` - the non-crowd thing segments only (``[0, 4]`` / ``[0]`` / ``[0, H, W]`` when none).
* ``target["semantic"]`` int64 ``[H, W]`` train ids, 255 on void (and padding).
* ``target["panoptic"]`` int64 ``[H, W]`` segment INDEX map: 0 = void, k >= 1 is element k - 1 of
  ``segment_classes`` (int64 train ids) / ``segment_iscrowd`` (bool).
* ``target["image_id"]`` str, ``target["orig_size"]`` ``(H, W)`` before augmentation.

Crowd regions (``iscrowd=1``, COCO groups): they are *not* detector instances (no box/mask/label) but stay
segments of the panoptic target, flagged by ``segment_iscrowd`` so the panoptic matching loss (eq. 5) can
ignore their pixels, as in the COCO panoptic protocol where crowd regions are excluded from matching. The
semantic target keeps their class, as Panoptic FPN does for its semantic branch.

Segments whose pixels all vanish under the crop are dropped and the remaining ones renumbered 1..S, so
every listed segment is present in the panoptic map.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from unipan_pipeline.categories import IGNORE_INDEX, CategoryMap
from unipan_pipeline.data.store import load_ingested, read_panoptic_png, read_rgb_image
from unipan_pipeline.data.transforms import PanopticTransform, TransformConfig

Target = dict[str, object]


def ids_to_index(id_map: np.ndarray, segment_ids: Sequence[int]) -> np.ndarray:
    """Map a uint32 segment-id map to an int64 index map: ``segment_ids[k]`` -> ``k + 1``, others -> 0."""
    index = np.zeros(id_map.shape, dtype=np.int64)
    if len(segment_ids) == 0:
        return index
    ids = np.asarray(segment_ids, dtype=np.uint32)
    order = np.argsort(ids)
    sorted_ids = ids[order]
    pos = np.searchsorted(sorted_ids, id_map).clip(0, len(ids) - 1)
    hit = sorted_ids[pos] == id_map
    index[hit] = order[pos[hit]] + 1
    return index


def masks_to_boxes(masks: Tensor) -> Tensor:
    """Tight xyxy boxes of non-empty binary masks ``[N, H, W]`` (x1/y1 exclusive edges, never degenerate)."""
    if masks.shape[0] == 0:
        return torch.zeros((0, 4), dtype=torch.float32)
    cols = masks.any(dim=1)  # [N, W]
    rows = masks.any(dim=2)  # [N, H]
    w, h = cols.shape[1], rows.shape[1]
    ar_w = torch.arange(w)
    ar_h = torch.arange(h)
    x0 = torch.where(cols, ar_w, w).min(dim=1).values
    x1 = torch.where(cols, ar_w, -1).max(dim=1).values + 1
    y0 = torch.where(rows, ar_h, h).min(dim=1).values
    y1 = torch.where(rows, ar_h, -1).max(dim=1).values + 1
    return torch.stack([x0, y0, x1, y1], dim=1).float()


def build_target(
    index: Tensor,
    segment_classes: Tensor,
    segment_iscrowd: Tensor,
    categories: CategoryMap,
    *,
    image_id: str,
    orig_size: tuple[int, int],
) -> Target:
    """Derive the full target from an (augmented) index map and its per-segment classes / crowd flags."""
    h, w = index.shape
    counts = torch.bincount(index.flatten(), minlength=len(segment_classes) + 1)
    present = torch.nonzero(counts[1:]).flatten() + 1
    remap = torch.zeros(len(segment_classes) + 1, dtype=torch.int64)
    remap[present] = torch.arange(1, len(present) + 1)
    index = remap[index]
    classes = segment_classes[present - 1]
    crowd = segment_iscrowd[present - 1]
    sem_lut = torch.cat([torch.tensor([IGNORE_INDEX]), classes])
    semantic = sem_lut[index]
    is_thing = classes >= categories.num_stuff
    inst = torch.nonzero(is_thing & ~crowd).flatten()
    masks = (index[None] == (inst + 1)[:, None, None]).to(torch.uint8)
    boxes = masks_to_boxes(masks.bool())
    labels = classes[inst] - categories.num_stuff + 1
    return {
        "boxes": boxes,
        "labels": labels.to(torch.int64),
        "masks": masks.reshape(len(inst), h, w),
        "semantic": semantic,
        "panoptic": index,
        "segment_classes": classes.to(torch.int64),
        "segment_iscrowd": crowd.to(torch.bool),
        "image_id": image_id,
        "orig_size": orig_size,
    }


class PanopticDataset(Dataset):
    """Items of one split of an ingested data set (see the module docstring for the target format).

    Args:
        root: the ingested data set folder (e.g. ``data/03_primary/cityscapes``).
        split: ``"train"``, ``"val"``, ...
        categories: category map; defaults to ``<root>/categories.json``. Must contain every category id.
        transforms: joint image / index-map transform; defaults to the deterministic evaluation path
            (normalisation only).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        categories: CategoryMap | None = None,
        transforms: PanopticTransform | None = None,
    ) -> None:
        data = load_ingested(root, split)
        self.root = Path(root).absolute()
        self.split = split
        self.categories = categories if categories is not None else data.categories
        self.transforms = (
            transforms if transforms is not None else PanopticTransform(TransformConfig(train=False))
        )
        self._data = data
        lut = self.categories.dataset_to_train_lut()
        self._segments: list[tuple[list[int], list[int], list[bool]]] = []
        for i in range(len(data.images)):
            segs = data.segments(i)
            cids = [int(s["category_id"]) for s in segs]
            bad = [c for c in cids if c >= len(lut) or lut[c] == IGNORE_INDEX]
            if bad:
                raise ValueError(
                    f"{data.json_path}: image {data.images[i]['id']!r} uses category ids {bad} unknown to "
                    f"the category map {self.categories!r}"
                )
            self._segments.append(
                (
                    [int(s["id"]) for s in segs],
                    [int(lut[c]) for c in cids],
                    [bool(s.get("iscrowd", 0)) for s in segs],
                )
            )

    def __len__(self) -> int:
        return len(self._data.images)

    @property
    def image_ids(self) -> list[str]:
        return [str(im["id"]) for im in self._data.images]

    def load(self, i: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Un-augmented ``(image uint8 [3,H,W], index int64 [H,W], segment_classes, segment_iscrowd)``."""
        image = read_rgb_image(self._data.image_path(i))
        id_map = read_panoptic_png(self._data.png_path(i))
        if id_map.shape != image.shape[:2]:
            raise ValueError(
                f"{self._data.png_path(i)}: PNG size {id_map.shape} differs from image "
                f"{self._data.image_path(i)} size {image.shape[:2]}"
            )
        ids, classes, crowd = self._segments[i]
        index = torch.from_numpy(ids_to_index(id_map, ids))
        img = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return img, index, torch.tensor(classes, dtype=torch.int64), torch.tensor(crowd, dtype=torch.bool)

    def __getitem__(self, i: int) -> tuple[Tensor, Target]:
        img, index, classes, crowd = self.load(i)
        orig_size = (int(index.shape[0]), int(index.shape[1]))
        image, index = self.transforms(img, index)
        image_id = str(self._data.images[i]["id"])
        target = build_target(index, classes, crowd, self.categories, image_id=image_id, orig_size=orig_size)
        return image, target


def collate_panoptic(batch: Sequence[tuple[Tensor, Target]]) -> tuple[list[Tensor], list[Target]]:
    """Keep images and targets as lists (sizes may differ within a batch)."""
    images = [item[0] for item in batch]
    targets = [item[1] for item in batch]
    return images, targets
