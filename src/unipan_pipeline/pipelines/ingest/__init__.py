"""The ``ingest`` stage: Cityscapes (real or generated) or COCO panoptic -> the ingested panoptic data set."""

from unipan_pipeline.pipelines.ingest.pipeline import create_pipeline, ingested

__all__ = ["create_pipeline", "ingested"]
