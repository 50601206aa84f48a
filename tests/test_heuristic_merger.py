"""Tests of the Panoptic FPN heuristic merger (ablation rows C1 / D1)."""

from __future__ import annotations

import pytest
import torch

from unipan_pipeline.model.heuristic_merger import heuristic_merge

torch.set_num_threads(1)

N_ST = 2  # stuff 0, 1; things 2, 3
H, W = 20, 20


def _case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    sem = torch.zeros(H, W, dtype=torch.long)  # stuff 0 everywhere ...
    sem[15:20, 15:20] = 1  # ... a small stuff-1 region (25 px)
    sem[0:4, 10:20] = 3  # semantic thing pixels: never used as stuff
    sem[19, 0:5] = 255  # void
    masks = torch.zeros(4, H, W)
    masks[0, 0:10, 0:10] = 0.9  # A: score 0.9, 100 px
    masks[1, 0:10, 4:14] = 0.8  # B: score 0.8, 60 of 100 px overlap A -> skipped (0.6 > 0.5)
    masks[2, 5:15, 5:15] = 0.7  # C: score 0.7, 25 of 100 px overlap A -> pasted on its 75 free px
    masks[2, 5:15, 5:15][0, 0] = 0.4  # one pixel of C below the mask threshold
    masks[3, 15:20, 0:5] = 1.0  # D: score 0.3 -> dropped (below the score threshold)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.3])  # A, B, C, D
    classes = torch.tensor([2, 3, 2, 3])
    return sem, masks, scores, classes


def test_hand_built_case() -> None:
    sem, masks, scores, classes = _case()
    # shuffle the detection order: the merger must sort by score itself
    perm = torch.tensor([2, 3, 0, 1])
    index, segments = heuristic_merge(
        sem, masks[perm], scores[perm], classes[perm], N_ST, stuff_area_limit=30
    )
    assert index.shape == (H, W) and index.dtype == torch.long
    assert [s["train_id"] for s in segments] == [2, 2, 0]  # A, C, stuff 0 (stuff 1 too small)
    assert [s["isthing"] for s in segments] == [True, True, False]
    assert segments[0]["score"] == pytest.approx(0.9) and segments[1]["score"] == pytest.approx(0.7)
    assert segments[2]["score"] == 1.0

    expect = torch.zeros(H, W, dtype=torch.long)
    stuff0 = (sem == 0).clone()
    expect[stuff0] = 3
    c_mask = torch.zeros(H, W, dtype=torch.bool)
    c_mask[5:15, 5:15] = True
    c_mask[5, 5] = False  # below mask threshold
    expect[c_mask] = 2
    expect[0:10, 0:10] = 1  # A claims its whole mask first
    torch.testing.assert_close(index, expect)
    assert int((index == 2).sum()) == 100 - 25  # C lost its overlap with A (incl. the sub-threshold pixel)
    # the small stuff-1 region, the semantic thing pixels outside instances, the void row and D are void
    assert bool((index[15:20, 15:20] == 0).all())
    assert bool((index[0:4, 15:20] == 0).all())
    assert bool((index[19, 0:5] == 0).all())


def test_thresholds_are_respected() -> None:
    sem, masks, scores, classes = _case()
    # with a very permissive overlap threshold B is pasted on its 40 free pixels
    index, segments = heuristic_merge(
        sem, masks, scores, classes, N_ST, overlap_threshold=0.7, stuff_area_limit=30
    )
    assert [s["train_id"] for s in segments][:3] == [2, 3, 2]
    assert int((index == 2).sum()) == 40
    # lower score threshold admits D, smaller stuff limit admits stuff 1
    index, segments = heuristic_merge(
        sem, masks, scores, classes, N_ST, score_threshold=0.2, stuff_area_limit=10
    )
    assert [s["train_id"] for s in segments] == [2, 2, 3, 0, 1]
    assert bool((index[15:19, 0:5] == 3).all())
    assert bool((index[15:20, 15:20] == 5).all())
    # [D, 1, H, W] masks are accepted
    index2, _ = heuristic_merge(
        sem, masks[:, None], scores, classes, N_ST, score_threshold=0.2, stuff_area_limit=10
    )
    torch.testing.assert_close(index, index2)


def test_no_detections_and_default_stuff_limit() -> None:
    sem = torch.zeros(80, 80, dtype=torch.long)
    sem[:, 60:] = 1  # 1600 px < 4096
    index, segments = heuristic_merge(
        sem, torch.zeros(0, 80, 80), torch.zeros(0), torch.zeros(0, dtype=torch.long), N_ST
    )
    assert segments == [{"train_id": 0, "isthing": False, "score": 1.0}]
    assert bool((index[:, :60] == 1).all()) and bool((index[:, 60:] == 0).all())


def test_bad_shapes_raise() -> None:
    sem, masks, scores, classes = _case()
    with pytest.raises(ValueError, match=r"heuristic_merger\.py: det_masks"):
        heuristic_merge(sem, masks[:, :10], scores, classes, N_ST)
