"""``train_coco``: ``coco_ingested`` + ``params:train_coco`` -> ``coco_model`` (same node as Cityscapes)."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from unipan_pipeline.pipelines.train_cityscapes.nodes import train_model


def create_pipeline(**kwargs: object) -> Pipeline:
    return Pipeline(
        [
            Node(
                train_model,
                inputs=["coco_ingested", "params:train_coco"],
                outputs=["coco_model", "coco_train_curve", "coco_val_curve"],
                name="train_model_coco",
            )
        ]
    )
