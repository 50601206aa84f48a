"""Tests of the dynamic potential head (eq. 1-2): hand-computed expectations for every variant."""

from __future__ import annotations

import math

import pytest
import torch

from unipan_pipeline.model.dynamic_potential import (
    box_region_bounds,
    box_region_mask,
    dynamic_potential,
    filter_detections,
    potential_space,
)

torch.set_num_threads(1)

NUM_STUFF = 2  # train ids 0, 1 stuff; 2, 3 things
H, W, STRIDE = 2, 3, 4  # image 8 x 12 pixels; cell centres x = 2, 6, 10 and y = 2, 6


def _v() -> torch.Tensor:
    return torch.tensor(
        [
            [[0.0, 1.0, 2.0], [0.5, -1.0, 0.0]],
            [[1.0, 0.0, -1.0], [0.0, 0.0, 2.0]],
            [[2.0, 0.5, 0.0], [1.0, 3.0, -2.0]],
            [[-1.0, 2.0, 1.0], [0.0, 1.0, 0.5]],
        ],
        dtype=torch.float64,
    )


def _probs(v: torch.Tensor) -> list[list[list[float]]]:
    """Softmax over channels computed element by element with math.exp."""
    n, h, w = v.shape
    out = [[[0.0] * w for _ in range(h)] for _ in range(n)]
    for y in range(h):
        for x in range(w):
            z = sum(math.exp(float(v[c, y, x])) for c in range(n))
            for c in range(n):
                out[c][y][x] = math.exp(float(v[c, y, x])) / z
    return out


# det 0: box [0, 0, 8, 4] -> cell centres with x in {2, 6}, y in {2}: cells (0,0), (0,1)
# det 1: box [4, 0, 12, 8] -> x in {6, 10}, y in {2, 6}: cells (*,1), (*,2)
BOXES = torch.tensor([[0.0, 0.0, 8.0, 4.0], [4.0, 0.0, 12.0, 8.0]], dtype=torch.float64)
INSIDE = [{(0, 0), (0, 1)}, {(0, 1), (0, 2), (1, 1), (1, 2)}]
SCORES = torch.tensor([0.9, 0.5], dtype=torch.float64)
CLASSES = torch.tensor([2, 3])
MASKS = torch.tensor(
    [[[0.8, 0.6, 0.1], [0.2, 0.3, 0.0]], [[0.0, 0.4, 0.9], [0.1, 0.7, 1.0]]], dtype=torch.float64
)


def _expected(variant: str, with_masks: bool, space: str) -> torch.Tensor:
    v = _v()
    vv = _probs(v) if space == "probabilities" else v.tolist()
    out = torch.zeros(NUM_STUFF + 2, H, W, dtype=torch.float64)
    for c in range(NUM_STUFF):
        for y in range(H):
            for x in range(W):
                out[c, y, x] = vv[c][y][x]
    for k in range(2):
        c = int(CLASSES[k])
        s = float(SCORES[k])
        for y, x in INSIDE[k]:
            val = vv[c][y][x]
            m = float(MASKS[k, y, x])
            if space == "logits":
                mc = min(max(m, 1e-4), 1 - 1e-4)
                m = math.log(mc / (1 - mc))
            if not with_masks:
                e = val if variant == "A" else s * val
            elif variant == "A":
                e = val + m
            elif variant == "B":
                e = s * val * m
            else:
                e = s * (val + m)
            out[NUM_STUFF + k, y, x] = e
    return out


@pytest.mark.parametrize("variant", ["A", "B", "C"])
@pytest.mark.parametrize("with_masks", [False, True])
def test_variants_match_hand_computation(variant: str, with_masks: bool) -> None:
    psi = dynamic_potential(
        _v(), BOXES, SCORES, CLASSES, MASKS if with_masks else None, NUM_STUFF, variant, STRIDE
    )
    space = potential_space(variant)  # type: ignore[arg-type]
    assert space == ("logits" if variant == "A" else "probabilities")
    torch.testing.assert_close(psi, _expected(variant, with_masks, space), rtol=0, atol=1e-12)


