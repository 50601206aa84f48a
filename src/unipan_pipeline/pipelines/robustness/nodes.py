"""Node of the ``robustness`` stage (a thin wrapper around :mod:`unipan_pipeline.experiment.robustness`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from unipan_pipeline.experiment.robustness import (
    METHODS,
    plot_robustness,
    robustness_experiment,
    robustness_markdown,
    robustness_table,
)

log = logging.getLogger(__name__)

PLOT_NAME = "pq_things_vs_box_perturbation.png"


def measure_robustness(params: dict[str, Any]) -> tuple[pd.DataFrame, str, dict[str, Any]]:
    """Shrink / shift the detected boxes of one model by each fraction (Fig. 1); PQ things of argmax(P),
    argmax(Psi) and the heuristic merger; table, Markdown, plot, logged to the active MLflow run.

    Args:
        params: ``params:robustness_<dataset>`` (schema in :mod:`unipan_pipeline.experiment.robustness`).
            The last folder of ``report_dir`` names it in error messages (``robustness_cityscapes``).

    Returns:
        ``(table in percent, Markdown report, summary)``.
    """
    name = Path(str(params.get("report_dir", "robustness"))).name
    result = robustness_experiment(params, name=name)
    table = robustness_table(result)
    markdown = robustness_markdown(table, result)
    plot = plot_robustness(table, Path(str(params["report_dir"])) / PLOT_NAME)
    result["plot"] = plot.as_posix()
    result["mlflow_run_id"] = _log_to_mlflow(result, table, markdown, plot)
    return table, markdown, result


def _log_to_mlflow(result: dict[str, Any], table: pd.DataFrame, markdown: str, plot: Path) -> str | None:
    """Metrics ``robustness/pq_th_<method>`` (step = perturbation in percent), the table and the plot, into
    the active run (kedro-mlflow's run of ``kedro run``); nothing without one."""
    from unipan_pipeline.tracking.runs import active_run_logger  # noqa: PLC0415 - imports MLflow

    run = active_run_logger()
    if run is None:
        log.warning("no active MLflow run (kedro-mlflow tracking disabled?): robustness results not logged")
        return None
    for row in result["table"]:
        step = round(100 * float(row["fraction"]))
        for method in METHODS:
            for key in ("pq_th", "pq"):
                value = row[f"{key}_{method}"]
                if value is not None:
                    run.log_metrics({f"robustness/{key}_{method}": float(value)}, step=step)
    run.set_tags({"robustness_model": result["model_manifest"], "robustness_split": result["split"]})
    run.log_text(table.to_csv(index=False), "robustness/table.csv")
    run.log_text(markdown, "robustness/table.md")
    run.log_artifact(plot, "robustness")
    return run.run_id
