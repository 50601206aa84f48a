"""``train_coco``: ingested COCO panoptic -> trained model."""

from unipan_pipeline.pipelines.train_coco.pipeline import create_pipeline

__all__ = ["create_pipeline"]
