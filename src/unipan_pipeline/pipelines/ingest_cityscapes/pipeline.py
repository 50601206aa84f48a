"""``ingest_cityscapes``: real (or generated) Cityscapes tree -> ``data/03_primary/cityscapes``."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from unipan_pipeline.pipelines.ingest_cityscapes.nodes import ingest_after_generation, ingest_cityscapes_node


def create_pipeline(after_generation: bool = False, **kwargs: object) -> Pipeline:
    """The ingestion node; ``after_generation`` makes it wait for ``generate_synthetic``'s manifest.

    The registered ``ingest_cityscapes`` pipeline reads parameters only, so a fresh clone with a real
    Cityscapes tree and no generated data ingests it; the demo composes it after the generator.
    """
    if after_generation:
        return Pipeline(
            [
                Node(
                    ingest_after_generation,
                    inputs=["synthetic_cityscapes_manifest", "params:ingest_cityscapes"],
                    outputs="cityscapes_ingested",
                    name="ingest_cityscapes",
                )
            ]
        )
    return Pipeline(
        [
            Node(
                ingest_cityscapes_node,
                inputs="params:ingest_cityscapes",
                outputs="cityscapes_ingested",
                name="ingest_cityscapes",
            )
        ]
    )
