"""In-memory PQ: :class:`PQAccumulator` collects per-image statistics and averages them as ``pq_compute``
does; :func:`update_from_model` feeds it a batch of model outputs and training targets."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from unipan_pipeline.evaluation.pq_matching import (
    ImageStats,
    PQCategories,
    as_numpy,
    check_compat,
    evaluate_image,
)
from unipan_pipeline.fileio.errors import ImageMismatchError, SegmentMismatchError

__all__ = ["PQAccumulator", "target_to_panoptic", "update_from_model"]


class PQAccumulator:
    """In-memory PQ: feed images with :meth:`update`, read the ``pq_compute``-shaped result with
    :meth:`compute`.

    Example::

        acc = PQAccumulator(category_map)          # or a COCO categories list
        for out, tgt in zip(outputs, gt):
            acc.update(tgt_ids, tgt_segments, out["panoptic"], out["segments_info"], image_id=...)
        results = acc.compute()                    # {"All": {...}, "Things": ..., "Stuff": ..., "per_class"}
    """

    def __init__(self, categories: Any, *, compat: str | None = None) -> None:
        """``compat``: ``None`` (strict) or ``"panopticapi"`` (module docstring, cases b and c)."""
        self.categories = PQCategories.coerce(categories)
        self.compat = check_compat(compat)
        self._cat_index = self.categories.index
        k = len(self.categories.ids)
        self.tp = np.zeros(k, dtype=np.int64)
        self.fp = np.zeros(k, dtype=np.int64)
        self.fn = np.zeros(k, dtype=np.int64)
        self.iou = [0.0] * k
        self.num_images = 0
        self._seen: set[Any] = set()

    def update(
        self,
        gt_ids: Any,
        gt_segments: Sequence[Mapping[str, Any]],
        pred_ids: Any,
        pred_segments: Sequence[Mapping[str, Any]],
        image_id: Any = None,
    ) -> ImageStats:
        """Add one image. Ids: ``[H, W]`` integer arrays/tensors (0 = void); segments: ``segments_info``
        lists with dataset category ids. Returns that image's :class:`ImageStats`."""
        stats = evaluate_image(
            gt_ids,
            gt_segments,
            pred_ids,
            pred_segments,
            self.categories,
            image_id=image_id if image_id is not None else self.num_images,
            cat_index=self._cat_index,
            compat=self.compat,
        )
        self.add(stats)
        return stats

    def add(self, stats: ImageStats) -> None:
        """Add precomputed image statistics (used by the file path's workers)."""
        if stats.image_id is not None:
            key = stats.image_id
            if key in self._seen:
                raise ImageMismatchError(f"image {stats.image_id!r} was evaluated twice")
            self._seen.add(key)
        k = len(self.tp)
        self.tp += np.bincount(stats.matched_cat, minlength=k)
        self.fn += np.bincount(stats.fn_cat, minlength=k)
        self.fp += np.bincount(stats.fp_cat, minlength=k)
        iou = self.iou
        for c, v in zip(stats.matched_cat.tolist(), stats.matched_iou.tolist(), strict=True):
            iou[c] += v
        self.num_images += 1

    def class_stats(self) -> dict[int, dict[str, Any]]:
        """Per category id: ``tp``, ``fp``, ``fn`` and ``iou`` (sum of matched IoUs), plus the PQ terms."""
        out: dict[int, dict[str, Any]] = {}
        for k, cid in enumerate(self.categories.ids):
            tp, fp, fn, iou = int(self.tp[k]), int(self.fp[k]), int(self.fn[k]), self.iou[k]
            denom = tp + 0.5 * fp + 0.5 * fn
            out[cid] = {
                "name": self.categories.names[k],
                "isthing": self.categories.isthing[k],
                "tp": tp,
                "fp": fp,
                "fn": fn,
                "iou": iou,
                "pq": iou / denom if denom else 0.0,
                "sq": iou / tp if tp else 0.0,
                "rq": tp / denom if denom else 0.0,
            }
        return out

    def compute(self) -> dict[str, Any]:
        """``pq_compute``'s result: ``{"All"|"Things"|"Stuff": {pq, sq, rq, n}, "per_class": {id: {pq, sq,
        rq}}}`` (``per_class`` in ground-truth category order; empty groups: ``n = 0``, values ``nan``)."""
        results: dict[str, Any] = {}
        for name, isthing in (("All", None), ("Things", True), ("Stuff", False)):
            group, per_class = self._average(isthing)
            results[name] = group
            if name == "All":
                results["per_class"] = per_class
        return results

    def _average(self, isthing: bool | None) -> tuple[dict[str, Any], dict[int, dict[str, float]]]:
        pq = sq = rq = 0.0
        n = 0
        per_class: dict[int, dict[str, float]] = {}
        for k, cid in enumerate(self.categories.ids):
            if isthing is not None and self.categories.isthing[k] != isthing:
                continue
            iou, tp, fp, fn = self.iou[k], int(self.tp[k]), int(self.fp[k]), int(self.fn[k])
            if tp + fp + fn == 0:
                per_class[cid] = {"pq": 0.0, "sq": 0.0, "rq": 0.0}
                continue
            n += 1
            pq_c = iou / (tp + 0.5 * fp + 0.5 * fn)
            sq_c = iou / tp if tp != 0 else 0.0
            rq_c = tp / (tp + 0.5 * fp + 0.5 * fn)
            per_class[cid] = {"pq": pq_c, "sq": sq_c, "rq": rq_c}
            pq += pq_c
            sq += sq_c
            rq += rq_c
        if n == 0:
            return {"pq": math.nan, "sq": math.nan, "rq": math.nan, "n": 0}, per_class
        return {"pq": pq / n, "sq": sq / n, "rq": rq / n, "n": n}, per_class


