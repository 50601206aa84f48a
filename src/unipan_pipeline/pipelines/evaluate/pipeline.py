"""The ``evaluate`` stage: ``model`` + ``params:evaluate`` -> ``evaluation`` -> ``registration`` (registry
``unipan-<dataset>``, alias ``champion``).

Written once; the registry puts it in a namespace (``cityscapes``, ``coco``, ``demo``) with that
configuration's parameters (``params:evaluate_cityscapes``, ``params:evaluate_coco``,
``params:demo.evaluation``).
"""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from unipan_pipeline.pipelines.evaluate.nodes import evaluate_model, register_model


def create_pipeline(**kwargs: object) -> Pipeline:
    return Pipeline(
        [
            Node(
                evaluate_model,
                inputs=["model", "params:evaluate"],
                outputs="evaluation",
                name="evaluate_model",
            ),
            Node(
                register_model,
                inputs=["model", "evaluation", "params:evaluate"],
                outputs="registration",
                name="register_model",
            ),
        ]
    )