def test_forced_space_and_b_equals_c_without_masks() -> None:
    b = dynamic_potential(_v(), BOXES, SCORES, CLASSES, None, NUM_STUFF, "B", STRIDE)
    c = dynamic_potential(_v(), BOXES, SCORES, CLASSES, None, NUM_STUFF, "C", STRIDE)
    torch.testing.assert_close(b, c)
    a_prob = dynamic_potential(
        _v(), BOXES, SCORES, CLASSES, MASKS, NUM_STUFF, "A", STRIDE, space="probabilities"
    )
    torch.testing.assert_close(a_prob, _expected("A", True, "probabilities"), rtol=0, atol=1e-12)
    c_log = dynamic_potential(_v(), BOXES, SCORES, CLASSES, None, NUM_STUFF, "C", STRIDE, space="logits")
    torch.testing.assert_close(c_log, _expected("C", False, "logits"), rtol=0, atol=1e-12)


def test_no_detections_returns_stuff_channels() -> None:
    empty = torch.zeros(0, 4, dtype=torch.float64)
    for variant in ("A", "B", "C"):
        psi = dynamic_potential(
            _v(),
            empty,
            torch.zeros(0),
            torch.zeros(0, dtype=torch.long),
            torch.zeros(0, H, W),
            NUM_STUFF,
            variant,
            STRIDE,  # type: ignore[arg-type]
        )
        assert psi.shape == (NUM_STUFF, H, W)
        torch.testing.assert_close(psi, _expected(variant, False, potential_space(variant))[:NUM_STUFF])  # type: ignore[arg-type]


def test_gradients_reach_semantics_masks_and_optionally_scores() -> None:
    v = _v().requires_grad_(True)
    s = SCORES.clone().requires_grad_(True)
    m = MASKS.clone().requires_grad_(True)
    dynamic_potential(v, BOXES, s, CLASSES, m, NUM_STUFF, "C", STRIDE).sum().backward()
    assert v.grad is not None and bool(v.grad.abs().sum() > 0)
    assert m.grad is not None
    # d/dM of s*(V+M) summed over the box = s inside the box, 0 outside
    expect_m = torch.zeros_like(MASKS)
    for k in range(2):
        for y, x in INSIDE[k]:
            expect_m[k, y, x] = SCORES[k]
    torch.testing.assert_close(m.grad, expect_m)
    assert s.grad is not None and bool(s.grad.abs().sum() > 0)

    s2 = SCORES.clone().requires_grad_(True)
    out = dynamic_potential(_v(), BOXES, s2, CLASSES, MASKS, NUM_STUFF, "C", STRIDE, detach_scores=True)
    assert not out[NUM_STUFF:].requires_grad


def test_box_region_convention_and_tiny_box() -> None:
    region = box_region_mask(BOXES, H, W, STRIDE)
    for k in range(2):
        got = {(int(y), int(x)) for y, x in torch.nonzero(region[k]).tolist()}
        assert got == INSIDE[k]
    # half-open: a box ending exactly on a cell centre excludes that cell
    r = box_region_mask(torch.tensor([[0.0, 0.0, 6.0, 2.0]]), H, W, STRIDE)
    assert {(int(y), int(x)) for y, x in torch.nonzero(r[0]).tolist()} == {(0, 0)}
    # a box containing no cell centre still owns the cell holding its centre
    tiny = torch.tensor([[6.5, 4.2, 7.5, 5.0]])
    r = box_region_mask(tiny, H, W, STRIDE)
    assert torch.nonzero(r[0]).tolist() == [[1, 1]]
    # a thin tall box (no column centre inside) owns the column of its centre over its rows
    thin = torch.tensor([[3.0, 0.0, 4.5, 8.0]])  # centre x = 3.75 -> column 0; rows 0 and 1
    r = box_region_mask(thin, H, W, STRIDE)
    assert torch.nonzero(r[0]).tolist() == [[0, 0], [1, 0]]
    # box centre on a cell boundary with one centre inside: only that cell, no extra column
    edge = torch.tensor([[2.0, 0.0, 6.0, 8.0]])  # contains centre x = 2 only; box centre x = 4 (column 1)
    r = box_region_mask(edge, H, W, STRIDE)
    assert torch.nonzero(r[0]).tolist() == [[0, 0], [1, 0]]


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match=r"dynamic_potential\.py: detection classes"):
        dynamic_potential(_v(), BOXES, SCORES, torch.tensor([1, 3]), None, NUM_STUFF, "C", STRIDE)
    with pytest.raises(ValueError, match="masks must be"):
        dynamic_potential(_v(), BOXES, SCORES, CLASSES, MASKS[:, :1], NUM_STUFF, "C", STRIDE)
    with pytest.raises(ValueError, match="unknown variant"):
        dynamic_potential(_v(), BOXES, SCORES, CLASSES, None, NUM_STUFF, "D", STRIDE)  # type: ignore[arg-type]


