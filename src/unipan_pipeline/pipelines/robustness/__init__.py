"""The ``robustness`` stage: Fig. 1's claim measured - PQ things under shrunk / shifted boxes."""

from unipan_pipeline.pipelines.robustness.pipeline import create_pipeline

__all__ = ["create_pipeline"]
