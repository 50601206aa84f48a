"""Backbone (sec. 3.1): ResNet + SE on the top feature + FPN; norm choices; pretrained-weight loading."""

from __future__ import annotations

import math
import urllib.error
from pathlib import Path

import pytest
import torch
from builders import cpu_demo_config
from torch import nn
from torchvision.models import resnet18
from torchvision.ops import FrozenBatchNorm2d

from unipan_pipeline.model import ModelConfig, PretrainedWeightsError, SqueezeExcitation, build_backbone
from unipan_pipeline.model.backbone import FPN_KEYS, ResNetFPNBackbone
from unipan_pipeline.model.weights import imagenet_file_name

torch.set_num_threads(1)


def _cfg(**kw: object) -> ModelConfig:
    return cpu_demo_config(fpn_channels=32, **kw)


def test_fpn_keys_strides_and_channels() -> None:
    backbone = build_backbone(_cfg())
    out = backbone(torch.randn(2, 3, 64, 96))
    assert tuple(out) == FPN_KEYS
    for key, stride in zip(FPN_KEYS, (4, 8, 16, 32, 64), strict=True):
        assert out[key].shape == (2, 32, math.ceil(64 / stride), math.ceil(96 / stride)), key


def test_se_is_applied_to_top_feature_before_fpn() -> None:
    backbone = build_backbone(_cfg())
    assert isinstance(backbone.se, SqueezeExcitation)
    assert backbone.se.fc1.in_channels == 512  # ResNet-18 layer4
    seen: dict[str, torch.Tensor] = {}

    def hook(_m: nn.Module, args: tuple, out: torch.Tensor) -> None:
        seen["se_in"], seen["se_out"] = args[0], out

    backbone.se.register_forward_hook(hook)
    fpn_inputs: dict[str, torch.Tensor] = {}
    backbone.fpn.register_forward_pre_hook(lambda _m, args: fpn_inputs.update(args[0]))
    backbone.eval()
    backbone(torch.randn(1, 3, 64, 64))
    assert torch.equal(fpn_inputs["3"], seen["se_out"])
    assert not torch.allclose(seen["se_in"], seen["se_out"])  # the gate rescales channels
    # zeroing the gate's bias/weights to -inf-like values suppresses the top feature
    with torch.no_grad():
        backbone.se.fc2.weight.zero_()
        backbone.se.fc2.bias.fill_(-30.0)
    backbone(torch.randn(1, 3, 64, 64))
    assert fpn_inputs["3"].abs().max() < 1e-6


@pytest.mark.parametrize(
    ("norm", "kind"), [("frozen_bn", FrozenBatchNorm2d), ("bn", nn.BatchNorm2d), ("gn", nn.GroupNorm)]
)
def test_norm_choices(norm: str, kind: type) -> None:
    backbone = build_backbone(_cfg(norm=norm))
    assert isinstance(backbone.body.bn1, kind)
    assert isinstance(backbone.body.layer3[0].bn2, kind)
    out = backbone(torch.randn(2, 3, 32, 32))
    assert torch.isfinite(out["0"]).all()


def test_trainable_layers_freeze_the_stem() -> None:
    backbone = build_backbone(_cfg(trainable_layers=3))
    assert not any(p.requires_grad for p in backbone.body.conv1.parameters())
    assert not any(p.requires_grad for p in backbone.body.layer1.parameters())
    assert all(p.requires_grad for p in backbone.body.layer2.parameters())
    assert all(p.requires_grad for p in backbone.fpn.parameters())
    full = build_backbone(_cfg(trainable_layers=5))
    assert all(p.requires_grad for p in full.parameters())


def test_resnet50_widths() -> None:
    backbone = ResNetFPNBackbone(depth=50, norm="frozen_bn", fpn_channels=16)
    assert backbone.se.fc1.in_channels == 2048
    assert [b[0].in_channels for b in backbone.fpn.inner_blocks] == [256, 512, 1024, 2048]


def test_local_state_dict_is_loaded(tmp_path: Path) -> None:
    reference = resnet18()
    with torch.no_grad():
        reference.conv1.weight.normal_()
        reference.layer4[1].bn2.running_mean.uniform_()
    path = tmp_path / "r18.pth"
    torch.save(reference.state_dict(), path)
    backbone = build_backbone(_cfg(pretrained=str(path), norm="frozen_bn"))
    assert torch.equal(backbone.body.conv1.weight, reference.conv1.weight)
    assert torch.equal(backbone.body.layer4[1].bn2.running_mean, reference.layer4[1].bn2.running_mean)
    # GroupNorm takes the affine parameters and skips the running statistics
    gn = build_backbone(_cfg(pretrained=str(path), norm="gn"))
    assert torch.equal(gn.body.layer4[1].bn2.weight, reference.layer4[1].bn2.weight)


def test_local_file_errors(tmp_path: Path) -> None:
    with pytest.raises(PretrainedWeightsError, match="does not exist"):
        build_backbone(_cfg(pretrained=str(tmp_path / "missing.pth")))
    wrong = tmp_path / "r34.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, wrong)
    with pytest.raises(PretrainedWeightsError, match="do not fit"):
        build_backbone(_cfg(pretrained=str(wrong)))


def test_offline_imagenet_error_names_file_and_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    calls: list[str] = []

    def blocked(url: str, *args: object, **kwargs: object) -> None:
        calls.append(url)
        raise urllib.error.URLError("network unreachable (blocked in tests)")

    monkeypatch.setattr(torch.hub, "download_url_to_file", blocked)
    with pytest.raises(PretrainedWeightsError) as info:
        build_backbone(_cfg(pretrained="imagenet", backbone_depth=18))
    message = str(info.value)
    assert imagenet_file_name(18) == "resnet18-f37072fd.pth"
    assert "resnet18-f37072fd.pth" in message
    assert str(tmp_path / "hub" / "checkpoints") in message
    assert "pretrained: none" in message
    assert calls and calls[0].endswith("resnet18-f37072fd.pth")


def test_imagenet_weights_read_from_torch_home_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file placed at $TORCH_HOME/hub/checkpoints/<file> is used without downloading."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("tried to download"))
    reference = resnet18()
    target = tmp_path / "hub" / "checkpoints" / imagenet_file_name(18)
    target.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), target)
    # the hash prefix of the real file cannot match our file: check_hash only applies on download
    backbone = build_backbone(_cfg(pretrained="imagenet", backbone_depth=18))
    assert torch.equal(backbone.body.layer2[0].conv1.weight, reference.layer2[0].conv1.weight)
