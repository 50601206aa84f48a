"""``train_cityscapes``: ingested Cityscapes (real, or the generated street scenes) -> trained model."""

from unipan_pipeline.pipelines.train_cityscapes.pipeline import create_pipeline

__all__ = ["create_pipeline"]