def target_to_panoptic(target: Mapping[str, Any], categories: Any) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Ground truth of a training-batch target (``panoptic`` index map, ``segment_classes`` train ids,
    ``segment_iscrowd``) as an id map (id k = element k-1) and ``segments_info`` with dataset category ids.

    Segments with no pixel left in the map (e.g. removed by resizing) are dropped; areas are counted.
    """
    ids = as_numpy(target["panoptic"]).astype(np.int64, copy=False)
    classes = _as_numpy_1d(target["segment_classes"])
    crowd = _as_numpy_1d(target.get("segment_iscrowd", np.zeros(len(classes), dtype=bool)))
    counts = np.bincount(ids.reshape(-1), minlength=len(classes) + 1)
    if len(counts) > len(classes) + 1:
        raise SegmentMismatchError(
            f"image {target.get('image_id')!r}: panoptic index map refers to segment {len(counts) - 1} "
            f"but only {len(classes)} segment_classes are given"
        )
    segments = [
        {
            "id": k + 1,
            "category_id": int(categories.dataset_id(int(classes[k]))),
            "iscrowd": int(bool(crowd[k])),
            "area": int(counts[k + 1]),
        }
        for k in range(len(classes))
        if counts[k + 1] > 0
    ]
    return ids, segments


def _as_numpy_1d(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x).reshape(-1)


def update_from_model(
    acc: PQAccumulator,
    outputs: Sequence[Mapping[str, Any]],
    targets: Sequence[Mapping[str, Any]],
    categories: Any,
) -> None:
    """Feed a batch of model eval outputs (``panoptic``, ``segments_info``) and their targets to ``acc``.

    ``categories``: the ``CategoryMap`` (train id -> dataset id for the targets).
    """
    if len(outputs) != len(targets):
        raise ImageMismatchError(f"{len(outputs)} outputs for {len(targets)} targets")
    for out, tgt in zip(outputs, targets, strict=True):
        gt_ids, gt_segments = target_to_panoptic(tgt, categories)
        acc.update(gt_ids, gt_segments, out["panoptic"], out["segments_info"], image_id=tgt.get("image_id"))
