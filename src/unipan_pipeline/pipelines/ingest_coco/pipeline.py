"""``ingest_coco``: COCO panoptic as distributed -> ``data/03_primary/coco``."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from unipan_pipeline.pipelines.ingest_coco.nodes import ingest_coco_node


def create_pipeline(**kwargs: object) -> Pipeline:
    return Pipeline(
        [Node(ingest_coco_node, inputs="params:ingest_coco", outputs="coco_ingested", name="ingest_coco")]
    )
