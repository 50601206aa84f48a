"""Backbone (sec. 3.1): ResNet + squeeze-and-excitation on the top ResNet feature + FPN.

``F = FPN(body(x))`` where the stride-32 ResNet feature (``layer4``) goes through a squeeze-and-excitation
block [Hu et al.] "before producing the first FPN feature" (the FPN's top-down path starts there). Output keys
``'0'..'3'`` (P2..P5, strides 4..32) and ``'pool'`` (P6, stride 64, torchvision's ``LastLevelMaxPool``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torchvision.models import resnet
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

from .config import ModelConfig
from .weights import load_into_resnet, resolve_pretrained

FPN_KEYS = ("0", "1", "2", "3", "pool")
"""Keys of the feature dict: P2..P5 (strides 4, 8, 16, 32) and P6 (stride 64)."""
ROI_KEYS = ["0", "1", "2", "3"]


class SqueezeExcitation(nn.Module):
    """Squeeze-and-excitation: ``x * sigmoid(W2 relu(W1 avgpool(x)))``, channel reduction ``reduction``."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        w = x.mean(dim=(2, 3), keepdim=True)
        w = torch.sigmoid(self.fc2(torch.relu(self.fc1(w))))
        return x * w


def norm_layer_factory(norm: str, gn_groups: int = 32) -> Callable[[int], nn.Module]:
    """``"frozen_bn"`` -> FrozenBatchNorm2d, ``"bn"`` -> BatchNorm2d, ``"gn"`` -> GroupNorm(gn_groups)."""
    if norm == "frozen_bn":
        return FrozenBatchNorm2d
    if norm == "bn":
        return nn.BatchNorm2d
    if norm == "gn":
        return lambda c: nn.GroupNorm(_groups(c, gn_groups), c)
    raise ValueError(f"unknown norm {norm!r}: choose 'frozen_bn', 'bn' or 'gn'")


def _groups(channels: int, wanted: int) -> int:
    g = min(wanted, channels)
    while channels % g:
        g -= 1
    return g


class ResNetFPNBackbone(nn.Module):
    """ResNet body -> SE on ``layer4`` -> FPN with a max-pool P6 level.

    Args:
        depth: 18, 34, 50 or 101.
        norm: ``"frozen_bn"``, ``"bn"`` or ``"gn"`` (ResNet norm layers).
        fpn_channels: channels of every FPN output.
        trainable_layers: ResNet stages that learn, counted from ``layer4`` down (5 = all, incl. ``conv1``).
        pretrained_state: ResNet state dict to load (``None`` = random init).
    """

    def __init__(
        self,
        depth: int = 50,
        *,
        norm: str = "frozen_bn",
        fpn_channels: int = 256,
        trainable_layers: int = 3,
        se_reduction: int = 16,
        gn_groups: int = 32,
        pretrained_state: dict[str, Tensor] | None = None,
        pretrained_source: str = "state dict",
    ) -> None:
        super().__init__()
        net = getattr(resnet, f"resnet{depth}")(weights=None, norm_layer=norm_layer_factory(norm, gn_groups))
        if pretrained_state is not None:
            load_into_resnet(net, pretrained_state, pretrained_source)
        stages = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
        if trainable_layers == 5:
            stages.append("bn1")
        for name, param in net.named_parameters():
            if all(not name.startswith(s) for s in stages):
                param.requires_grad_(False)
        self.body = IntermediateLayerGetter(
            net, return_layers={"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"}
        )
        c2 = net.inplanes // 8  # layer1 width: 64 (basic blocks) or 256 (bottlenecks)
        in_channels = [c2, c2 * 2, c2 * 4, c2 * 8]
        self.se = SqueezeExcitation(in_channels[-1], se_reduction)
        self.fpn = FeaturePyramidNetwork(in_channels, fpn_channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = fpn_channels

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        """``x`` [B,3,H,W] (H, W divisible by 32) -> ``'0','1','2','3','pool'`` maps [B,C,H/s,W/s]."""
        feats = self.body(x)
        feats["3"] = self.se(feats["3"])
        return self.fpn(feats)


def build_backbone(cfg: ModelConfig) -> ResNetFPNBackbone:
    """Backbone from the config, loading ``cfg.pretrained`` (see :mod:`.weights`)."""
    state = resolve_pretrained(cfg.pretrained, cfg.backbone_depth)
    return ResNetFPNBackbone(
        depth=cfg.backbone_depth,
        norm=cfg.norm,
        fpn_channels=cfg.fpn_channels,
        trainable_layers=cfg.trainable_layers,
        se_reduction=cfg.se_reduction,
        gn_groups=cfg.gn_groups,
        pretrained_state=state,
        pretrained_source=str(cfg.pretrained),
    )
