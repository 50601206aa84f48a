"""Cityscapes (real or generated) -> ingested panoptic data set."""

from unipan_pipeline.pipelines.ingest_cityscapes.pipeline import create_pipeline

__all__ = ["create_pipeline"]
