"""Project hooks (registered in ``settings.py``)."""

from __future__ import annotations

import logging
import os
from typing import Any

from kedro.framework.hooks import hook_impl
from kedro.io import DataCatalog
from kedro.pipeline import Pipeline

from unipan_pipeline.summary import run_summary

log = logging.getLogger(__name__)

REGISTER_NODE = "register_model"


class RunSummaryHook:
    """After a pipeline that ran a ``register_model`` node (the default pipeline, ``demo_evaluate``,
    ``evaluate_<dataset>``), print :func:`unipan_pipeline.summary.run_summary` of what it saved."""

    @hook_impl
    def after_pipeline_run(
        self, run_params: dict[str, Any], run_result: Any, pipeline: Pipeline, catalog: DataCatalog
    ) -> None:
        """Print one summary per registration node of ``pipeline`` (rank 0 only under torchrun)."""
        if int(os.environ.get("RANK", "0")) > 0:
            return
        for node in pipeline.nodes:
            if node.name.rsplit(".", 1)[-1] != REGISTER_NODE or len(node.inputs) < 2:
                continue
            try:
                manifest, evaluation = catalog.load(node.inputs[0]), catalog.load(node.inputs[1])
                registration = catalog.load(node.outputs[0]) if node.outputs else None
            except Exception as err:  # a summary must never fail a finished run
                log.warning("no run summary: %s", err)
                continue
            print("\n" + run_summary(manifest, evaluation, registration, tracking_uri=_tracking_uri()))


def _tracking_uri() -> str | None:
    """MLflow's tracking URI as kedro-mlflow set it from ``conf/*/mlflow.yml`` (relative as written there)."""
    from unipan_pipeline.tracking.store import current_tracking_uri  # noqa: PLC0415 - imports MLflow

    return current_tracking_uri()
