"""ImageNet weights for the ResNet body, offline-friendly.

Three sources (``ModelConfig.pretrained``): ``"imagenet"`` - torchvision's ``IMAGENET1K_V1`` weight enum,
read from ``$TORCH_HOME/hub/checkpoints/<file>`` (torch.hub uses a cached file without downloading; it
downloads only when the file is absent), ``"none"``, or a path to a state dict saved with ``torch.save``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torchvision.models import (
    ResNet18_Weights,
    ResNet34_Weights,
    ResNet50_Weights,
    ResNet101_Weights,
    WeightsEnum,
)

IMAGENET_WEIGHTS: dict[int, WeightsEnum] = {
    18: ResNet18_Weights.IMAGENET1K_V1,
    34: ResNet34_Weights.IMAGENET1K_V1,
    50: ResNet50_Weights.IMAGENET1K_V1,
    101: ResNet101_Weights.IMAGENET1K_V1,
}


class PretrainedWeightsError(RuntimeError):
    """ImageNet weights could not be found nor downloaded."""


def checkpoint_dir() -> Path:
    """Folder where torch.hub caches weight files: ``$TORCH_HOME/hub/checkpoints``."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def imagenet_file_name(depth: int) -> str:
    """File name of torchvision's ImageNet weights of ResNet-``depth`` (e.g. resnet50-0676ba61.pth)."""
    return os.path.basename(IMAGENET_WEIGHTS[depth].url)


def load_imagenet_state_dict(depth: int) -> dict[str, torch.Tensor]:
    """ResNet-``depth`` ImageNet state dict from the torch.hub cache, downloading it if absent.

    Raises:
        PretrainedWeightsError: when the file is absent and cannot be downloaded (offline), naming the file
            and the folder to put it in, or the ``pretrained: none`` alternative.
    """
    weights = IMAGENET_WEIGHTS[depth]
    target = checkpoint_dir() / imagenet_file_name(depth)
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except Exception as err:
        raise PretrainedWeightsError(
            f"could not obtain ImageNet weights for ResNet-{depth} ({type(err).__name__}: {err}). "
            f"Place the file {target.name} (from {weights.url}) at {target} "
            f"(i.e. $TORCH_HOME/hub/checkpoints/{target.name}), pass a local state dict path as "
            f"`pretrained: /path/to/file.pth`, or set `pretrained: none` to train from scratch."
        ) from err


def load_local_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """State dict from a local file (a ResNet state dict, optionally wrapped in ``{"state_dict": ..}``)."""
    path = Path(path)
    if not path.is_file():
        raise PretrainedWeightsError(f"pretrained weights file {path} does not exist")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise PretrainedWeightsError(
            f"pretrained weights file {path} is not a readable torch file: {err}"
        ) from err
    if isinstance(data, dict) and "state_dict" in data and isinstance(data["state_dict"], dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise PretrainedWeightsError(f"pretrained weights file {path} does not hold a state dict of tensors")
    return data


def resolve_pretrained(pretrained: str, depth: int) -> dict[str, torch.Tensor] | None:
    """Turn ``ModelConfig.pretrained`` into a state dict (``None`` for ``"none"``)."""
    key = str(pretrained).strip()
    if key.lower() in ("none", "", "false", "scratch"):
        return None
    if key.lower() in ("imagenet", "imagenet1k_v1", "default"):
        return load_imagenet_state_dict(depth)
    return load_local_state_dict(key)


def load_into_resnet(resnet: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into a torchvision ResNet; ``fc.*`` is ignored; norm statistics that the chosen norm
    does not have (GroupNorm has no running stats) are skipped. Any other mismatch raises."""
    state = {
        k: v for k, v in state.items() if not k.startswith("fc.") and not k.endswith("num_batches_tracked")
    }
    own = resnet.state_dict()
    own_keys = {k for k in own if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
    missing = sorted(own_keys - set(state))
    unexpected = sorted(k for k in set(state) - own_keys if not k.endswith(("running_mean", "running_var")))
    if missing or unexpected:
        raise PretrainedWeightsError(
            f"weights from {source} do not fit this ResNet: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    shapes = [k for k in own_keys if state[k].shape != own[k].shape]
    if shapes:
        raise PretrainedWeightsError(f"weights from {source} have wrong shapes for {sorted(shapes)[:5]}")
    resnet.load_state_dict({k: state[k] for k in own_keys}, strict=False)
