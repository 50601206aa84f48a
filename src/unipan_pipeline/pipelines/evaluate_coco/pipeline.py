"""``evaluate_coco``: ``coco_model`` -> ``coco_evaluation`` -> ``coco_registration`` (the nodes of
``evaluate_cityscapes``)."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from unipan_pipeline.pipelines.evaluate_cityscapes.nodes import evaluate_model, register_model


def create_pipeline(**kwargs: object) -> Pipeline:
    return Pipeline(
        [
            Node(
                evaluate_model,
                inputs=["coco_model", "params:evaluate_coco"],
                outputs="coco_evaluation",
                name="evaluate_model_coco",
            ),
            Node(
                register_model,
                inputs=["coco_model", "coco_evaluation", "params:evaluate_coco"],
                outputs="coco_registration",
                name="register_model_coco",
            ),
        ]
    )
