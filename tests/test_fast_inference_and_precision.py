"""Fast paths of the performance work, each against the computation it replaces, and mixed precision.

* the sparse full-resolution argmax equals the dense bilinear upsampling + argmax;
* the in-box mask paste equals the whole-grid ``grid_sample`` paste (values and gradients);
* a fixed small model's panoptic output is unchanged when the old computations are swapped back in (dense
  paste, argmax, potential; phi0/phi1 as convolutions);
* the affinity and the matching loss stay finite and fp32 under fp16/bf16 autocast where fp16 overflows;
* ``amp: auto`` picks bf16 only where the hardware has it; bf16 and fp32 steps agree within tolerance;
* the cap on the panoptic head's training detections keeps the top-scoring ones.
"""

from __future__ import annotations

import importlib
import warnings

import pytest
import torch
import torch.nn.functional as F
from builders import tiny_config

from unipan_pipeline.categories import CategoryMap
from unipan_pipeline.model import build_model
from unipan_pipeline.model import panoptic_network as network_module
from unipan_pipeline.model.detection import paste_masks
from unipan_pipeline.model.instance_affinity import DenseInstanceAffinity
from unipan_pipeline.model.panoptic_matching_loss import panoptic_matching_loss
from unipan_pipeline.model.upsampled_argmax import (
    first_argmax,
    upsampled_argmax,
    upsampled_argmax_reference,
)
from unipan_pipeline.training import precision
from unipan_pipeline.training.precision import Autocast, resolve_amp

# the modules, not the functions of the same name that unipan_pipeline.model exports
potential_module = importlib.import_module("unipan_pipeline.model.dynamic_potential")
affinity_module = importlib.import_module("unipan_pipeline.model.instance_affinity")
upsampled_argmax_module = importlib.import_module("unipan_pipeline.model.upsampled_argmax")

torch.set_num_threads(1)


