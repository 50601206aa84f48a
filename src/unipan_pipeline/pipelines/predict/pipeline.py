"""``predict``: ``params:predict`` -> ``predict_summary`` (outputs written to ``predict.output_dir``)."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from unipan_pipeline.pipelines.predict.nodes import predict_images


def create_pipeline(**kwargs: object) -> Pipeline:
    return Pipeline(
        [Node(predict_images, inputs="params:predict", outputs="predict_summary", name="predict")]
    )
