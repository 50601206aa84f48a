"""``evaluate_cityscapes``: ``cityscapes_model`` -> ``cityscapes_evaluation`` -> ``cityscapes_registration``
(registry ``unipan-cityscapes``, alias ``champion``)."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from unipan_pipeline.pipelines.evaluate_cityscapes.nodes import evaluate_model, register_model


def create_pipeline(**kwargs: object) -> Pipeline:
    return Pipeline(
        [
            Node(
                evaluate_model,
                inputs=["cityscapes_model", "params:evaluate_cityscapes"],
                outputs="cityscapes_evaluation",
                name="evaluate_model",
            ),
            Node(
                register_model,
                inputs=["cityscapes_model", "cityscapes_evaluation", "params:evaluate_cityscapes"],
                outputs="cityscapes_registration",
                name="register_model",
            ),
        ]
    )
