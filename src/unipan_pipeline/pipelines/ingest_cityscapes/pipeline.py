"""``ingest_cityscapes``: generated (or real) Cityscapes tree -> ``data/03_primary/cityscapes``."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from unipan_pipeline.pipelines.ingest_cityscapes.nodes import ingest_cityscapes_node


def create_pipeline(**kwargs: object) -> Pipeline:
    return Pipeline(
        [
            Node(
                ingest_cityscapes_node,
                inputs=["synthetic_cityscapes_manifest", "params:ingest_cityscapes"],
                outputs="cityscapes_ingested",
                name="ingest_cityscapes",
            )
        ]
    )
