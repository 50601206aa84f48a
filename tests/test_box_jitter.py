"""Training's box jitter (``train_box_jitter``): the geometry of :mod:`unipan_pipeline.model.box_perturbation`
and the boxes and masks the panoptic head gets in training, for ground-truth and predicted detections."""

from __future__ import annotations

import math

import pytest
import torch
from builders import tiny_config

from unipan_pipeline.categories import CategoryMap
from unipan_pipeline.experiment.robustness import perturb_boxes
from unipan_pipeline.model import PanopticNetwork, build_model
from unipan_pipeline.model.box_perturbation import jitter_boxes, shrink_and_shift

torch.set_num_threads(1)


def _boxes(n: int, size: tuple[int, int], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    h, w = size
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w - 2.0, h - 2.0])
    wh = 1 + torch.rand(n, 2, generator=g) * torch.tensor([w, h]) * 0.5
    x2y2 = torch.minimum(xy + wh, torch.tensor([float(w), float(h)]))
    return torch.cat([xy, x2y2], 1)


def test_jitter_keeps_boxes_inside_positive_and_within_the_fraction() -> None:
    size = (64, 96)
    boxes = _boxes(500, size)
    out = jitter_boxes(boxes, 0.3, size, torch.Generator().manual_seed(1))
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    ow, oh = out[:, 2] - out[:, 0], out[:, 3] - out[:, 1]
    assert (out[:, [0, 2]] >= 0).all() and (out[:, [0, 2]] <= size[1]).all()
    assert (out[:, [1, 3]] >= 0).all() and (out[:, [1, 3]] <= size[0]).all()
    assert (ow > 0).all() and (oh > 0).all()
    assert (ow <= w + 1e-4).all() and (oh <= h + 1e-4).all()  # shrunk (clipping only shrinks further)
    # the centre moves by at most the fraction (0.3) of the size, before clipping
    unclipped = shrink_and_shift(
        boxes, torch.full((500,), 0.3), torch.full((500,), 0.3), torch.zeros(500), (10**6, 10**6)
    )
    assert torch.allclose((unclipped[:, 0] + unclipped[:, 2]) / 2 - (boxes[:, 0] + boxes[:, 2]) / 2, 0.3 * w)
    # each box gets its own fraction: the shrink ratios spread over (0.7, 1]
    inner = (out[:, 0] > 0) & (out[:, 2] < size[1]) & (out[:, 1] > 0) & (out[:, 3] < size[0])
    ratio = (ow / w)[inner]
    assert ratio.min() >= 0.7 - 1e-5 and ratio.max() <= 1.0 + 1e-5 and ratio.std() > 0.05
    assert not torch.equal(out, boxes)


