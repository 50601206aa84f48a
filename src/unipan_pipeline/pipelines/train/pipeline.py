"""The ``train`` stage: ``ingested`` + ``params:train`` -> ``model``, ``train_curve``, ``val_curve``.

Written once; the registry puts it in a namespace (``cityscapes``, ``coco``, ``demo``: datasets
``cityscapes.model``, ...) with that configuration's parameters (``params:train_cityscapes``,
``params:train_coco``, ``params:demo``).
"""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from unipan_pipeline.pipelines.train.nodes import train_model


def create_pipeline(**kwargs: object) -> Pipeline:
    return Pipeline(
        [
            Node(
                train_model,
                inputs=["ingested", "params:train"],
                outputs=["model", "train_curve", "val_curve"],
                name="train_model",
            )
        ]
    )
