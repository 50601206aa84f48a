"""The ``ablation`` stage: Table 1 of the paper (rows A, B, C1, C2, D1, D2) on one ingested data set."""

from unipan_pipeline.pipelines.ablation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
