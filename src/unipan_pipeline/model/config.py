"""Configuration of the panoptic network (all architecture, detector and loss knobs in one place).

The defaults are the paper's (ResNet-50-FPN, ImageNet weights, frozen BN, Mask R-CNN head, dense instance
affinity, end-to-end training with the panoptic matching loss, argmax inference, variant C of the dynamic
potential; sec. 3 and 4). The configurations that depart from them - the paper's Cityscapes loss weights, the
slim CPU demo - are presets of ``conf/base/parameters_<pipeline>.yml`` (``model:``), their one source.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

NormName = Literal["frozen_bn", "bn", "gn"]
InferenceName = Literal["argmax", "heuristic"]
VariantName = Literal["A", "B", "C"]
SemanticHeadName = Literal["deformable", "plain"]
TrainDetectionsName = Literal["predicted", "ground_truth"]

_DEPTHS = (18, 34, 50, 101)


@dataclass
class ModelConfig:
    """Every knob of :class:`~unipan_pipeline.model.panoptic_network.PanopticNetwork`.

    Ablation switches (Table 1): ``use_masks`` (msk.), ``use_affinity`` (aff.), ``train_end_to_end``
    (e2e., the panoptic matching loss of sec. 3.5), ``inference`` (``"heuristic"`` = heu.,
    ``"argmax"`` = amx.) and ``potential_variant`` (Fig. 4).
    """

    # ---------------------------------------------------------------- ablation switches
    use_masks: bool = True
    use_affinity: bool = True
    train_end_to_end: bool = True
    inference: InferenceName = "argmax"
    potential_variant: VariantName = "C"

    # ---------------------------------------------------------------- backbone (sec. 3.1)
    backbone_depth: int = 50
    pretrained: str = "imagenet"
    """``"imagenet"`` (torchvision ``IMAGENET1K_V1`` weights from ``$TORCH_HOME``), ``"none"``, or a path to a
    ResNet state dict file."""
    norm: NormName = "frozen_bn"
    trainable_layers: int = 3
    """ResNet stages that learn (0..5, from the top, as torchvision's ``trainable_backbone_layers``)."""
    se_reduction: int = 16
    fpn_channels: int = 256

    # ---------------------------------------------------------------- semantic head and affinity (3.2, 3.4.2)
    semantic_head: SemanticHeadName = "plain"
    """``"deformable"``: the paper's (UPSNet's deformable subnet shared across P2-P5, GroupNorm after every
    convolution); ``"plain"``: 3x3 convolutions, one branch per level (CPU demo; DeformConv2d is ~15x a 3x3
    conv on a CPU). The affinity feature extractor uses the same architecture (sec. 3.4.2)."""
    semantic_channels: int = 128
    semantic_convs: int = 2
    affinity_channels: int = 128
    """C of the affinity feature Q (paper: 128)."""
    gn_groups: int = 32

    # ---------------------------------------------------------------- detector (sec. 3.3)
    anchor_sizes: tuple[int, ...] = (32, 64, 128, 256, 512)
    """One anchor size per FPN level (``'0'..'3'`` and ``'pool'``)."""
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    rpn_pre_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_test: int = 1000
    rpn_nms_thresh: float = 0.7
    rpn_batch_size_per_image: int = 256
    rpn_fg_iou_thresh: float = 0.7
    rpn_bg_iou_thresh: float = 0.3
    roi_batch_size_per_image: int = 512
    roi_positive_fraction: float = 0.25
    box_fg_iou_thresh: float = 0.5
    box_bg_iou_thresh: float = 0.5
    box_head_channels: int = 1024
    box_score_thresh: float = 0.05
    box_nms_thresh: float = 0.5
    detections_per_img: int = 100
    mask_head_convs: int = 4
    mask_head_channels: int = 256

    # ---------------------------------------------------------------- panoptic submodule (3.4, 3.5)
    panoptic_min_score: float = 0.0
    """Detections scoring below this are not given to the panoptic head (training and inference alike);
    0 keeps all detections of the detector (``box_score_thresh`` already applies)."""
    train_detections: TrainDetectionsName = "predicted"
    """Detections the panoptic head is trained on: ``"predicted"`` (the paper, sec. 3.5) or ``"ground_truth"``
    (supplementary Table C: GT boxes and classes with score 1, masks from the mask head run on the GT boxes
    with gradient). Inference always uses the predicted detections."""
    panoptic_max_detections_train: int | None = None
    """Training: at most this many top-scoring predicted detections per image reach the panoptic head (and
    its mask pass with gradients); ``None`` = all (up to ``detections_per_img``). Inference is unaffected."""
    train_box_jitter: float = 0.0
    """Training: each detection given to the panoptic head (predicted or ground truth) has its box shrunk by
    ``f ~ U(0, train_box_jitter)`` of its size and shifted by up to ``f`` of it before its mask is predicted
    and it is matched (:mod:`.box_perturbation`); its target is still the whole segment, so that the matching
    loss rewards the affinity for recovering what an imperfect box cuts off (Fig. 1). 0 = off (the paper);
    in [0, 0.5). Inference is unaffected."""
    void_unclaimed_things: bool = False
    """Argmax inference: pixels won by a stuff channel while the semantic argmax is a thing class become void
    (off = the paper's plain argmax; see panoptic_network.py)."""
    match_iou_thresh: float = 0.5
    """t of eq. 5."""
    min_box_size: float = 1.0
    """Boxes narrower/shorter than this (pixels) are dropped before the panoptic head (NaN guard)."""
    match_strategy: Literal["hungarian", "greedy_score"] = "hungarian"
    panoptic_loss_resize: Literal["upsample", "downsample"] = "upsample"
    """``upsample``: P is upsampled bilinearly to the (padded) image size for the matching loss;
    ``downsample``: the target is sampled at the stride-4 cell centres (cheaper)."""
    affinity_activation: Literal["relu", "softplus", "none"] = "relu"
    affinity_normalize: Literal["hw", "sqrt_c_hw", "none", "mass"] = "sqrt_c_hw"
    """Scaling of the propagated term of eq. 4 (see :mod:`.instance_affinity`): ``sqrt_c_hw`` divides by
    sqrt(C) * HW so that its size does not depend on the image size; ``mass`` divides channel k by
    sqrt(C) * sum |Psi_k| so that it does not depend on the segment's size either."""
    affinity_log_gain: float = 0.0
    """Log of a gain on the propagated term of eq. 4 (0: none); the initial value when it is learnt."""
    affinity_learn_gain: bool = False
    """Learn the gain (one scalar parameter, no weight decay) instead of keeping it fixed."""

    # ---------------------------------------------------------------- heuristic merger (rows C1, D1)
    heuristic_score_thresh: float = 0.5
    heuristic_overlap_thresh: float = 0.5
    heuristic_stuff_area: int = 4096
    heuristic_mask_thresh: float = 0.5

    # ---------------------------------------------------------------- losses
    loss_weight_det: float = 1.0
    loss_weight_sem: float = 0.2
    loss_weight_pan: float = 0.1
    """Paper COCO weights (det 1.0, sem 0.2, pan 0.1); Cityscapes uses 0.25 / 1.0 / 1.0."""

    # ---------------------------------------------------------------- input
    size_divisible: int = 32
    image_mean: tuple[float, float, float] = field(default=(0.485, 0.456, 0.406))
    image_std: tuple[float, float, float] = field(default=(0.229, 0.224, 0.225))
    normalize_inputs: bool = False
    """False: images arrive already normalised (the data pipeline's contract); True: the model normalises
    RGB in [0, 1] with ``image_mean``/``image_std``."""

    def __post_init__(self) -> None:
        for name in ("anchor_sizes", "aspect_ratios", "image_mean", "image_std"):
            value = getattr(self, name)
            if isinstance(value, list):
                setattr(self, name, tuple(value))
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the offending field."""
        if self.backbone_depth not in _DEPTHS:
            raise ValueError(f"ModelConfig.backbone_depth={self.backbone_depth}: choose one of {_DEPTHS}")
        if self.norm not in ("frozen_bn", "bn", "gn"):
            raise ValueError(f"ModelConfig.norm={self.norm!r}: choose 'frozen_bn', 'bn' or 'gn'")
        if self.inference not in ("argmax", "heuristic"):
            raise ValueError(f"ModelConfig.inference={self.inference!r}: choose 'argmax' or 'heuristic'")
        if self.inference == "heuristic" and not self.use_masks:
            raise ValueError(
                "ModelConfig.inference='heuristic' needs use_masks=True (the merger pastes masks)"
            )
        if self.potential_variant not in ("A", "B", "C"):
            raise ValueError(
                f"ModelConfig.potential_variant={self.potential_variant!r}: choose 'A', 'B' or 'C'"
            )
        if self.semantic_head not in ("deformable", "plain"):
            raise ValueError(
                f"ModelConfig.semantic_head={self.semantic_head!r}: choose 'deformable' or 'plain'"
            )
        if self.train_detections not in ("predicted", "ground_truth"):
            raise ValueError(
                f"ModelConfig.train_detections={self.train_detections!r}: "
                "choose 'predicted' or 'ground_truth'"
            )
        if not 0.0 <= self.train_box_jitter < 0.5:
            raise ValueError(f"ModelConfig.train_box_jitter={self.train_box_jitter!r}: must be in [0, 0.5)")
        if not 0 <= self.trainable_layers <= 5:
            raise ValueError(f"ModelConfig.trainable_layers={self.trainable_layers}: must be in 0..5")
        if len(self.anchor_sizes) != 5:
            raise ValueError(
                f"ModelConfig.anchor_sizes={self.anchor_sizes}: give 5 sizes, one per FPN level (P2-P6)"
            )
        if self.mask_head_convs < 1:
            raise ValueError("ModelConfig.mask_head_convs must be >= 1")
        cap = self.panoptic_max_detections_train
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
            raise ValueError(f"ModelConfig.panoptic_max_detections_train={cap!r}: a positive integer or null")

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ModelConfig:
        """Build from a (YAML) mapping; unknown keys raise ``ValueError`` listing the known ones."""
        data = dict(data or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig keys {unknown}; known keys: {sorted(known)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """Plain mapping (tuples as lists) suitable for YAML / MLflow params."""
        out = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    def replace(self, **changes: Any) -> ModelConfig:
        """Copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)
