"""Conversion of the network's per-pixel decisions into a COCO-style panoptic result.

Both inference modes end in an *index map* (0 = void, ``k >= 1`` refers to entry ``k - 1`` of a list of
segment descriptions ``{train_id, isthing, score}``): for argmax inference the entries are the channels of
``P`` (stuff channels, then detections) and the map is ``argmax + 1``; for the heuristic merger the map and
list come from :func:`~unipan_pipeline.model.heuristic_merger.heuristic_merge`.
:func:`panoptic_from_index_map` turns that into the contract's output: an ``int32`` id map with ids
``1..n`` (0 = void), assigned in entry order to the entries that own at least one pixel (entries without
pixels, e.g. a stuff class absent from the image, are dropped), and ``segments_info`` with DATASET category
ids (via :class:`~unipan_pipeline.categories.CategoryMap`), ``isthing``, ``score`` and ``area``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..categories import CategoryMap


def panoptic_from_index_map(
    index_map: Tensor, entries: Sequence[dict], categories: CategoryMap
) -> tuple[Tensor, list[dict]]:
    """Index map + segment descriptions -> (id map int32 [H,W], segments_info).

    Args:
        index_map: [H, W] integer map, 0 = void, ``k >= 1`` = ``entries[k - 1]``.
        entries: dicts with ``train_id`` (int), ``isthing`` (bool) and ``score`` (float).
        categories: id spaces of the data set.

    Returns:
        ``panoptic`` int32 [H, W] (ids 1..n in entry order, 0 = void) and ``segments_info``: list of
        ``{id, category_id (dataset id), isthing, score, area}``.
    """
    n = len(entries)
    flat = index_map.reshape(-1).long()
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) > n):
        raise ValueError(
            f"outputs.py: index map values must lie in 0..{n}, got {int(flat.min())}..{int(flat.max())}"
        )
    counts = torch.bincount(flat, minlength=n + 1).cpu()
    lut = torch.zeros(n + 1, dtype=torch.int32)
    segments: list[dict] = []
    for k in range(1, n + 1):
        area = int(counts[k])
        if area == 0:
            continue
        entry = entries[k - 1]
        seg_id = len(segments) + 1
        lut[k] = seg_id
        segments.append(
            {
                "id": seg_id,
                "category_id": int(categories.dataset_id(int(entry["train_id"]))),
                "isthing": bool(entry["isthing"]),
                "score": float(entry.get("score", 1.0)),
                "area": area,
            }
        )
    panoptic = lut.to(index_map.device)[index_map.long()]
    return panoptic, segments


def channel_entries(num_stuff: int, det_classes: Tensor, det_scores: Tensor) -> list[dict]:
    """Segment descriptions of the channels of ``Psi``/``P``: the ``N_st`` stuff channels (score 1), then one
    per detection (train id, detection score)."""
    entries = [{"train_id": k, "isthing": False, "score": 1.0} for k in range(num_stuff)]
    entries += [
        {"train_id": int(c), "isthing": True, "score": float(s)}
        for c, s in zip(det_classes.tolist(), det_scores.tolist(), strict=True)
    ]
    return entries
