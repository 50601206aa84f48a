"""The detector's CPU speed-ups equal torchvision's computations: RoIAlign on every thread
(model/roi_align.py) and the mask branch in the caller's low precision on padded RoI batches
(model/mask_head.py)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator

import pytest
import torch
from builders import tiny_config
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign

from unipan_pipeline.categories import CategoryMap
from unipan_pipeline.model import build_model
from unipan_pipeline.model import roi_align as roi_align_module
from unipan_pipeline.model.mask_head import MaskHead, MaskPredictor, mask_branch_precision
from unipan_pipeline.model.roi_align import ThreadedMultiScaleRoIAlign

KEYS = ["0", "1", "2", "3"]


@pytest.fixture
def two_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _features(seed: int = 0) -> OrderedDict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return OrderedDict(
        (k, torch.randn(2, 8, 64 >> i, 128 >> i, generator=g).requires_grad_()) for i, k in enumerate(KEYS)
    )


def _boxes(counts: tuple[int, ...], max_size: float, seed: int = 0) -> list[torch.Tensor]:
    """Random xyxy boxes in a 256x512 image, sides 1..max_size px (a few cut by the border)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in counts:
        xy = torch.rand(n, 2, generator=g) * torch.tensor([512.0, 256.0])
        wh = 1 + torch.rand(n, 2, generator=g) * max_size
        out.append(torch.cat([xy, xy + wh], dim=1))
    return out


@pytest.mark.parametrize(
    ("counts", "max_size"),
    [((150, 90), 220.0), ((40, 0), 20.0), ((3, 2), 300.0)],  # every level; the two lowest only; few RoIs
)
def test_threaded_roi_align_equals_torchvision(
    two_threads: None, counts: tuple[int, ...], max_size: float
) -> None:
    feats = _features()
    boxes = _boxes(counts, max_size)
    sizes = [(256, 512)] * 2
    reference = MultiScaleRoIAlign(KEYS, 7, 2)
    threaded = ThreadedMultiScaleRoIAlign(KEYS, 7, 2)
    a = reference(feats, boxes, sizes)
    b = threaded(feats, boxes, sizes)
    assert torch.equal(a, b)
    grad_out = torch.randn_like(a)
    ga = torch.autograd.grad(a, list(feats.values()), grad_out)
    gb = torch.autograd.grad(b, list(feats.values()), grad_out)
    for x, y in zip(ga, gb, strict=True):
        torch.testing.assert_close(y, x, rtol=1e-5, atol=1e-5)  # the chunks' sums in another order


def test_roi_chunks_cover_every_roi_once() -> None:
    levels = torch.tensor([0] * 37 + [1] * 5 + [3] * 16)[
        torch.randperm(58, generator=torch.Generator().manual_seed(0))
    ]
    tasks = roi_align_module._chunks(levels, 4, workers=2)
    seen = torch.cat([idx for _, idx in tasks]).sort().values
    assert torch.equal(seen, torch.arange(58))
    for level, idx in tasks:
        assert bool((levels[idx] == level).all())
    per_level = {lv: sum(1 for t in tasks if t[0] == lv) for lv in (0, 1, 3)}
    assert per_level == {0: 2, 1: 1, 3: 2}  # a level of 5 RoIs is not split (MIN_ROIS_PER_CHUNK = 8)


def test_threaded_roi_align_pool_is_rebuilt_after_a_fork(monkeypatch: pytest.MonkeyPatch) -> None:
    pool = roi_align_module._executor(2)
    assert roi_align_module._executor(2) is pool
    monkeypatch.setattr(roi_align_module.os, "getpid", lambda: -1)  # as in a forked child
    assert roi_align_module._executor(2) is not pool


