"""The ``train`` stage: an ingested data set (Cityscapes, COCO, the generated scenes) -> trained model."""

from unipan_pipeline.pipelines.train.pipeline import create_pipeline

__all__ = ["create_pipeline"]
