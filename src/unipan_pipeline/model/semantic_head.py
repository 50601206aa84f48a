"""Semantic segmentation submodule (sec. 3.2) and the affinity feature extractor (sec. 3.4.2).

Two heads over the FPN levels P2..P5 (``ModelConfig.semantic_head``):

* :class:`DeformableSemanticHead` (``"deformable"``, the paper's): UPSNet's head with GroupNorm - ONE subnet
  of ``num_convs`` 3x3 deformable convolutions (offsets predicted by a plain 3x3 conv initialised to zero,
  so training starts from a plain convolution), each followed by GroupNorm and ReLU, shared by the four
  levels; each level's output upsampled bilinearly to stride 4, concatenated, a 1x1 classifier.
* :class:`SemanticHead` (``"plain"``, the CPU demo's): the same layout with plain 3x3 convolutions and one
  branch per level (not shared); DeformConv2d costs ~15x a 3x3 conv on a CPU.

Both produce ``out_channels`` maps at stride d = 4.

* As the semantic head, ``out_channels = N_st + N_th`` and the output is the logit map of ``V``
  (``V = softmax(logits)``); the loss is :func:`semantic_loss`.
* As the affinity feature extractor ("the same architecture as our semantic segmentation submodule"),
  ``out_channels = C = 128`` and the output is the feature tensor ``Q``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import DeformConv2d

from ..categories import IGNORE_INDEX


def _gn(channels: int, groups: int) -> nn.GroupNorm:
    g = min(groups, channels)
    while channels % g:
        g -= 1
    return nn.GroupNorm(g, channels)


class SemanticHead(nn.Module):
    """FPN levels -> ``out_channels`` maps at stride 4.

    Args:
        in_channels: FPN channels.
        out_channels: ``N_st + N_th`` (semantic logits) or C (affinity features Q).
        channels: width of the per-level convolutions (UPSNet: 128).
        num_convs: 3x3 conv + GN + ReLU blocks per level.
        levels: FPN keys to use, finest first (stride 4, 8, 16, 32).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        channels: int = 128,
        num_convs: int = 2,
        gn_groups: int = 32,
        levels: Sequence[str] = ("0", "1", "2", "3"),
    ) -> None:
        super().__init__()
        self.levels = tuple(levels)
        self.branches = nn.ModuleList()
        for _ in self.levels:
            layers: list[nn.Module] = []
            c_in = in_channels
            for _ in range(num_convs):
                layers += [
                    nn.Conv2d(c_in, channels, 3, padding=1, bias=False),
                    _gn(channels, gn_groups),
                    nn.ReLU(),
                ]
                c_in = channels
            self.branches.append(nn.Sequential(*layers))
        self.classifier = nn.Conv2d(channels * len(self.levels), out_channels, 1)
        self.out_channels = out_channels

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        """``features`` (FPN dict) -> [B, out_channels, H/4, W/4] (the size of level ``levels[0]``)."""
        size = features[self.levels[0]].shape[-2:]
        maps = []
        for key, branch in zip(self.levels, self.branches, strict=True):
            y = branch(features[key])
            if y.shape[-2:] != size:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            maps.append(y)
        return self.classifier(torch.cat(maps, dim=1))


class DeformableConvBlock(nn.Module):
    """3x3 deformable conv (offsets from a zero-initialised 3x3 conv) -> GroupNorm -> ReLU (UPSNet + GN)."""

    def __init__(self, in_channels: int, out_channels: int, gn_groups: int) -> None:
        super().__init__()
        self.offset = nn.Conv2d(in_channels, 2 * 3 * 3, 3, padding=1)
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)
        self.conv = DeformConv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.norm = _gn(out_channels, gn_groups)

    def forward(self, x: Tensor) -> Tensor:
        offsets = self.offset(x)
        # torchvision's deformable kernels have no bfloat16 (CPU, CUDA): under autocast they run in fp32
        with torch.autocast(device_type=x.device.type, enabled=False):
            y = self.conv(x.float(), offsets.float())
        return F.relu(self.norm(y))


class DeformableSemanticHead(nn.Module):
    """UPSNet's semantic head with GroupNorm (sec. 3.2): one deformable subnet SHARED across P2..P5.

    Args:
        in_channels: FPN channels.
        out_channels: ``N_st + N_th`` (semantic logits) or C (affinity features Q, sec. 3.4.2).
        channels: width of the subnet (UPSNet: 128).
        num_convs: deformable conv + GN + ReLU blocks of the subnet.
        levels: FPN keys to use, finest first (stride 4, 8, 16, 32).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        channels: int = 128,
        num_convs: int = 2,
        gn_groups: int = 32,
        levels: Sequence[str] = ("0", "1", "2", "3"),
    ) -> None:
        super().__init__()
        self.levels = tuple(levels)
        self.subnet = nn.Sequential(
            *(
                DeformableConvBlock(in_channels if i == 0 else channels, channels, gn_groups)
                for i in range(num_convs)
            )
        )
        self.classifier = nn.Conv2d(channels * len(self.levels), out_channels, 1)
        self.out_channels = out_channels

    def forward(self, features: Mapping[str, Tensor]) -> Tensor:
        """``features`` (FPN dict) -> [B, out_channels, H/4, W/4] (the size of level ``levels[0]``)."""
        size = features[self.levels[0]].shape[-2:]
        maps = []
        for key in self.levels:
            y = self.subnet(features[key])
            if y.shape[-2:] != size:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            maps.append(y)
        return self.classifier(torch.cat(maps, dim=1))


def build_semantic_head(
    kind: str,
    in_channels: int,
    out_channels: int,
    *,
    channels: int,
    num_convs: int,
    gn_groups: int,
) -> SemanticHead | DeformableSemanticHead:
    """The head of ``ModelConfig.semantic_head`` (``"deformable"`` or ``"plain"``)."""
    if kind == "deformable":
        cls: type[SemanticHead] | type[DeformableSemanticHead] = DeformableSemanticHead
    elif kind == "plain":
        cls = SemanticHead
    else:
        raise ValueError(f"semantic_head={kind!r}: choose 'deformable' or 'plain'")
    return cls(in_channels, out_channels, channels=channels, num_convs=num_convs, gn_groups=gn_groups)


def semantic_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Pixel-wise cross entropy of ``V`` against the semantic target (ignore :data:`IGNORE_INDEX`).

    The stride-4 logits are upsampled bilinearly to the target size (the padded input size: targets are
    padded with the ignore label), as UPSNet does; thin structures keep their labels that way.

    Args:
        logits: [B, N_cls, h, w] with ``4h``/``4w`` equal to the target size (or any size: it is resized).
        targets: [B, H, W] int64 train ids, 255 = ignore.
    """
    if logits.shape[-2:] != targets.shape[-2:]:
        logits = F.interpolate(logits, size=targets.shape[-2:], mode="bilinear", align_corners=False)
    if bool((targets != IGNORE_INDEX).any()):
        return F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)
    return logits.sum() * 0.0
