"""Semantic mIoU and COCO AP on hand-built cases with known answers; AP == pycocotools' own COCOeval."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from unipan_pipeline.evaluation.detection_ap import COCODetectionEvaluator
from unipan_pipeline.evaluation.semantic import SemanticConfusion, semantic_miou


# ---------------------------------------------------------------------------------------------- mIoU
def test_miou_known_answer() -> None:
    target = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [255, 255, 2, 2]])
    pred = np.array([[0, 0, 0, 1], [0, 0, 1, 1], [1, 1, 2, 255]])
    res = semantic_miou([pred], [target], num_classes=4)
    # class 0: TP 4, FP 1, FN 0 -> 4/5; class 1: TP 3, FN 1 -> 3/4; class 2: TP 1, FN 1 (pred 255) -> 1/2
    # class 3: absent from gt and prediction -> excluded; ignore pixels (predicted 1) do not count
    assert res["iou"][:3] == [4 / 5, 3 / 4, 1 / 2] and math.isnan(res["iou"][3])
    assert res["miou"] == pytest.approx((0.8 + 0.75 + 0.5) / 3, abs=1e-15)
    assert res["n"] == 3 and res["per_class"]["3"] is None
    assert res["pixel_acc"] == pytest.approx(8 / 10)


def test_miou_accumulates_and_takes_tensors() -> None:
    conf = SemanticConfusion(3, class_names=["a", "b", "c"])
    conf.update(torch.tensor([[0, 1]]), torch.tensor([[0, 1]]))
    conf.update(np.array([[2, 2]]), np.array([[2, 0]]))
    res = conf.compute()
    assert res["per_class"] == {"a": 0.5, "b": 1.0, "c": 0.5}
    with pytest.raises(ValueError, match=r"outside 0\.\.2"):
        conf.update(np.array([[0]]), np.array([[7]]), image_id="im7")
    with pytest.raises(ValueError, match="im8"):
        conf.update(np.zeros((2, 2)), np.zeros((2, 3)), image_id="im8")


# ---------------------------------------------------------------------------------------------- AP
def _box_mask(h: int, w: int, box: tuple[int, int, int, int]) -> np.ndarray:
    m = np.zeros((h, w), dtype=np.uint8)
    m[box[1] : box[3], box[0] : box[2]] = 1
    return m


def _target(boxes: list[tuple[int, int, int, int]], labels: list[int], h: int = 40, w: int = 60) -> dict:
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "masks": torch.from_numpy(
            np.stack([_box_mask(h, w, b) for b in boxes]) if boxes else np.zeros((0, h, w), np.uint8)
        ),
        "image_id": f"img{len(boxes)}",
    }


def _output(boxes: list, labels: list[int], scores: list[float], h: int = 40, w: int = 60) -> dict:
    masks = (
        np.stack([_box_mask(h, w, b) for b in boxes]).astype(np.float32)[:, None]
        if boxes
        else np.zeros((0, 1, h, w), np.float32)
    )
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels),
        "scores": torch.tensor(scores),
        "masks": torch.from_numpy(masks * 0.9),
    }


def test_ap_perfect_and_wrong_class() -> None:
    boxes = [(2, 2, 20, 20), (30, 5, 55, 35)]
    ev = COCODetectionEvaluator(num_things=3)
    ev.update([_output(boxes, [1, 2], [0.9, 0.8])], [_target(boxes, [1, 2])])
    res = ev.compute()
    assert res["ap_box"] == pytest.approx(1.0) and res["ap_mask"] == pytest.approx(1.0)
    ev = COCODetectionEvaluator(num_things=3)
    ev.update([_output(boxes, [3, 3], [0.9, 0.8])], [_target(boxes, [1, 2])])
    assert ev.compute()["ap_box"] == 0.0
    empty = COCODetectionEvaluator(num_things=3)
    empty.update([_output([], [], [])], [_target([], [])])
    assert empty.compute()["ap_box"] is None  # no ground truth at all


def test_crowd_region_is_ignored() -> None:
    """A detection on a crowd region is neither a TP nor a FP."""
    h, w = 40, 60
    pan = np.zeros((h, w), dtype=np.int64)
    pan[2:20, 2:20] = 1  # a thing instance
    pan[5:35, 30:55] = 2  # a crowd region of the same thing class (train id 3 = stuff 2 + label 2)
    tgt = _target([(2, 2, 20, 20)], [2])
    tgt.update(
        panoptic=torch.from_numpy(pan),
        segment_classes=torch.tensor([3, 3]),
        segment_iscrowd=torch.tensor([False, True]),
    )
    out = _output([(2, 2, 20, 20), (30, 5, 55, 35)], [2, 2], [0.5, 0.9])
    with_crowd = COCODetectionEvaluator(num_things=2, num_stuff=2)
    with_crowd.update([out], [tgt])
    without = COCODetectionEvaluator(num_things=2, num_stuff=None)
    without.update([out], [tgt])
    assert with_crowd.compute()["ap_box"] == pytest.approx(1.0)
    assert without.compute()["ap_box"] < 1.0  # the high-scored crowd detection becomes a false positive


def test_ap_identical_to_pycocotools_on_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    outputs, targets = [], []
    for _ in range(6):
        n = int(rng.integers(1, 5))
        boxes = []
        for _ in range(n):
            x0, y0 = int(rng.integers(0, 40)), int(rng.integers(0, 25))
            boxes.append((x0, y0, x0 + int(rng.integers(4, 20)), y0 + int(rng.integers(4, 15))))
        labels = [int(v) for v in rng.integers(1, 4, size=n)]
        targets.append(_target(boxes, labels))
        jitter = [
            (b[0] + int(rng.integers(-2, 3)), b[1] + int(rng.integers(-2, 3)), b[2], b[3]) for b in boxes
        ]
        jitter.append((0, 0, 10, 10))
        outputs.append(_output(jitter, [*labels, 1], [float(s) for s in rng.random(n + 1)]))
    ev = COCODetectionEvaluator(num_things=3)
    ev.update(outputs, targets)
    ours = ev.compute()
    # the same data through json files and pycocotools' own loaders
    gt_file, dt_file = tmp_path / "gt.json", tmp_path / "dt.json"
    gt_file.write_text(
        json.dumps(
            {
                "images": ev.images,
                "annotations": ev.gt_anns,
                "categories": [{"id": c, "name": str(c)} for c in (1, 2, 3)],
            }
        )
    )
    for iou_type, dets, key in (("bbox", ev.box_dets, "stats_box"), ("segm", ev.mask_dets, "stats_mask")):
        dt_file.write_text(json.dumps(dets))
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO(str(gt_file))
            e = COCOeval(gt, gt.loadRes(str(dt_file)), iouType=iou_type)
            e.evaluate()
            e.accumulate()
            e.summarize()
        assert ours[key] == [float(s) for s in e.stats]
    assert 0 < ours["ap_box"] < 1 and 0 < ours["ap_mask"] < 1
