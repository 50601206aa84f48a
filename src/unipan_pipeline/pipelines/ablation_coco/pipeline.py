"""``ablation_coco``: the study of ``ablation_cityscapes`` (same namespaces A, B, C1, C2, D1, D2, same nodes)
on the ingested COCO data (``coco_ingested``), parameters ``params:ablation_coco``, datasets
``ablation_coco_*``."""

from __future__ import annotations

from kedro.pipeline import Pipeline

from unipan_pipeline.pipelines.ablation_cityscapes.pipeline import create_study_pipeline


def create_pipeline(**kwargs: object) -> Pipeline:
    return create_study_pipeline("coco", "coco_ingested")