def test_filter_detections() -> None:
    keep = torch.tensor([False, True])
    b, s, m = filter_detections(keep, BOXES, SCORES, None)
    assert b is not None and s is not None
    torch.testing.assert_close(b, BOXES[1:])
    torch.testing.assert_close(s, SCORES[1:])
    assert m is None


@pytest.mark.parametrize("variant", ["A", "B", "C"])
@pytest.mark.parametrize("space", ["probabilities", "logits"])
@pytest.mark.parametrize("with_masks", [True, False])
def test_in_box_potential_equals_the_dense_one(variant: str, space: str, with_masks: bool) -> None:
    """Inference builds each thing channel only over its box; training (autograd) takes the dense
    [D, h, w] path. Both give the same Psi, element for element, on random boxes: boxes cut by the border,
    boxes thinner than a cell, a box outside the image and a box covering all of it."""
    gen = torch.Generator().manual_seed(3)
    n_cls, h, w, stride, d = 6, 9, 13, 4, 40
    logits = torch.randn(n_cls, h, w, generator=gen)
    x0 = torch.rand(d, generator=gen) * (w * stride + 20) - 10
    y0 = torch.rand(d, generator=gen) * (h * stride + 20) - 10
    bw = torch.rand(d, generator=gen) * 30 * (torch.rand(d, generator=gen) < 0.8) + 0.3
    bh = torch.rand(d, generator=gen) * 30 * (torch.rand(d, generator=gen) < 0.8) + 0.3
    boxes = torch.stack([x0, y0, x0 + bw, y0 + bh], dim=1)
    boxes[0] = torch.tensor([-50.0, -50.0, -40.0, -45.0])
    boxes[1] = torch.tensor([-5.0, -5.0, w * stride + 5.0, h * stride + 5.0])
    scores = torch.rand(d, generator=gen)
    classes = torch.randint(3, n_cls, (d,), generator=gen)
    masks = torch.rand(d, h, w, generator=gen) if with_masks else None
    args = (boxes, scores, classes, masks, 3, variant, stride)
    with torch.no_grad():
        in_box = dynamic_potential(logits, *args, space=space)
    dense = dynamic_potential(logits.clone().requires_grad_(True), *args, space=space).detach()
    assert torch.equal(in_box, dense)
    region = box_region_mask(boxes, h, w, stride)
    assert region.flatten(1).any(1).all()  # every detection owns a cell, also the box outside the image
    assert torch.equal(in_box[3:] != 0, region & (dense[3:] != 0))


def test_box_region_bounds_are_the_mask_as_rectangles() -> None:
    gen = torch.Generator().manual_seed(4)
    h, w, stride = 7, 11, 4
    xy = torch.rand(60, 2, generator=gen) * 60 - 8
    size = torch.rand(60, 2, generator=gen) * 25
    boxes = torch.cat([xy, xy + size], dim=1)
    bounds = box_region_bounds(boxes, h, w, stride)
    region = box_region_mask(boxes, h, w, stride)
    for k, (y0, y1, x0, x1) in enumerate(bounds.tolist()):
        rect = torch.zeros(h, w, dtype=torch.bool)
        rect[y0:y1, x0:x1] = True
        assert torch.equal(rect, region[k]), k
