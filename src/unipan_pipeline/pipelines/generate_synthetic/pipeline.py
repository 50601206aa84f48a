"""The ``generate_synthetic`` pipeline: one node, parameters in, manifest out."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from .nodes import generate_street_scenes


def create_pipeline(**kwargs: object) -> Pipeline:
    """``params:generate_synthetic`` -> ``synthetic_cityscapes_manifest``."""
    return Pipeline(
        [
            Node(
                func=generate_street_scenes,
                inputs="params:generate_synthetic",
                outputs="synthetic_cityscapes_manifest",
                name="generate_street_scenes",
            )
        ]
    )
