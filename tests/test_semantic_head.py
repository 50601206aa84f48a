"""The semantic head / affinity feature extractor of sec. 3.2 / 3.4.2: UPSNet's deformable head with GroupNorm
(``semantic_head: deformable``) and the plain one (``semantic_head: plain``)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from builders import params_without_grad, tiny_config
from torch import nn
from torchvision.ops import DeformConv2d

from unipan_pipeline.categories import CategoryMap
from unipan_pipeline.model import DeformableSemanticHead, SemanticHead, build_model
from unipan_pipeline.model.semantic_head import DeformableConvBlock

torch.set_num_threads(1)


def _pyramid(channels: int = 8, h: int = 16, w: int = 24, batch: int = 2) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        str(k): torch.randn(batch, channels, h >> k, w >> k, generator=g, requires_grad=True)
        for k in range(4)
    }


def test_output_shape_and_shared_subnet() -> None:
    torch.manual_seed(0)
    head = DeformableSemanticHead(8, 5, channels=12, num_convs=2, gn_groups=4)
    calls: list[tuple[int, int]] = []
    head.subnet.register_forward_hook(lambda _m, _i, out: calls.append(tuple(out.shape[-2:])))
    out = head(_pyramid())
    assert out.shape == (2, 5, 16, 24)  # the size of P2
    # ONE subnet run on each of P2..P5 (UPSNet's FCN subnet is shared across levels)
    assert calls == [(16, 24), (8, 12), (4, 6), (2, 3)]
    assert sum(isinstance(m, DeformConv2d) for m in head.modules()) == 2
    assert head.classifier.in_channels == 4 * 12 and head.classifier.kernel_size == (1, 1)
    # the per-level parameters do not grow with the number of levels (shared) unlike the plain head's
    two_levels = DeformableSemanticHead(8, 5, channels=12, num_convs=2, gn_groups=4, levels=("0", "1"))
    n_sub = sum(p.numel() for p in head.subnet.parameters())
    assert n_sub == sum(p.numel() for p in two_levels.subnet.parameters())
    plain = SemanticHead(8, 5, channels=12, num_convs=2, gn_groups=4)
    assert len(plain.branches) == 4


def test_groupnorm_follows_every_convolution() -> None:
    head = DeformableSemanticHead(8, 5, channels=12, num_convs=3, gn_groups=4)
    order: list[str] = []
    for m in head.modules():
        if isinstance(m, (DeformConv2d, nn.GroupNorm)):
            m.register_forward_hook(lambda mod, _i, _o: order.append(type(mod).__name__))
    head(_pyramid())
    assert order == ["DeformConv2d", "GroupNorm"] * 3 * 4  # 3 blocks, 4 levels
    assert all(b.norm.num_groups == 4 for b in head.subnet)


def test_zero_offsets_reproduce_a_plain_convolution() -> None:
    torch.manual_seed(1)
    block = DeformableConvBlock(6, 8, gn_groups=2)
    x = torch.randn(2, 6, 10, 14)
    assert block.offset.weight.abs().sum() == 0 and block.offset.bias.abs().sum() == 0  # zero init
    plain = F.conv2d(x, block.conv.weight, padding=1)
    deformable = block.conv(x, torch.zeros(2, 18, 10, 14))
    torch.testing.assert_close(deformable, plain, rtol=1e-5, atol=1e-5)
    # the whole block at initialisation: ReLU(GN(conv3x3(x)))
    torch.testing.assert_close(block(x), F.relu(block.norm(plain)), rtol=1e-5, atol=1e-5)
    # non-zero offsets sample elsewhere: no longer the plain convolution
    shifted = block.conv(x, torch.full((2, 18, 10, 14), 0.5))
    assert (shifted - plain).abs().max() > 1e-3


def test_deformable_head_under_bf16_autocast() -> None:
    """torchvision's deformable kernels have no bfloat16: the block runs them in fp32 under autocast, on
    bf16 inputs (the FPN's output under autocast) too, and stays close to the fp32 result."""
    torch.manual_seed(3)
    head = DeformableSemanticHead(8, 5, channels=12, num_convs=2, gn_groups=4)
    features = {k: v.detach() for k, v in _pyramid().items()}
    reference = head(features)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head({k: v.to(torch.bfloat16) for k, v in features.items()})
    assert out.shape == reference.shape and torch.isfinite(out).all()
    assert (out.float() - reference).abs().max() < 0.1 * reference.abs().max()


def test_gradients_reach_the_offset_convolutions() -> None:
    torch.manual_seed(2)
    head = DeformableSemanticHead(8, 5, channels=12, num_convs=2, gn_groups=4)
    for block in head.subnet:
        nn.init.normal_(block.offset.weight, std=0.1)  # away from the zero init (integer sample points)
    out = head(_pyramid())
    out.square().mean().backward()
    for block in head.subnet:
        assert block.offset.weight.grad is not None and block.offset.weight.grad.abs().sum() > 0
        assert block.offset.bias.grad is not None and block.offset.bias.grad.abs().sum() > 0
        assert block.conv.weight.grad is not None and block.conv.weight.grad.abs().sum() > 0


def test_network_with_the_deformable_head(tiny_categories: CategoryMap, synthetic_batch: tuple) -> None:
    """semantic_head: deformable gives both V's head and the affinity extractor the architecture (3.4.2);
    the outputs are at stride 4 and one training step reaches every parameter, offsets included."""
    images, targets = synthetic_batch
    torch.manual_seed(0)
    model = build_model(tiny_config(semantic_head="deformable"), tiny_categories)
    assert isinstance(model.semantic_head, DeformableSemanticHead)
    assert isinstance(model.affinity_extractor, DeformableSemanticHead)
    assert model.affinity_extractor.out_channels == model.cfg.affinity_channels
    features = model.backbone(model.batch_images(images[:1]).tensors)
    assert model.semantic_head(features).shape == (1, tiny_categories.num_classes, 64 // 4, 96 // 4)
    model.train()
    losses = model(images, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert params_without_grad(model) == set()  # offset convs included (zero weights, non-zero gradient)
    model.eval()
    out = model(images)
    assert out[0]["panoptic"].shape == images[0].shape[-2:]


def test_default_is_the_plain_head(tiny_categories: CategoryMap) -> None:
    model = build_model(tiny_config(), tiny_categories)
    assert type(model.semantic_head) is SemanticHead and type(model.affinity_extractor) is SemanticHead
    with pytest.raises(ValueError, match="semantic_head"):
        tiny_config(semantic_head="dcn")
