"""``ablation_cityscapes``: Table 1 of the paper (rows A, B, C1, C2, D1, D2) on Cityscapes data."""

from unipan_pipeline.pipelines.ablation_cityscapes.pipeline import create_pipeline

__all__ = ["create_pipeline"]
