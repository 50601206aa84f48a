"""The few lines printed at the end of a pipeline that evaluated and registered a model: headline metrics,
where the pictures, the model and the predictions are, the MLflow run and how to open it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


def _pct(metrics: Mapping[str, Any], key: str) -> str:
    value = metrics.get(key)
    return "n/a" if value is None else f"{100 * float(value):.1f}"


def _folder(paths: list[str]) -> str | None:
    """The common folder of some files (``None`` for none)."""
    if not paths:
        return None
    parents = {str(Path(p).parent) for p in paths}
    return min(parents, key=len)


def ui_command(tracking_uri: str | None) -> str:
    """The command that opens the tracking store ``tracking_uri`` in the MLflow UI."""
    uri = tracking_uri or DEFAULT_TRACKING_URI
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"mlflow ui --backend-store-uri {uri}   (or: kedro mlflow ui)"
    return f"mlflow ui --backend-store-uri {uri}"


def run_summary(
    manifest: Mapping[str, Any],
    evaluation: Mapping[str, Any],
    registration: Mapping[str, Any] | None = None,
    *,
    tracking_uri: str | None = None,
) -> str:
    """Text of the summary; every piece comes from the training manifest, the evaluation result and the
    registration result that the pipeline saved."""
    m = evaluation.get("metrics") or {}
    mlflow_info = manifest.get("mlflow") or {}
    run_id = evaluation.get("mlflow_run_id") or mlflow_info.get("run_id")
    lines = [
        f"unipan: {manifest.get('name', 'model')} on {manifest.get('dataset', '?')} "
        f"({manifest.get('data_source', '?')} data), {manifest.get('iterations', '?')} iterations",
        f"  PQ {_pct(m, 'pq')} (things {_pct(m, 'pq_th')}, stuff {_pct(m, 'pq_st')})  SQ {_pct(m, 'sq')}  "
        f"RQ {_pct(m, 'rq')}  mIoU {_pct(m, 'miou')}  AP box {_pct(m, 'ap_box')} / mask {_pct(m, 'ap_mask')}"
        f"  ({evaluation.get('n_images', '?')} {evaluation.get('split', '?')} images, percent)",
    ]
    pictures = _folder([str(p) for p in evaluation.get("report_files") or []])
    if pictures:
        lines.append(f"  pictures     {pictures}/")
    model = f"  model        {manifest.get('output_dir', '?')}/"
    if registration and registration.get("registered"):
        alias = f", {registration.get('model_uri')}" if registration.get("promoted") else ""
        model += f"  registered {registration.get('model_name')} version {registration.get('version')}{alias}"
    lines.append(model)
    if evaluation.get("predictions_dir"):
        lines.append(f"  predictions  {evaluation['predictions_dir']}/")
    if evaluation.get("metrics_path"):
        lines.append(f"  metrics      {evaluation['metrics_path']}")
    if run_id:
        name = mlflow_info.get("run_name")
        lines.append(f"  MLflow run   {name + ' ' if name else ''}({run_id})")
        lines.append(f"  open it with {ui_command(tracking_uri)}")
    return "\n".join(lines)
