"""The model registry: models named ``unipan-<dataset>``; the alias ``champion`` points at the version with
the best PQ, stored on each version as a tag (``pq``) -- :func:`register_and_promote`."""

from __future__ import annotations

import math
from collections.abc import Mapping

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from unipan_pipeline.tracking.store import tracking_uri as _tracking_uri
from unipan_pipeline.tracking.tracker import PromotionResult, registered_model_name
from unipan_pipeline.training.distributed import is_main_process

__all__ = ["PromotionResult", "describe_version", "register_and_promote", "registered_model_name"]


def register_and_promote(
    run_id: str,
    model_name: str,
    metric_value: float,
    metric_key: str = "pq",
    alias: str = "champion",
    *,
    artifact_name: str = "model",
    model_uri: str | None = None,
    tracking_uri: str | None = None,
    await_registration_for: int = 300,
) -> PromotionResult | None:
    """Register the run's model as a new version and move ``alias`` to it if its metric is better.

    The new version gets the tag ``<metric_key>=<metric_value>`` (and ``run_id``). ``alias`` moves when
    the model has no such alias yet, when the current holder has no readable ``<metric_key>`` tag, or when
    ``metric_value`` is strictly greater (ties keep the incumbent). Rank 0 only (other ranks get None).

    Args:
        run_id: run that logged the model.
        model_name: registered model name, e.g. :func:`registered_model_name` ``("cityscapes")``.
        metric_value: the new model's score (higher is better, e.g. PQ).
        model_uri: default ``runs:/<run_id>/<artifact_name>``.
    """
    if not is_main_process():
        return None
    if not math.isfinite(metric_value):
        raise ValueError(f"register_and_promote: {metric_key}={metric_value} is not a finite number")
    uri = model_uri or f"runs:/{run_id}/{artifact_name}"
    tags = {metric_key: repr(float(metric_value)), "run_id": run_id}
    with _tracking_uri(tracking_uri):
        # mlflow.register_model resolves runs:/ URIs to MLflow 3 LoggedModels (models:/<model_id>).
        mv = mlflow.register_model(uri, model_name, await_registration_for=await_registration_for, tags=tags)
        client = (
            MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
            if tracking_uri
            else (MlflowClient())
        )
    prev_version: int | None = None
    prev_value: float | None = None
    try:
        holder = client.get_model_version_by_alias(model_name, alias)
        prev_version = int(holder.version)
        raw = (holder.tags or {}).get(metric_key)
        prev_value = float(raw) if raw is not None else None
    except MlflowException:
        holder = None
    except ValueError:
        prev_value = None
    promote = (
        holder is None or prev_value is None or not math.isfinite(prev_value) or metric_value > prev_value
    )
    if promote:
        client.set_registered_model_alias(model_name, alias, mv.version)
    return PromotionResult(
        model_name, int(mv.version), float(metric_value), promote, prev_version, prev_value
    )


def describe_version(
    run_id: str, model_name: str, version: int, tags: Mapping[str, str], description: str
) -> None:
    """Tag and describe a registered version, and tag its run with ``registered_model=<name>/<version>``."""
    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(model_name, str(version), key, str(value))
    client.update_model_version(model_name, str(version), description=description)
    client.set_tag(run_id, "registered_model", f"{model_name}/{version}")
