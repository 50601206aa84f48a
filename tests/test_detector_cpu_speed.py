"""The detector's CPU speed-ups equal torchvision's computations: RoIAlign on every thread
(model/roi_align.py) and the mask branch in the caller's low precision on padded RoI batches
(model/mask_head.py)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
import torch
import torchvision
from builders import tiny_config
from torch.utils._python_dispatch import TorchDispatchMode
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign

from unipan_pipeline.categories import CategoryMap
from unipan_pipeline.model import build_model
from unipan_pipeline.model import roi_align as roi_align_module
from unipan_pipeline.model.mask_head import MaskHead, MaskPredictor, mask_branch_precision
from unipan_pipeline.model.roi_align import CpuMultiScaleRoIAlign

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
    two_threads: None, counts: tuple[int, ...], max_size: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(roi_align_module, "SEPARABLE_MAX_CELLS", 0)  # every level on the threaded kernels
    feats = _features()
    boxes = _boxes(counts, max_size)
    sizes = [(256, 512)] * 2
    reference = MultiScaleRoIAlign(KEYS, 7, 2)
    threaded = CpuMultiScaleRoIAlign(KEYS, 7, 2)
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
        monkeypatch.setattr(roi_align_module, "SEPARABLE_MAX_CELLS", 0)
        feats = _features()
        out = CpuMultiScaleRoIAlign(KEYS, 7, 2)(feats, _boxes((5, 5), 50.0), [(256, 512)] * 2)
    finally:
        torch.set_num_threads(before)
    assert out.shape == (10, 8, 7, 7)


@pytest.mark.parametrize(("output_size", "sampling_ratio"), [(7, 2), (14, 2), (5, 3)])
def test_separable_roi_align_equals_torchvision(output_size: int, sampling_ratio: int) -> None:
    g = torch.Generator().manual_seed(3)
    feature = torch.randn(3, 6, 12, 20, generator=g)
    scale = 0.25  # a 48x80 image
    n = 60
    xy = torch.rand(n, 2, generator=g) * torch.tensor([100.0, 60.0]) - 10  # some cut by or beyond the border
    wh = torch.rand(n, 2, generator=g) * torch.tensor([70.0, 40.0])
    wh[:8] *= 0.01  # sub-pixel boxes (their extent is clamped to one cell)
    rois = torch.cat([torch.randint(0, 3, (n, 1), generator=g).float(), xy, xy + wh], dim=1)
    rois[-3:, 1:] = torch.tensor([[-30.0, -30.0, -20.0, -20.0], [90.0, 50.0, 99.0, 58.0], [0, 0, 80.0, 48.0]])
    fa, fb = feature.clone().requires_grad_(), feature.clone().requires_grad_()
    size = (output_size, output_size)
    a = torchvision.ops.roi_align(fa, rois, size, scale, sampling_ratio, aligned=False)
    b = roi_align_module.separable_roi_align(fb, rois, scale, size, sampling_ratio)
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)  # the same weights, summed in another order
    assert (
        float(a[-3].detach().abs().max()) == 0.0 and float(b[-3].detach().abs().max()) == 0.0
    )  # wholly outside: zeros
    grad_out = torch.randn(a.shape, generator=g)
    a.backward(grad_out)
    b.backward(grad_out)
    torch.testing.assert_close(fb.grad, fa.grad, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="sampling_ratio"):
        roi_align_module.separable_roi_align(feature, rois, scale, size, 0)


@pytest.mark.parametrize("threads", [1, 2])
def test_small_levels_separable_large_levels_threaded_equal_torchvision(
    threads: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # levels of 8192, 2048, 512 and 128 cells: the first on the kernels, the others as matrix products
    monkeypatch.setattr(roi_align_module, "SEPARABLE_MAX_CELLS", 2048)
    calls: list[int] = []
    separable = roi_align_module.separable_roi_align
    monkeypatch.setattr(
        roi_align_module,
        "separable_roi_align",
        lambda f, *a: calls.append(f.shape[-1]) or separable(f, *a),
    )
    feats = _features()
    boxes = _boxes((150, 90), 600.0)  # RoIs on every level
    sizes = [(256, 512)] * 2
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a = MultiScaleRoIAlign(KEYS, 7, 2)(feats, boxes, sizes)
        b = CpuMultiScaleRoIAlign(KEYS, 7, 2)(feats, boxes, sizes)
    finally:
        torch.set_num_threads(before)
    assert sorted(calls) == [16, 32, 64]
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    grad_out = torch.randn_like(a)
    ga = torch.autograd.grad(a, list(feats.values()), grad_out)
    gb = torch.autograd.grad(b, list(feats.values()), grad_out)
    for x, y in zip(ga, gb, strict=True):
        torch.testing.assert_close(y, x, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------ mask branch
class _ProductDtypes(TorchDispatchMode):
    """Inside the block, the result dtypes of every convolution and matrix product, in call order."""

    _stack: ClassVar[list[_ProductDtypes]] = []

    def __init__(self) -> None:
        super().__init__()
        self.dtypes: list[torch.dtype] = []

    def __enter__(self) -> list[torch.dtype]:  # type: ignore[override]
        super().__enter__()
        return self.dtypes

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        if func.overloadpacket in (torch.ops.aten.convolution, torch.ops.aten.addmm, torch.ops.aten.mm):
            self.dtypes.append(out.dtype)
        return out

    @classmethod
    def open(cls) -> None:
        """Enter a new recorder (a forward pre-hook); :meth:`close` (the forward hook) leaves it."""
        cls._stack.append(mode := cls())
        mode.__enter__()

    @classmethod
    def close(cls) -> list[torch.dtype]:
        mode = cls._stack.pop()
        mode.__exit__(None, None, None)
        return mode.dtypes


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
    x = torch.randn(20, 16, 14, 14, generator=torch.Generator().manual_seed(2))
    with mask_branch_precision(torch.bfloat16), _ProductDtypes() as dtypes:
        y = new_pred(new_head(x))
    assert len(dtypes) == 4 and set(dtypes) == {torch.bfloat16}  # 2 convolutions, 2 matrix products
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, pred(head(x)), rtol=0.05, atol=0.05)


def test_detector_mask_branch_follows_the_callers_autocast(
    tiny_categories: CategoryMap, synthetic_batch: tuple
) -> None:
    images, targets = synthetic_batch
    torch.manual_seed(0)
    model = build_model(tiny_config(), tiny_categories).train()
    heads = model.detector.roi_heads
    assert isinstance(heads.mask_head, MaskHead) and isinstance(heads.box_roi_pool, CpuMultiScaleRoIAlign)
    dtypes: list[torch.dtype] = []
    heads.mask_predictor.register_forward_pre_hook(lambda _m, _i: _ProductDtypes.open())
    heads.mask_predictor.register_forward_hook(lambda _m, _i, _o: dtypes.extend(_ProductDtypes.close()))
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
