"""``robustness_cityscapes``: ``params:robustness_cityscapes`` -> ``robustness_cityscapes_table`` (CSV),
``robustness_cityscapes_table_md`` (Markdown), ``robustness_cityscapes_summary`` (JSON); the plot is written
into ``report_dir`` and everything is logged into the run of ``kedro run`` (kedro-mlflow)."""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from unipan_pipeline.pipelines.robustness_cityscapes.nodes import measure_robustness


def create_pipeline(**kwargs: object) -> Pipeline:
    return Pipeline(
        [
            Node(
                measure_robustness,
                inputs="params:robustness_cityscapes",
                outputs=[
                    "robustness_cityscapes_table",
                    "robustness_cityscapes_table_md",
                    "robustness_cityscapes_summary",
                ],
                name="measure_robustness_cityscapes",
                tags=["robustness"],
            )
        ]
    )