def dense_paste(masks: torch.Tensor, boxes: torch.Tensor, height: int, width: int, stride: float = 1.0):
    """The previous paste: one ``grid_sample`` of every mask over the whole grid."""
    if masks.ndim == 4:
        masks = masks[:, 0]
    d = masks.shape[0]
    if d == 0:
        return masks.new_zeros((0, height, width))
    b = boxes.detach().to(masks.dtype)
    xs = (torch.arange(width, dtype=masks.dtype) + 0.5) * stride
    ys = (torch.arange(height, dtype=masks.dtype) + 0.5) * stride
    bw = (b[:, 2] - b[:, 0]).clamp(min=1e-3)
    bh = (b[:, 3] - b[:, 1]).clamp(min=1e-3)
    gx = (xs[None, :] - b[:, 0, None]) / bw[:, None] * 2 - 1
    gy = (ys[None, :] - b[:, 1, None]) / bh[:, None] * 2 - 1
    grid = torch.stack([gx[:, None, :].expand(d, height, width), gy[:, :, None].expand(d, height, width)], -1)
    return F.grid_sample(masks[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[
        :, 0
    ]


# ------------------------------------------------------------------------------------------ argmax
@pytest.mark.parametrize(
    ("k", "h", "w", "height", "width"),
    [(5, 8, 9, 30, 33), (7, 16, 16, 64, 64), (1, 4, 4, 16, 16), (12, 20, 31, 77, 121), (4, 1, 6, 3, 22)],
)
@pytest.mark.parametrize("kind", ["noise", "blocks", "ties", "double"])
def test_sparse_argmax_equals_dense(  # noqa: PLR0917 - parametrised
    k: int, h: int, w: int, height: int, width: int, kind: str
) -> None:
    g = torch.Generator().manual_seed(k * 100 + h)
    x = torch.randn(k, h, w, generator=g)
    if kind == "blocks":  # large regions of one winner, as in a real P
        x = (
            torch.randn(k, h // 4 + 1, w // 4 + 1, generator=g)
            .repeat_interleave(4, 1)
            .repeat_interleave(4, 2)
        )
        x = x[:, :h, :w].contiguous() + 0.01 * torch.randn(k, h, w, generator=g)
    elif kind == "ties":  # many exact ties between channels
        x = x.round()
    elif kind == "double":
        x = x.double()
    expected = upsampled_argmax_reference(x, (height, width))
    assert torch.equal(upsampled_argmax(x, (height, width), dense_above=1.0), expected)  # sparse path
    assert torch.equal(upsampled_argmax(x, (height, width), dense_above=0.0), expected)  # candidate-dense
    assert torch.equal(upsampled_argmax(x, (height, width)), expected)


@pytest.mark.parametrize("strip", [1, 3, 7])
def test_candidate_dense_argmax_in_strips_equals_dense(strip: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The candidate-dense path works strip by strip; strips that cut the grid (halo rows at their seams,
    the image border in the first and last one) give the dense upsampling's argmax."""
    monkeypatch.setattr(upsampled_argmax_module, "_STRIP", strip)
    g = torch.Generator().manual_seed(strip)
    for k, h, w, height, width in [(6, 11, 9, 44, 33), (3, 8, 5, 29, 18), (9, 2, 7, 5, 28)]:
        x = torch.randn(k, h, w, generator=g)
        x[:, : h // 2] = x[:, : h // 2].round()  # exact ties too
        expected = upsampled_argmax_reference(x, (height, width))
        assert torch.equal(upsampled_argmax(x, (height, width), dense_above=0.0), expected)


@pytest.mark.parametrize("kind", ["noise", "ties"])
def test_first_argmax_equals_argmax(kind: str) -> None:
    x = torch.randn(9, 13, 17, generator=torch.Generator().manual_seed(1))
    x = x.round() if kind == "ties" else x  # ties go to the lowest channel, as argmax's
    assert torch.equal(first_argmax(x), x.argmax(0))


def test_sparse_argmax_rejects_a_size_beyond_the_grid() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        upsampled_argmax(torch.zeros(2, 4, 4), (17, 16))


# ------------------------------------------------------------------------------------------ paste
@pytest.mark.parametrize("stride", [1.0, 4.0])
def test_in_box_paste_equals_full_grid_paste(stride: float) -> None:
    g = torch.Generator().manual_seed(3)
    height, width = (60, 90) if stride == 1 else (15, 23)
    n = 60
    xy = torch.rand(n, 2, generator=g) * torch.tensor([90.0, 60.0]) * 1.3 - 12  # some cut by the border
    wh = torch.rand(n, 2, generator=g) * 40
    wh[:10] *= 0.01  # sub-pixel boxes
    boxes = torch.cat([xy, xy + wh], 1)
    masks = torch.rand(n, 28, 28, generator=g, requires_grad=True)
    ours = paste_masks(masks, boxes, height, width, stride)
    ref = dense_paste(masks, boxes, height, width, stride)
    assert torch.equal(ours, ref)
    weights = torch.rand(ours.shape, generator=g)
    (g_ours,) = torch.autograd.grad((ours * weights).sum(), masks)
    (g_ref,) = torch.autograd.grad((ref * weights).sum(), masks)
    torch.testing.assert_close(g_ours, g_ref)
    assert paste_masks(masks[:0], boxes[:0], height, width, stride).shape == (0, height, width)


# ------------------------------------------------------------------------------------------ model output
def _reference_argmax(x: torch.Tensor, size: tuple[int, int], stride: int = 4, **_: object) -> torch.Tensor:
    """The dense upsampling + argmax (ignores ``coarse``, a precomputed argmax of the fast path)."""
    return upsampled_argmax_reference(x, size, stride)


@pytest.mark.parametrize("inference", ["argmax", "heuristic"])
def test_panoptic_output_unchanged_by_the_fast_paths(
    tiny_categories: CategoryMap, synthetic_batch: tuple, monkeypatch: pytest.MonkeyPatch, inference: str
) -> None:
    images, _ = synthetic_batch
    torch.manual_seed(0)
    model = build_model(tiny_config(inference=inference, heuristic_score_thresh=0.0), tiny_categories).eval()
    model.return_masks = True
    with torch.no_grad():
        new = model(images)
        monkeypatch.setattr(network_module, "paste_masks", dense_paste)
        monkeypatch.setattr(network_module, "upsampled_argmax", _reference_argmax)
        monkeypatch.setattr(
            potential_module, "cpu_inference", lambda *_: False
        )  # the dense [D, h, w] potential
        monkeypatch.setattr(affinity_module, "cpu_inference", lambda *_: False)  # 1x1 convolutions
        old = model(images)
    for a, b in zip(new, old, strict=True):
        assert a["boxes"].shape[0] > 0
        assert torch.equal(a["panoptic"], b["panoptic"]) and a["segments_info"] == b["segments_info"]
        assert torch.equal(a["semantic"], b["semantic"]) and torch.equal(a["masks"], b["masks"])


# ------------------------------------------------------------------------------------------ overflow
def _large_affinity_inputs() -> tuple[DenseInstanceAffinity, torch.Tensor, torch.Tensor]:
    """h x w = 128 x 256 cells, features ~3: phi1(Q)^T Psi sums ~32k cells of ~3 -> ~1e5 > fp16's 65504."""
    torch.manual_seed(0)
    head = DenseInstanceAffinity(8, normalize="sqrt_c_hw")
    with torch.no_grad():
        for phi in (head.phi0, head.phi1):
            phi[0].weight.copy_(torch.eye(8)[:, :, None, None])
            phi[0].bias.zero_()
    q = 3.0 + 0.1 * torch.rand(8, 128, 256)
    psi = torch.zeros(5, 128, 256)
    psi[0] = 1.0  # a stuff class that fills the crop
    psi[1:, 40:80, 50:120] = 0.8
    return head, q, psi


def test_affinity_does_not_overflow_under_fp16_autocast() -> None:
    head, q, psi = _large_affinity_inputs()
    f1 = head.phi1(q[None]).reshape(8, -1)
    naive = f1.half() @ psi.reshape(5, -1).half().t()  # what an fp16 reduction gives
    assert not torch.isfinite(naive).all(), "the inputs must overflow fp16 for this test to mean anything"
    expected = head(q, psi)
    for dtype in (torch.float16, torch.bfloat16):
        with torch.autocast("cpu", dtype=dtype):
            p = head(q, psi)
        assert p.dtype == torch.float32 and torch.isfinite(p).all()
        torch.testing.assert_close(p, expected, rtol=2e-2, atol=2e-2)


def test_matching_loss_is_fp32_under_autocast() -> None:
    g = torch.Generator().manual_seed(1)
    p = torch.rand(6, 8, 12, generator=g) * 1e-3  # tiny probabilities: log needs fp32
    target = torch.randint(0, 6, (32, 48), generator=g)
    expected = panoptic_matching_loss(p, target)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = panoptic_matching_loss(p.bfloat16(), target)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, expected, rtol=1e-2, atol=1e-2)


# ------------------------------------------------------------------------------------------ amp
def test_amp_auto_follows_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    monkeypatch.setattr(precision, "native_bf16", lambda device: True)
    assert resolve_amp("auto", cpu) == "bf16" and Autocast("auto", cpu).dtype == torch.bfloat16
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    assert resolve_amp("auto", cpu) == "off" and not Autocast("auto", cpu).enabled
    with pytest.warns(UserWarning, match="emulated"):
        assert resolve_amp("bf16", cpu) == "bf16"
    with pytest.warns(UserWarning, match="CUDA only"):
        assert resolve_amp("fp16", cpu) == "off"
    with pytest.raises(ValueError, match="amp must be"):
        resolve_amp("fp8", cpu)


def test_native_bf16_probe_reads_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert not precision.native_bf16(cpu)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert precision.native_bf16(cpu)


def test_bf16_and_fp32_training_steps_agree(tiny_categories: CategoryMap, synthetic_batch: tuple) -> None:
    """Same weights and batch: losses agree within 5 %, gradient directions closely (cosine > 0.95)."""
    images, targets = synthetic_batch
    results = []
    for amp in ("off", "bf16"):
        torch.manual_seed(0)
        model = build_model(tiny_config(), tiny_categories).train()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            autocast = Autocast(amp, torch.device("cpu"))
        torch.manual_seed(1)  # the same RoI sampling in both
        with autocast():
            losses = model(images, targets)
        sum(losses.values()).backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        results.append(({k: float(v.detach()) for k, v in losses.items()}, grads))
    (l32, g32), (l16, g16) = results
    assert l32.keys() == l16.keys()
    for key in l32:
        assert abs(l16[key] - l32[key]) <= 0.05 * abs(l32[key]) + 1e-3, (key, l32[key], l16[key])
    assert float(F.cosine_similarity(g32, g16, dim=0)) > 0.95


def test_training_detection_cap_keeps_the_top_scoring(
    tiny_categories: CategoryMap, synthetic_batch: tuple
) -> None:
    images, targets = synthetic_batch
    torch.manual_seed(0)
    model = build_model(tiny_config(), tiny_categories).train()
    image_list = model.batch_images(images)
    features = model.backbone(image_list.tensors)
    with torch.no_grad():
        full, _ = model.detector(image_list, features, targets, detect=True)
        capped, _ = model.detector(image_list, features, targets, detect=True, max_detections=3)
    for f, c in zip(full, capped, strict=True):
        assert len(f["scores"]) > 3 and len(c["scores"]) == 3
        torch.testing.assert_close(
            c["scores"].sort(descending=True).values, f["scores"].sort(descending=True).values[:3]
        )
    torch.manual_seed(0)
    capped_model = build_model(tiny_config(panoptic_max_detections_train=3), tiny_categories).train()
    losses = capped_model(images, targets)
    assert torch.isfinite(losses["loss_panoptic"])
    with pytest.raises(ValueError, match="panoptic_max_detections_train"):
        tiny_config(panoptic_max_detections_train=0)
