"""``train_cityscapes``: ``cityscapes_ingested`` + ``params:train_cityscapes`` -> ``cityscapes_model``."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from unipan_pipeline.pipelines.train_cityscapes.nodes import train_model


def create_pipeline(**kwargs: object) -> Pipeline:
    return Pipeline(
        [
            Node(
                train_model,
                inputs=["cityscapes_ingested", "params:train_cityscapes"],
                outputs=["cityscapes_model", "cityscapes_train_curve", "cityscapes_val_curve"],
                name="train_model",
            )
        ]
    )
