"""COCO-style AP (box and mask, IoU .50:.05:.95) of the detection head, through pycocotools' ``COCOeval``.

Ground truth and detections are turned into in-memory ``COCO`` objects (no json files): masks are RLE-encoded
with ``pycocotools.mask``; crowd regions of thing classes (from the target's ``panoptic`` index map and
``segment_iscrowd``) are added as ``iscrowd = 1`` annotations, which COCOeval ignores in matching, exactly as
in COCO. Category ids are the detector labels ``1 .. N_th`` (the model's ``labels``); image ids are the
order in which images were added (string ids are kept in :attr:`COCODetectionEvaluator.image_ids`).

``ap_box`` / ``ap_mask`` are ``stats[0]`` (AP@[.5:.95], all areas, maxDets 100) as fractions; ``None`` when
there is no ground-truth instance at all (COCOeval's -1) or, for masks, when no mask was given.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from unipan_pipeline.evaluation.errors import EvaluationError

__all__ = ["COCODetectionEvaluator", "coco_objects"]


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _rle(mask: np.ndarray) -> dict[str, Any]:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _xyxy_to_xywh(b: np.ndarray) -> list[float]:
    x0, y0, x1, y1 = (float(v) for v in b)
    return [x0, y0, x1 - x0, y1 - y0]


class COCODetectionEvaluator:
    """Accumulate model outputs and targets, then run COCOeval for boxes and masks.

    Args:
        num_stuff: number of stuff classes (``CategoryMap.num_stuff``), to turn a crowd segment's train id
           into
            a detector label; ``None`` skips crowd regions.
        num_things: number of thing classes (detector labels ``1 .. num_things``).
        mask_threshold: probability threshold of the predicted masks (torchvision's 0.5).
    """

    def __init__(self, num_things: int, num_stuff: int | None = None, mask_threshold: float = 0.5) -> None:
        self.num_things = int(num_things)
        self.num_stuff = num_stuff
        self.mask_threshold = float(mask_threshold)
        self.images: list[dict[str, Any]] = []
        self.image_ids: list[Any] = []
        self.gt_anns: list[dict[str, Any]] = []
        self.box_dets: list[dict[str, Any]] = []
        self.mask_dets: list[dict[str, Any]] = []
        self.any_pred_masks = False
        self.any_gt_masks = False

    @classmethod
    def from_categories(cls, categories: Any, mask_threshold: float = 0.5) -> COCODetectionEvaluator:
        """From a ``CategoryMap``."""
        return cls(categories.num_things, categories.num_stuff, mask_threshold)

    # ------------------------------------------------------------------ accumulation
    def update(self, outputs: Sequence[Mapping[str, Any]], targets: Sequence[Mapping[str, Any]]) -> None:
        """Add a batch: the model's eval outputs (``boxes`` xyxy, ``scores``, ``labels``, optional ``masks``
        ``[D,1,H,W]`` probabilities) and the batch targets (``boxes``, ``labels``, optional ``masks``,
        ``panoptic``, ``segment_classes``, ``segment_iscrowd``, ``image_id``)."""
        if len(outputs) != len(targets):
            raise EvaluationError(f"{len(outputs)} outputs for {len(targets)} targets")
        for out, tgt in zip(outputs, targets, strict=True):
            self._add_image(out, tgt)

    def _add_image(self, out: Mapping[str, Any], tgt: Mapping[str, Any]) -> None:
        img = len(self.images) + 1
        name = tgt.get("image_id", img)
        h, w = self._size(out, tgt)
        self.images.append({"id": img, "height": h, "width": w, "file_name": str(name)})
        self.image_ids.append(name)

        boxes = _np(tgt.get("boxes", np.zeros((0, 4)))).reshape(-1, 4)
        labels = _np(tgt.get("labels", np.zeros(0))).reshape(-1).astype(np.int64)
        masks = tgt.get("masks")
        masks = _np(masks).astype(bool) if masks is not None else None
        if masks is not None and len(masks):
            self.any_gt_masks = True
        bad = (labels < 1) | (labels > self.num_things)
        if bad.any():
            raise EvaluationError(
                f"image {name!r}: target labels {labels[bad].tolist()} outside 1..{self.num_things}"
            )
        for k in range(len(labels)):
            ann: dict[str, Any] = {
                "image_id": img,
                "category_id": int(labels[k]),
                "iscrowd": 0,
                "bbox": _xyxy_to_xywh(boxes[k]),
            }
            if masks is not None:
                m = masks[k]
                ann["segmentation"] = _rle(m)
                ann["area"] = float(m.sum())
            else:
                ann["area"] = float(ann["bbox"][2] * ann["bbox"][3])
            self._add_gt(ann)
        self._add_crowd(tgt, img, name)

        d_boxes = _np(out.get("boxes", np.zeros((0, 4)))).reshape(-1, 4)
        scores = _np(out.get("scores", np.zeros(0))).reshape(-1)
        d_labels = _np(out.get("labels", np.zeros(0))).reshape(-1).astype(np.int64)
        d_masks = out.get("masks")
        for k in range(len(d_labels)):
            base = {"image_id": img, "category_id": int(d_labels[k]), "score": float(scores[k])}
            self.box_dets.append({**base, "bbox": _xyxy_to_xywh(d_boxes[k])})
        if d_masks is not None:
            self.any_pred_masks = True
            dm = _np(d_masks)
            dm = dm.reshape(len(d_labels), *dm.shape[-2:]) if len(d_labels) else dm
            for k in range(len(d_labels)):
                binary = dm[k] > self.mask_threshold if dm.dtype != bool else dm[k]
                self.mask_dets.append(
                    {
                        "image_id": img,
                        "category_id": int(d_labels[k]),
                        "score": float(scores[k]),
                        "segmentation": _rle(binary),
                    }
                )

    @staticmethod
    def _size(out: Mapping[str, Any], tgt: Mapping[str, Any]) -> tuple[int, int]:
        for key, src in (
            ("masks", tgt),
            ("panoptic", tgt),
            ("semantic", tgt),
            ("masks", out),
            ("panoptic", out),
        ):
            if src.get(key) is not None:
                shape = _np(src[key]).shape
                if len(shape) >= 2 and shape[-1] > 0:
                    return int(shape[-2]), int(shape[-1])
        if "orig_size" in tgt:
            return int(tgt["orig_size"][0]), int(tgt["orig_size"][1])
        raise EvaluationError(
            f"image {tgt.get('image_id')!r}: cannot tell the image size (no masks/panoptic)"
        )

    def _add_gt(self, ann: dict[str, Any]) -> None:
        ann["id"] = len(self.gt_anns) + 1
        self.gt_anns.append(ann)

    def _add_crowd(self, tgt: Mapping[str, Any], img: int, name: Any) -> None:
        if self.num_stuff is None or tgt.get("panoptic") is None or tgt.get("segment_iscrowd") is None:
            return
        iscrowd = _np(tgt["segment_iscrowd"]).reshape(-1).astype(bool)
        if not iscrowd.any():
            return
        classes = _np(tgt["segment_classes"]).reshape(-1).astype(np.int64)
        pan = _np(tgt["panoptic"])
        for k in np.flatnonzero(iscrowd):
            label = int(classes[k]) - self.num_stuff + 1
            if not 1 <= label <= self.num_things:
                continue  # crowd flag on a stuff class: not a detection target
            m = pan == k + 1
            if not m.any():
                continue
            ys, xs = np.nonzero(m)
            bbox = [
                float(xs.min()),
                float(ys.min()),
                float(xs.max() - xs.min() + 1),
                float(ys.max() - ys.min() + 1),
            ]
            self._add_gt(
                {
                    "image_id": img,
                    "category_id": label,
                    "iscrowd": 1,
                    "bbox": bbox,
                    "area": float(m.sum()),
                    "segmentation": _rle(m),
                }
            )

    # ------------------------------------------------------------------ evaluation
    def coco_gt(self) -> COCO:
        """The ground truth as an in-memory ``pycocotools.coco.COCO``."""
        return coco_objects(self.images, self.gt_anns, self.num_things)

    def _run(self, iou_type: str, dets: list[dict[str, Any]]) -> tuple[float | None, list[float]]:
        non_crowd = [a for a in self.gt_anns if a["iscrowd"] == 0]
        if not non_crowd:
            return None, []
        gt_anns = self.gt_anns
        if iou_type == "segm":
            gt_anns = [a for a in self.gt_anns if "segmentation" in a]
        if not dets:
            return 0.0, [0.0] * 12
        with contextlib.redirect_stdout(io.StringIO()):
            gt = coco_objects(self.images, gt_anns, self.num_things)
            dt = gt.loadRes([dict(d) for d in dets])
            ev = COCOeval(gt, dt, iouType=iou_type)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        stats = [float(s) for s in ev.stats]
        return (None if stats[0] < 0 else stats[0]), stats

    def compute(self) -> dict[str, Any]:
        """``{"ap_box", "ap_mask", "stats_box", "stats_mask"}`` (COCOeval's 12 summary numbers each)."""
        ap_box, stats_box = self._run("bbox", self.box_dets)
        if self.any_pred_masks and self.any_gt_masks:
            ap_mask, stats_mask = self._run("segm", self.mask_dets)
        else:
            ap_mask, stats_mask = None, []
        return {"ap_box": ap_box, "ap_mask": ap_mask, "stats_box": stats_box, "stats_mask": stats_mask}


def coco_objects(images: list[dict[str, Any]], annotations: list[dict[str, Any]], num_things: int) -> COCO:
    """Build an in-memory ``COCO`` ground-truth object."""
    gt = COCO()
    gt.dataset = {
        "images": [dict(i) for i in images],
        "annotations": [dict(a) for a in annotations],
        "categories": [{"id": c, "name": str(c)} for c in range(1, num_things + 1)],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt
