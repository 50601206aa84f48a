"""``evaluate_coco``: trained COCO model -> predictions, metrics, reports; registry ``unipan-coco``."""

from unipan_pipeline.pipelines.evaluate_coco.pipeline import create_pipeline

__all__ = ["create_pipeline"]
