"""COCO panoptic -> ingested panoptic data set."""

from unipan_pipeline.pipelines.ingest_coco.pipeline import create_pipeline

__all__ = ["create_pipeline"]
