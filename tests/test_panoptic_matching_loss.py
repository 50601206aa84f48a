"""Tests of the panoptic matching (eq. 5) and the panoptic cross-entropy."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from unipan_pipeline.model.panoptic_matching_loss import (
    IGNORE_INDEX,
    batch_panoptic_matching_loss,
    match_detections,
    panoptic_matching_loss,
    segment_boxes,
)

torch.set_num_threads(1)

N_ST = 2  # stuff train ids 0, 1; things 2, 3
HH, WW = 40, 40


def _scene(
    things: list[tuple[int, tuple[int, int, int, int], bool]], stuff_class: int = 1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Index map: stuff background (segment 1) plus rectangular things (x0, y0, x1, y1 exclusive).

    Row 39 stays void. Returns (index map, classes, iscrowd).
    """
    pan = torch.ones(HH, WW, dtype=torch.long)
    pan[HH - 1] = 0
    classes = [stuff_class]
    crowd = [False]
    for cls, (x0, y0, x1, y1), iscrowd in things:
        classes.append(cls)
        crowd.append(iscrowd)
        pan[y0:y1, x0:x1] = len(classes)
    return pan, torch.tensor(classes), torch.tensor(crowd)


def _dets(
    boxes: list[list[float]], classes: list[int], scores: list[float]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return (
        torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        torch.tensor(classes, dtype=torch.long),
        torch.tensor(scores, dtype=torch.float32),
    )


def test_segment_boxes_are_tight() -> None:
    pan, _, _ = _scene([(2, (3, 5, 13, 9), False)])
    boxes, present = segment_boxes(pan, 3)
    assert present.tolist() == [True, True, False]
    assert boxes[1].tolist() == [3.0, 5.0, 13.0, 9.0]
    assert boxes[0].tolist() == [0.0, 0.0, 40.0, 39.0]


def test_exact_match_and_stuff_pixels() -> None:
    pan, cls, crowd = _scene([(2, (0, 0, 10, 10), False), (3, (20, 20, 30, 30), False)])
    b, c, s = _dets([[20, 20, 30, 30], [0, 0, 10, 10]], [3, 2], [0.9, 0.8])
    m = match_detections(b, c, s, pan, cls, crowd, N_ST)
    assert m.keep.tolist() == [True, True]
    t = m.target
    assert t.shape == (HH, WW) and t.dtype == torch.long
    assert bool((t[0:10, 0:10] == N_ST + 1).all())
    assert bool((t[20:30, 20:30] == N_ST + 0).all())
    assert int(t[15, 15]) == 1  # stuff pixel -> its stuff train id channel
    assert bool((t[HH - 1] == IGNORE_INDEX).all())  # void
    assert sorted(zip(m.matched_det.tolist(), m.matched_gt.tolist(), strict=True)) == [(0, 2), (1, 1)]
    assert m.matched_iou.tolist() == [1.0, 1.0]
    assert m.stats()["num_matched"] == 2.0


def test_class_mismatch_never_matches() -> None:
    pan, cls, crowd = _scene([(2, (0, 0, 10, 10), False)])
    b, c, s = _dets([[0, 0, 10, 10]], [3], [0.99])
    m = match_detections(b, c, s, pan, cls, crowd, N_ST)
    assert m.num_matched == 0
    assert m.keep.tolist() == [True]  # unmatched detection is kept ...
    assert bool((m.target[0:10, 0:10] == IGNORE_INDEX).all())  # ... the GT without a match is ignored
    assert not bool((m.target == N_ST).any())  # ... and its channel gets no pixels


@pytest.mark.parametrize(
    ("x2", "matched"),
    [(20.0, True), (19.5, True), (20.5, False)],  # IoU = 100 / (10 * x2): 0.5 exactly, 0.513, 0.488
)
def test_iou_threshold_inclusive(x2: float, matched: bool) -> None:
    pan, cls, crowd = _scene([(2, (0, 0, 10, 10), False)])
    b, c, s = _dets([[0, 0, x2, 10]], [2], [0.9])
    m = match_detections(b, c, s, pan, cls, crowd, N_ST, iou_threshold=0.5)
    assert (m.num_matched == 1) is matched
    assert bool((m.target[0:10, 0:10] == (N_ST if matched else IGNORE_INDEX)).all())


def test_duplicates_keep_top_match_and_channel_indices_shift() -> None:
    pan, cls, crowd = _scene([(2, (0, 0, 10, 10), False)])
    # det 0: false positive elsewhere (kept, no pixels); det 1: IoU 0.8 score 0.95; det 2: IoU 1.0 score 0.6
    b, c, s = _dets([[25, 25, 35, 35], [0, 0, 10, 8], [0, 0, 10, 10]], [2, 2, 2], [0.5, 0.95, 0.6])
    m = match_detections(b, c, s, pan, cls, crowd, N_ST)  # hungarian: top = highest IoU
    assert m.keep.tolist() == [True, False, True]
    assert m.matched_det.tolist() == [2]
    # det 2 is the 2nd KEPT detection -> channel N_st + 1
    assert bool((m.target[0:10, 0:10] == N_ST + 1).all())
    assert not bool((m.target == N_ST).any())  # the kept false positive gets no pixels
    assert m.num_dropped == 1

    g = match_detections(b, c, s, pan, cls, crowd, N_ST, strategy="greedy_score")  # top = highest score
    assert g.keep.tolist() == [True, True, False]
    assert g.matched_det.tolist() == [1]
    assert bool((g.target[0:10, 0:10] == N_ST + 1).all())


def test_equal_iou_tie_broken_by_score() -> None:
    pan, cls, crowd = _scene([(2, (0, 0, 10, 10), False)])
    b, c, s = _dets([[0, 0, 10, 8], [0, 2, 10, 10]], [2, 2], [0.3, 0.7])  # both IoU 0.8
    m = match_detections(b, c, s, pan, cls, crowd, N_ST)
    assert m.keep.tolist() == [False, True]
    assert m.matched_det.tolist() == [1]


def test_hungarian_maximises_total_iou() -> None:
    """Eq. 5 maximises the total IoU over assignments, which greedy matching does not."""
    pan, cls, crowd = _scene([(2, (0, 0, 10, 10), False), (2, (0, 10, 10, 20), False)])  # GT1 top, GT2 below
    # a = [0, 0, 10, 20]: IoU 100/200 = 0.5 with GT1 and with GT2 (both valid, threshold inclusive)
    # b = [0, 0, 10, 6]:  IoU 60/100 = 0.6 with GT1 only
    b, c, s = _dets([[0, 0, 10, 20], [0, 0, 10, 6]], [2, 2], [0.9, 0.8])
    m = match_detections(b, c, s, pan, cls, crowd, N_ST)
    # optimum a->GT2, b->GT1 (total 1.1) instead of a->GT1 with b dropped (total 0.5)
    assert sorted(zip(m.matched_det.tolist(), m.matched_gt.tolist(), strict=True)) == [(0, 2), (1, 1)]
    assert m.keep.tolist() == [True, True]
    assert float(m.matched_iou.sum()) == pytest.approx(1.1, abs=1e-6)
    assert bool((m.target[0:10, 0:10] == N_ST + 1).all()) and bool((m.target[10:20, 0:10] == N_ST).all())
    # greedy by score: a (0.9) takes GT1 first, b is then a duplicate of GT1 and is dropped, GT2 unmatched
    g = match_detections(b, c, s, pan, cls, crowd, N_ST, strategy="greedy_score")
    assert g.matched_det.tolist() == [0] and g.matched_gt.tolist() == [1]
    assert g.keep.tolist() == [True, False]
    assert bool((g.target[10:20, 0:10] == IGNORE_INDEX).all())


def test_crowd_and_unmatched_gt_are_ignored() -> None:
    pan, cls, crowd = _scene([(2, (0, 0, 10, 10), True), (3, (20, 20, 30, 30), False)])
    b, c, s = _dets([[0, 0, 10, 10]], [2], [0.9])
    m = match_detections(b, c, s, pan, cls, crowd, N_ST)
    assert m.num_matched == 0 and m.num_gt_things == 1
    assert m.keep.tolist() == [True]
    assert bool((m.target[0:10, 0:10] == IGNORE_INDEX).all())  # crowd
    assert bool((m.target[20:30, 20:30] == IGNORE_INDEX).all())  # GT without detection


def test_no_detections() -> None:
    pan, cls, crowd = _scene([(2, (0, 0, 10, 10), False)], stuff_class=0)
    b, c, s = _dets([], [], [])
    m = match_detections(b, c, s, pan, cls, crowd, N_ST)
    assert m.keep.shape == (0,) and m.num_matched == 0
    assert bool((m.target[0:10, 0:10] == IGNORE_INDEX).all())
    assert int(m.target[20, 20]) == 0
    assert set(m.target.unique().tolist()) == {0, IGNORE_INDEX}


def test_bad_inputs_raise() -> None:
    pan, cls, crowd = _scene([(2, (0, 0, 10, 10), False)])
    b, c, s = _dets([[0, 0, 10, 10]], [2], [0.9])
    with pytest.raises(ValueError, match=r"panoptic_matching_loss\.py: gt_panoptic values"):
        match_detections(b, c, s, pan, cls[:1], crowd[:1], N_ST)
    with pytest.raises(ValueError, match="det_boxes"):
        match_detections(b[:, :3], c, s, pan, cls, crowd, N_ST)
    with pytest.raises(ValueError, match="iou_threshold"):
        match_detections(b, c, s, pan, cls, crowd, N_ST, iou_threshold=0.0)


# ----------------------------------------------------------------------------------------------- loss


def test_loss_probabilities_is_normalised_nll() -> None:
    g = torch.Generator().manual_seed(0)
    p = torch.rand(3, 4, 5, generator=g, dtype=torch.float64) + 0.01
    t = torch.randint(0, 3, (4, 5), generator=g)
    t[0, 0] = IGNORE_INDEX
    loss = panoptic_matching_loss(p, t)
    terms = [
        -math.log(float(p[t[y, x], y, x]) / float(p[:, y, x].sum()))
        for y in range(4)
        for x in range(5)
        if int(t[y, x]) != IGNORE_INDEX
    ]
    assert float(loss) == pytest.approx(sum(terms) / len(terms), rel=1e-9)
    logit_loss = panoptic_matching_loss(p, t, input_kind="logits")
    assert float(logit_loss) == pytest.approx(float(F.cross_entropy(p[None], t[None], ignore_index=255)))


def test_loss_resizing_modes() -> None:
    g = torch.Generator().manual_seed(1)
    p = torch.rand(3, 2, 2, generator=g, dtype=torch.float64, requires_grad=True)
    # target at stride 4 constant per cell: both modes see the same labels
    cell = torch.tensor([[0, 1], [2, 1]])
    t = cell.repeat_interleave(4, 0).repeat_interleave(4, 1)
    down = panoptic_matching_loss(p, t, resize="downsample")
    direct = panoptic_matching_loss(p, cell)
    assert float(down.detach()) == pytest.approx(float(direct.detach()), rel=1e-12)
    up = panoptic_matching_loss(p, t, resize="upsample")
    expect_up = F.cross_entropy(
        torch.log(F.interpolate(p[None], size=(8, 8), mode="bilinear", align_corners=False)), t[None]
    )
    assert float(up.detach()) == pytest.approx(float(expect_up.detach()), rel=1e-12)
    up.backward()
    assert p.grad is not None and bool(p.grad.abs().sum() > 0)


def test_loss_all_ignored_is_zero_with_graph_and_bad_channel_raises() -> None:
    p = torch.rand(3, 2, 2, requires_grad=True)
    t = torch.full((8, 8), IGNORE_INDEX)
    loss = panoptic_matching_loss(p, t)
    assert float(loss.detach()) == 0.0 and loss.requires_grad
    loss.backward()
    with pytest.raises(ValueError, match="outside"):
        panoptic_matching_loss(p, torch.full((8, 8), 3))


def test_batch_loss_averages_images_with_labels() -> None:
    g = torch.Generator().manual_seed(2)
    p1 = torch.rand(3, 2, 2, generator=g) + 0.1
    p2 = torch.rand(4, 2, 2, generator=g) + 0.1
    p3 = torch.rand(2, 2, 2, generator=g) + 0.1
    t1 = torch.randint(0, 3, (8, 8), generator=g)
    t2 = torch.randint(0, 4, (8, 8), generator=g)
    t3 = torch.full((8, 8), IGNORE_INDEX)
    loss = batch_panoptic_matching_loss([p1, p2, p3], [t1, t2, t3])
    expect = (panoptic_matching_loss(p1, t1) + panoptic_matching_loss(p2, t2)) / 2
    assert float(loss) == pytest.approx(float(expect), rel=1e-6)


def test_end_to_end_match_then_loss_gradients() -> None:
    """Matched detection channel receives the thing pixels; the loss pushes Psi of that channel up."""
    pan, cls, crowd = _scene([(2, (0, 0, 12, 12), False)])
    b, c, s = _dets([[0, 0, 12, 12], [0, 0, 12, 11]], [2, 2], [0.9, 0.8])
    m = match_detections(b, c, s, pan, cls, crowd, N_ST)
    assert m.keep.tolist() == [True, False]
    k = N_ST + int(m.keep.sum())
    p = torch.full((k, HH // 4, WW // 4), 0.5, requires_grad=True)
    panoptic_matching_loss(p, m.target).backward()
    assert p.grad is not None
    assert float(p.grad[N_ST, 0, 0]) < 0  # increasing the matched channel at a thing cell lowers the loss
    assert float(p.grad[1, 0, 0]) > 0  # the stuff channel there is pushed down


# -------------------------------------------------------------------------------------- real COCO sample

SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "panopticapi_sample"


@pytest.mark.skipif(not SAMPLE.is_dir(), reason=f"panopticapi sample not found at {SAMPLE}")
def test_real_coco_sample_gt_boxes_match_everything() -> None:
    """On real COCO panoptic PNGs, feeding the GT boxes (jittered) as detections matches every thing GT."""
    gt = json.loads((SAMPLE / "panoptic_examples.json").read_text())
    cats = {cat["id"]: cat for cat in gt["categories"]}
    stuff_ids = sorted(cid for cid, cat in cats.items() if not cat["isthing"])
    thing_ids = sorted(cid for cid, cat in cats.items() if cat["isthing"])
    train = {cid: i for i, cid in enumerate(stuff_ids + thing_ids)}
    n_st = len(stuff_ids)
    ann = gt["annotations"][0]
    rgb = np.asarray(Image.open(SAMPLE / "panoptic_examples" / ann["file_name"]), dtype=np.int64)
    ids = rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]
    segs = ann["segments_info"]
    index = np.zeros_like(ids)
    for k, seg in enumerate(segs):
        index[ids == seg["id"]] = k + 1
    classes = torch.tensor([train[seg["category_id"]] for seg in segs])
    crowd = torch.tensor([bool(seg.get("iscrowd", 0)) for seg in segs])
    things = [
        (k, seg) for k, seg in enumerate(segs) if cats[seg["category_id"]]["isthing"] and not seg["iscrowd"]
    ]
    assert things, "sample image has no thing segment"
    boxes = torch.tensor(
        [[x + 0.5, y, x + w, y + h - 0.5] for _, seg in things for x, y, w, h in [seg["bbox"]]]
    )
    det_cls = torch.tensor([train[seg["category_id"]] for _, seg in things])
    scores = torch.linspace(0.9, 0.5, len(things))
    m = match_detections(boxes, det_cls, scores, torch.from_numpy(index), classes, crowd, n_st)
    assert m.num_matched == len(things) and bool(m.keep.all())
    tgt = m.target.numpy()
    for j, (k, _) in enumerate(things):
        assert (tgt[index == k + 1] == n_st + j).all()
    for k, seg in enumerate(segs):
        if not cats[seg["category_id"]]["isthing"]:
            assert (tgt[index == k + 1] == train[seg["category_id"]]).all()
    assert (tgt[index == 0] == IGNORE_INDEX).all()
