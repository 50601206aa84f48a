"""Where MLflow keeps things: the project's SQLite store, artifact folders, experiments.

Layout (MLflow >= 3.13 refuses the plain ``./mlruns`` file store): tracking + registry in
``sqlite:///<project_root>/mlflow.db``, artifacts under ``<project_root>/mlruns/<experiment>`` (set per
experiment through ``artifact_location`` when the experiment is created). ``mlflow ui`` started from the
project root finds both. The URI is absolute, so ``dvc exp run`` (temporary checkouts) logs to the same
store.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from unipan_pipeline.tracking.tracker import DEFAULT_EXPERIMENT

__all__ = [
    "DEFAULT_EXPERIMENT",
    "artifact_root_for",
    "configure_tracking",
    "current_tracking_uri",
    "get_or_create_experiment",
    "set_tracking_uri",
    "tracking_uri",
    "tracking_uri_for",
]


def tracking_uri_for(project_root: str | os.PathLike) -> str:
    """``sqlite:///<absolute project_root>/mlflow.db``."""
    return f"sqlite:///{Path(project_root).resolve() / 'mlflow.db'}"


def artifact_root_for(project_root: str | os.PathLike) -> Path:
    """``<absolute project_root>/mlruns``."""
    return Path(project_root).resolve() / "mlruns"


def configure_tracking(
    project_root: str | os.PathLike, experiment_name: str | None = None, *, tracking_uri: str | None = None
) -> str | None:
    """Point MLflow at the project's SQLite store and (optionally) select/create an experiment.

    Args:
        project_root: folder holding ``mlflow.db`` and ``mlruns/``.
        experiment_name: experiment to select (created with its artifacts under ``mlruns/<name>``).
        tracking_uri: override (e.g. a tracking server); default :func:`tracking_uri_for`.

    Returns:
        The experiment id, or None when no experiment was requested.
    """
    uri = tracking_uri or tracking_uri_for(project_root)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if experiment_name is None:
        return None
    experiment_id = get_or_create_experiment(experiment_name, project_root, tracking_uri=uri)
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def get_or_create_experiment(
    name: str, project_root: str | os.PathLike, *, tracking_uri: str | None = None
) -> str:
    """Id of experiment ``name``; created with ``artifact_location=<project_root>/mlruns/<name>``."""
    client = MlflowClient(tracking_uri=tracking_uri or tracking_uri_for(project_root))
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = artifact_root_for(project_root) / _safe_name(name)
    location.mkdir(parents=True, exist_ok=True)
    return client.create_experiment(name, artifact_location=location.as_uri())


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "experiment"


@contextlib.contextmanager
def tracking_uri(uri: str | None) -> Iterator[None]:
    """Temporarily point MLflow's fluent API (tracking + registry) at ``uri``."""
    if uri is None:
        yield
        return
    old_tracking, old_registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(old_tracking)
        mlflow.set_registry_uri(old_registry)


def current_tracking_uri() -> str:
    """MLflow's tracking URI in this process (as kedro-mlflow or ``$MLFLOW_TRACKING_URI`` set it)."""
    return str(mlflow.get_tracking_uri())


def set_tracking_uri(uri: str) -> None:
    """Point MLflow's tracking and registry at ``uri`` for the rest of the process."""
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
