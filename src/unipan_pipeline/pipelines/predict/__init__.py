"""``predict``: a folder of images + a model (registry alias, version, run or local bundle) -> panoptic
predictions (COCO panoptic json + PNGs) and overlay pictures."""

from unipan_pipeline.pipelines.predict.pipeline import create_pipeline

__all__ = ["create_pipeline"]
