"""The panoptic network of "Unifying Training and Inference for Panoptic Segmentation" (plain PyTorch)."""

from __future__ import annotations

from .backbone import ResNetFPNBackbone, SqueezeExcitation, build_backbone
from .config import ModelConfig
from .detection import DetectionSubmodule, paste_masks
from .dynamic_potential import dynamic_potential
from .heuristic_merger import heuristic_merge
from .instance_affinity import DenseInstanceAffinity
from .outputs import panoptic_from_index_map
from .panoptic_matching_loss import PanopticMatch, match_detections, panoptic_matching_loss
from .panoptic_network import PanopticNetwork, build_model
from .semantic_head import DeformableSemanticHead, SemanticHead, semantic_loss
from .weights import PretrainedWeightsError

__all__ = [
    "DeformableSemanticHead",
    "DenseInstanceAffinity",
    "DetectionSubmodule",
    "ModelConfig",
    "PanopticMatch",
    "PanopticNetwork",
    "PretrainedWeightsError",
    "ResNetFPNBackbone",
    "SemanticHead",
    "SqueezeExcitation",
    "build_backbone",
    "build_model",
    "dynamic_potential",
    "heuristic_merge",
    "match_detections",
    "panoptic_from_index_map",
    "panoptic_matching_loss",
    "paste_masks",
    "semantic_loss",
]
