"""What the experiment glue needs from experiment tracking, independent of MLflow.

A :class:`Tracker` opens runs (a training's; a study's parent and child runs) and registers models; a
:class:`RunLogger` is one run (parameters, metrics, tags, files, texts, the model). :func:`current_tracker`
is MLflow (:class:`.runs.MlflowTracker`) unless :func:`use_tracker` installed another one, e.g.
:class:`.fake.FakeTracker` in tests. Nothing here imports MLflow.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

DEFAULT_EXPERIMENT = "unipan"
"""The MLflow experiment of runs started outside ``kedro run`` (kedro-mlflow's is set in ``mlflow.yml``)."""


def registered_model_name(dataset: str) -> str:
    """``unipan-<dataset>`` (the project's naming of registered models)."""
    return f"unipan-{dataset}"


@dataclass(frozen=True)
class PromotionResult:
    """What a registration did: the new version, and whether the alias moved to it."""

    model_name: str
    version: int
    metric_value: float
    promoted: bool
    previous_champion: int | None
    previous_value: float | None


@runtime_checkable
class RunLogger(Protocol):
    """One tracked run. Also the training loop's metric sink (``log_metrics``)."""

    run_id: str

    @property
    def experiment_id(self) -> str: ...

    def log_params(self, params: Mapping[str, Any], prefix: str = "") -> dict[str, str]: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...

    def set_tags(self, tags: Mapping[str, Any]) -> None: ...

    def log_artifact(self, path: str | os.PathLike, artifact_path: str) -> None: ...

    def log_model(
        self,
        checkpoint_path: str | os.PathLike,
        model_config: Mapping[str, Any],
        categories: Any,
        *,
        eval_transform: Mapping[str, Any] | None,
        name: str = "model",
    ) -> str: ...

    def log_text(self, text: str, artifact_file: str) -> None: ...

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None: ...

    def parent_run_id(self) -> str | None: ...


class Tracker(Protocol):
    """Opens runs and keeps the model registry."""

    def start_run(self, run_name: str) -> contextlib.AbstractContextManager[RunLogger]:
        """The run to log a training into, named ``run_name``, open inside the block."""
        ...

    def open_run(self, run_id: str) -> RunLogger | None:
        """An existing run to add to, or None when the store does not know ``run_id``."""
        ...

    def study_run(self, run_name: str, tags: Mapping[str, str]) -> RunLogger:
        """A study's parent run: the active run, else a new one named ``run_name`` left open (its children
        nest under it); tagged with ``tags``."""
        ...

    def child_run(
        self, parent: RunLogger, run_name: str, tags: Mapping[str, str]
    ) -> contextlib.AbstractContextManager[RunLogger]:
        """A run nested under ``parent``, the active one inside the block (``start_run`` there yields it)."""
        ...

    def register(
        self,
        run_id: str,
        model_name: str,
        metric_value: float,
        *,
        alias: str,
        model_uri: str | None,
        version_tags: Mapping[str, str],
        description: str,
    ) -> PromotionResult | None:
        """Register the run's model as a new version of ``model_name`` (tagged ``pq`` = ``metric_value``),
        move ``alias`` to it when it beats the holder's, tag and describe it; None on non-zero ranks."""
        ...


_INSTALLED: list[Tracker] = []


def current_tracker() -> Tracker:
    """The tracker installed by :func:`use_tracker`, else MLflow's."""
    if _INSTALLED:
        return _INSTALLED[-1]
    from unipan_pipeline.tracking.runs import MlflowTracker  # noqa: PLC0415 - imports MLflow

    return MlflowTracker()


@contextlib.contextmanager
def use_tracker(tracker: Tracker) -> Iterator[Tracker]:
    """Make ``tracker`` the :func:`current_tracker` inside the block."""
    _INSTALLED.append(tracker)
    try:
        yield tracker
    finally:
        _INSTALLED.remove(tracker)
