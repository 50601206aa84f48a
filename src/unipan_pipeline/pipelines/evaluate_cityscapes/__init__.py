"""``evaluate_cityscapes``: trained model -> predictions, metrics, reports; registry ``unipan-cityscapes``."""

from unipan_pipeline.pipelines.evaluate_cityscapes.pipeline import create_pipeline

__all__ = ["create_pipeline"]
