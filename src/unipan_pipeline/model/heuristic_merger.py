"""Heuristic panoptic merger of Panoptic FPN [12] (ablation baseline, rows C1 / D1 of Table 1).

Procedure (the one of Panoptic FPN / detectron2 / panopticapi's combine script, re-implemented):

1. Visit detections in descending score order; stop at the first one scoring below ``score_threshold``.
2. Binarise its mask at ``mask_threshold``; skip it when empty or when more than ``overlap_threshold`` of its
   area is already claimed by earlier (higher-scoring) instances; otherwise it claims its unclaimed pixels
   (skipped if none remain).
3. Semantic labels of thing classes and void are dropped; every stuff class whose still-unclaimed area is at
   least ``stuff_area_limit`` pixels becomes one segment (ascending train id order), score 1.0.

Pixels claimed by nobody are void (0).
"""

from __future__ import annotations

import torch
from torch import Tensor

_WHERE = "heuristic_merger.py"


def heuristic_merge(  # noqa: PLR0917 - positional signature fixed by the model contract
    semantic_labels: Tensor,
    det_masks: Tensor,
    det_scores: Tensor,
    det_classes: Tensor,
    num_stuff: int,
    score_threshold: float = 0.5,
    overlap_threshold: float = 0.5,
    stuff_area_limit: int = 4096,
    mask_threshold: float = 0.5,
) -> tuple[Tensor, list[dict[str, object]]]:
    """Merge semantic and instance predictions with the Panoptic FPN heuristics.

    Args:
        semantic_labels: ``[H, W]`` int train ids (argmax of ``V``); values ``>= N_cls`` (e.g. 255) are void.
        det_masks: ``[D, H, W]`` instance mask probabilities at image resolution (``[D, 1, H, W]`` accepted).
        det_scores: ``[D]`` detection scores.
        det_classes: ``[D]`` detection TRAIN ids (things).
        num_stuff: ``N_st``; semantic labels ``< num_stuff`` are stuff.
        score_threshold: minimum detection score.
        overlap_threshold: maximum fraction of a mask already claimed.
        stuff_area_limit: minimum unclaimed area (pixels) of a stuff segment.
        mask_threshold: mask binarisation threshold.

    Returns:
        ``(index_map [H, W] int64, segments)`` where ``index_map`` is 0 for void and ``k`` for
        ``segments[k - 1]``, and each segment is ``{"train_id": int, "isthing": bool, "score": float}``.
    """
    if semantic_labels.ndim != 2:
        raise ValueError(f"{_WHERE}: semantic_labels must be [H, W], got {tuple(semantic_labels.shape)}")
    if det_masks.ndim == 4 and det_masks.shape[1] == 1:
        det_masks = det_masks[:, 0]
    h, w = semantic_labels.shape
    d = det_scores.shape[0]
    if det_masks.shape != (d, h, w) or det_classes.shape != (d,):
        raise ValueError(
            f"{_WHERE}: det_masks must be [D={d}, H={h}, W={w}] and det_classes [D], got "
            f"{tuple(det_masks.shape)} and {tuple(det_classes.shape)}"
        )
    dev = semantic_labels.device
    index_map = torch.zeros((h, w), dtype=torch.long, device=dev)
    claimed = torch.zeros((h, w), dtype=torch.bool, device=dev)
    segments: list[dict[str, object]] = []

    order = torch.argsort(det_scores.detach(), descending=True, stable=True)
    for j in order.tolist():
        score = float(det_scores[j])
        if score < score_threshold:
            break
        mask = det_masks[j].to(dev) >= mask_threshold
        area = int(mask.sum())
        if area == 0:
            continue
        overlap = int((mask & claimed).sum())
        if overlap / area > overlap_threshold:
            continue
        mask &= ~claimed
        if not bool(mask.any()):
            continue
        segments.append({"train_id": int(det_classes[j]), "isthing": True, "score": score})
        index_map[mask] = len(segments)
        claimed |= mask

    sem = semantic_labels.to(dev).long()
    for c in torch.unique(sem).tolist():
        if not 0 <= c < num_stuff:
            continue  # thing classes and void are not used as stuff
        mask = (sem == c) & ~claimed
        if int(mask.sum()) < stuff_area_limit:
            continue
        segments.append({"train_id": int(c), "isthing": False, "score": 1.0})
        index_map[mask] = len(segments)
        claimed |= mask
    return index_map, segments
