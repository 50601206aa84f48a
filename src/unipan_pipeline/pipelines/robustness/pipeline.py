"""The ``robustness`` stage (Fig. 1) on one data set: ``params:robustness_<dataset>`` ->
``robustness_<dataset>_table`` (CSV), ``robustness_<dataset>_table_md`` (Markdown),
``robustness_<dataset>_summary`` (JSON); the plot is written into ``report_dir`` and everything is logged
into the run of ``kedro run`` (kedro-mlflow).

Written once, for a data set given as an argument (the registry's ``robustness_cityscapes``) rather than in
a namespace: its node, ``measure_robustness_<dataset>``, keeps its name and so its place among the nodes of
a combined run (``kedro run --pipelines=demo_train,robustness_cityscapes``), where Kedro orders independent
nodes by name - the experiment reads the trained model from a path in its parameters, not from a dataset.
"""

from __future__ import annotations

from kedro.pipeline import Node, Pipeline

from unipan_pipeline.pipelines.robustness.nodes import measure_robustness


def create_pipeline(dataset: str, **kwargs: object) -> Pipeline:
    """The measurement on ``dataset``'s parameters ``params:robustness_<dataset>``."""
    return Pipeline(
        [
            Node(
                measure_robustness,
                inputs=f"params:robustness_{dataset}",
                outputs=[f"robustness_{dataset}_{name}" for name in ("table", "table_md", "summary")],
                name=f"measure_robustness_{dataset}",
                tags=["robustness"],
            )
        ]
    )