def test_one_thread_uses_torchvision(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        monkeypatch.setattr(roi_align_module, "threaded_roi_align", None)  # would raise if called
        feats = _features()
        out = ThreadedMultiScaleRoIAlign(KEYS, 7, 2)(feats, _boxes((5, 5), 50.0), [(256, 512)] * 2)
    finally:
        torch.set_num_threads(before)
    assert out.shape == (10, 8, 7, 7)


# ------------------------------------------------------------------------------------------ mask branch
def _mask_branch(bucket: int) -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    head, pred = MaskRCNNHeads(16, [16, 16], 1), MaskRCNNPredictor(16, 16, 3)
    new_head, new_pred = MaskHead(16, [16, 16], 1, bucket=bucket), MaskPredictor(16, 16, 3, bucket=bucket)
    new_head.load_state_dict(head.state_dict())  # torchvision's parameter names
    new_pred.load_state_dict(pred.state_dict())
    return head, pred, new_head, new_pred


@pytest.mark.parametrize("n", [1, 13, 32])
def test_padded_mask_branch_equals_torchvision(n: int) -> None:
    head, pred, new_head, new_pred = _mask_branch(bucket=32)
    seen: list[int] = []
    new_head[0].register_forward_hook(lambda _m, inp, _o: seen.append(inp[0].shape[0]))
    x = torch.randn(n, 16, 14, 14, generator=torch.Generator().manual_seed(1))
    outs, grads = [], []
    for h, p in ((head, pred), (new_head, new_pred)):
        xi = x.clone().requires_grad_()
        y = p(h(xi))
        y.pow(2).sum().backward()
        outs.append(y)
        grads.append([xi.grad, *[q.grad for q in (*h.parameters(), *p.parameters())]])
    assert seen == [32]  # padded to the bucket
    assert outs[1].shape == (n, 3, 28, 28)
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-4, atol=1e-5)  # fp32 rounding
    for a, b in zip(grads[0], grads[1], strict=True):  # the same sums in another order: fp32 rounding
        assert float((b - a).norm() / a.norm()) < 1e-5
    with torch.no_grad():  # inference: no padding
        new_pred(new_head(x))
    assert seen == [32, n]


def test_mask_branch_runs_in_the_compute_dtype() -> None:
    head, pred, new_head, new_pred = _mask_branch(bucket=32)
    dtypes: list[torch.dtype] = []
    new_pred.mask_fcn_logits.register_forward_hook(lambda _m, _i, out: dtypes.append(out.dtype))
    x = torch.randn(20, 16, 14, 14, generator=torch.Generator().manual_seed(2))
    with mask_branch_precision(torch.bfloat16):
        y = new_pred(new_head(x))
    assert dtypes == [torch.bfloat16] and y.dtype == torch.float32
    torch.testing.assert_close(y, pred(head(x)), rtol=0.05, atol=0.05)


def test_detector_mask_branch_follows_the_callers_autocast(
    tiny_categories: CategoryMap, synthetic_batch: tuple
) -> None:
    images, targets = synthetic_batch
    torch.manual_seed(0)
    model = build_model(tiny_config(), tiny_categories).train()
    heads = model.detector.roi_heads
    assert isinstance(heads.mask_head, MaskHead) and isinstance(
        heads.box_roi_pool, ThreadedMultiScaleRoIAlign
    )
    dtypes: list[torch.dtype] = []
    heads.mask_predictor.mask_fcn_logits.register_forward_hook(lambda _m, _i, out: dtypes.append(out.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model(images, targets)
    assert torch.isfinite(sum(losses.values()))
    assert dtypes and set(dtypes) == {torch.bfloat16}
    dtypes.clear()
    model.eval()
    with torch.no_grad():  # right after the bf16 step, without autocast: fp32
        batch = model.batch_images(images)
        feats = model.backbone(batch.tensors)
        boxes, labels = [t["boxes"] for t in targets], [t["labels"] for t in targets]
        model.detector.mask_probs(feats, boxes, labels, batch.image_sizes)
        model(images)
    assert dtypes and set(dtypes) == {torch.float32}