def test_jitter_zero_and_empty_and_seeded() -> None:
    size = (32, 32)
    boxes = _boxes(7, size)
    assert torch.equal(jitter_boxes(boxes, 0.0, size), boxes)
    assert jitter_boxes(boxes[:0], 0.2, size).shape == (0, 4)
    a = jitter_boxes(boxes, 0.2, size, torch.Generator().manual_seed(3))
    b = jitter_boxes(boxes, 0.2, size, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    torch.manual_seed(5)
    c = jitter_boxes(boxes, 0.2, size)
    torch.manual_seed(5)
    assert torch.equal(c, jitter_boxes(boxes, 0.2, size))  # the global generator, which the trainer seeds
    for bad in (-0.1, 0.5):
        with pytest.raises(ValueError, match="max_fraction"):
            jitter_boxes(boxes, bad, size)
    with pytest.raises(ValueError, match="train_box_jitter"):
        tiny_config(train_box_jitter=0.5)


def test_robustness_perturbation_is_the_same_rule() -> None:
    """perturb_boxes (the Fig. 1 experiment) is shrink_and_shift with one fraction for every box."""
    size = (48, 80)
    boxes = _boxes(20, size)
    got = perturb_boxes(boxes, 0.2, size, torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)
    r = torch.rand(20, generator=g, dtype=torch.float64) * 0.2
    t = torch.rand(20, generator=g, dtype=torch.float64) * (2 * math.pi)
    b = boxes.double()
    w = b[:, 2] - b[:, 0]
    cx = (b[:, 0] + b[:, 2]) / 2 + r * torch.cos(t) * w
    expected_x1 = (cx - 0.4 * w).clamp(0, size[1])
    assert torch.allclose(got[:, 0].double(), expected_x1, atol=1e-4)


def _spy(model: PanopticNetwork, seen: list[dict], monkeypatch: pytest.MonkeyPatch) -> None:
    potentials = model.potentials

    def spy(sem, q, boxes, *, scores, classes, mask_probs):  # type: ignore[no-untyped-def]
        seen.append({"boxes": boxes.detach(), "masks": mask_probs})
        return potentials(sem, q, boxes, scores=scores, classes=classes, mask_probs=mask_probs)

    monkeypatch.setattr(model, "potentials", spy)


def test_training_with_jitter_on_ground_truth_detections(
    tiny_categories: CategoryMap, synthetic_batch: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The panoptic head gets the GT boxes shrunk / shifted (inside them, up to the fraction), the masks are
    those of the mask head on the jittered boxes, and the loss reaches the affinity."""
    images, targets = synthetic_batch
    torch.manual_seed(0)
    model = build_model(tiny_config(train_detections="ground_truth", train_box_jitter=0.3), tiny_categories)
    model.train()
    masks_on: list[torch.Tensor] = []
    mask_probs = model.detector.mask_probs

    def spy_masks(features, boxes, labels, image_sizes, grad=False):  # type: ignore[no-untyped-def]
        masks_on.extend(b.detach() for b in boxes)
        return mask_probs(features, boxes, labels, image_sizes, grad)

    monkeypatch.setattr(model.detector, "mask_probs", spy_masks)
    seen: list[dict] = []
    _spy(model, seen, monkeypatch)
    torch.manual_seed(1)
    losses = model(images, targets)
    assert torch.isfinite(losses["loss_panoptic"])
    moved = 0
    for got, on, tgt in zip(seen, masks_on, targets, strict=True):
        gt = tgt["boxes"].float()
        assert got["boxes"].shape == gt.shape
        assert torch.equal(got["boxes"], on)  # masks predicted on the jittered boxes
        w, h = gt[:, 2] - gt[:, 0], gt[:, 3] - gt[:, 1]
        ow, oh = got["boxes"][:, 2] - got["boxes"][:, 0], got["boxes"][:, 3] - got["boxes"][:, 1]
        assert (ow <= w + 1e-4).all() and (oh <= h + 1e-4).all() and (ow > 0).all() and (oh > 0).all()
        centre_shift = ((got["boxes"][:, :2] + got["boxes"][:, 2:]) - (gt[:, :2] + gt[:, 2:])).abs() / 2
        assert (centre_shift <= 0.3 * torch.stack([w, h], 1) + 1e-3).all()
        moved += int((got["boxes"] != gt).any(1).sum())
    assert moved > 0
    model.zero_grad()
    losses["loss_panoptic"].backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any(n.startswith("affinity.phi0") for n in grads)
    assert any(n.startswith("detector.roi_heads.mask_predictor") for n in grads)


def test_training_with_jitter_on_predicted_detections(
    tiny_categories: CategoryMap, synthetic_batch: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Predicted detections: the same weights and random state give the same detections with and without
    jitter except for the boxes, which the jitter moves before the mask pass; eval is unaffected."""
    images, targets = synthetic_batch
    torch.manual_seed(0)
    plain = build_model(tiny_config(box_score_thresh=0.0, train_box_jitter=0.0), tiny_categories)
    jittered = build_model(tiny_config(box_score_thresh=0.0, train_box_jitter=0.25), tiny_categories)
    jittered.load_state_dict(plain.state_dict())
    runs: dict[str, list[dict]] = {}
    for name, model in (("plain", plain), ("jittered", jittered)):
        model.train()
        seen: list[dict] = []
        _spy(model, seen, monkeypatch)
        torch.manual_seed(2)
        model(images, targets)
        runs[name] = seen
    total = 0
    for a, b in zip(runs["plain"], runs["jittered"], strict=True):
        assert a["boxes"].shape == b["boxes"].shape
        total += len(a["boxes"])
        if len(a["boxes"]):
            w = a["boxes"][:, 2] - a["boxes"][:, 0]
            assert ((b["boxes"][:, 2] - b["boxes"][:, 0]) <= w + 1e-4).all()
            assert b["masks"].requires_grad
    assert total > 0
    pairs = zip(runs["plain"], runs["jittered"], strict=True)
    assert any(not torch.equal(a["boxes"], b["boxes"]) for a, b in pairs)
    monkeypatch.undo()
    plain.eval()
    jittered.eval()
    assert torch.equal(plain(images)[0]["panoptic"], jittered(images)[0]["panoptic"])
