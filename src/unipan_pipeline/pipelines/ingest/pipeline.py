"""The ``ingest`` stage: a raw data set -> its ingested form, ``params:ingest_<dataset>`` ->
``<dataset>_ingested``.

Written once, for a data set given as an argument (the registry's ``ingest_cityscapes``, ``ingest_coco``)
rather than in a namespace: the ingested data set is the data set's - the namespaces ``cityscapes`` and
``demo`` and the ablation's rows all read ``cityscapes_ingested`` - and the node keeps its name,
``ingest_<dataset>``, which is also what orders it after ``generate_street_scenes`` in ``kedro run
--pipelines=generate_synthetic,ingest_cityscapes`` (Kedro runs independent nodes by name). Cityscapes
(real, or the generated street scenes) and COCO panoptic are converted by different nodes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kedro.pipeline import Node, Pipeline

from unipan_pipeline.pipelines.ingest.nodes import (
    ingest_after_generation,
    ingest_cityscapes_node,
    ingest_coco_node,
)

SYNTHETIC_MANIFEST = "synthetic_cityscapes_manifest"
"""``generate_synthetic``'s output, which the demo's ingestion waits for."""

CONVERTERS: dict[str, Callable[[dict[str, Any]], dict]] = {
    "cityscapes": ingest_cityscapes_node,
    "coco": ingest_coco_node,
}


def ingested(dataset: str) -> str:
    """The ingestion summary of ``dataset``, ``<dataset>_ingested`` (what the other stages read)."""
    return f"{dataset}_ingested"


def create_pipeline(dataset: str, after_generation: bool = False, **kwargs: object) -> Pipeline:
    """The ingestion node of ``dataset`` (``cityscapes`` / ``coco``); ``after_generation`` (Cityscapes only)
    makes it wait for ``generate_synthetic``'s manifest.

    The registered ``ingest_cityscapes`` pipeline reads parameters only, so a fresh clone with a real
    Cityscapes tree and no generated data ingests it; the demo composes it after the generator.
    """
    if dataset not in CONVERTERS:
        raise ValueError(f"no ingestion for data set {dataset!r}; known: {sorted(CONVERTERS)}")
    params, name = f"params:ingest_{dataset}", f"ingest_{dataset}"
    if not after_generation:
        return Pipeline([Node(CONVERTERS[dataset], inputs=params, outputs=ingested(dataset), name=name)])
    if dataset != "cityscapes":
        raise ValueError(f"after_generation: the generator writes Cityscapes, not {dataset!r}")
    return Pipeline(
        [
            Node(
                ingest_after_generation,
                inputs=[SYNTHETIC_MANIFEST, params],
                outputs=ingested(dataset),
                name=name,
            )
        ]
    )
