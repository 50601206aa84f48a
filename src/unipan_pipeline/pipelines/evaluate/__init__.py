"""The ``evaluate`` stage: trained model -> predictions, metrics, reports; registry ``unipan-<dataset>``."""

from unipan_pipeline.pipelines.evaluate.pipeline import create_pipeline

__all__ = ["create_pipeline"]
