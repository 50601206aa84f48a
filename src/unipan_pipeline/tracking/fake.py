"""An in-memory tracker for tests: records what the experiment glue logs, no MLflow, no database.

    tracker = FakeTracker()
    with use_tracker(tracker):
        train_experiment(params, name="demo")
    run = tracker.only_run()
    assert run.name == "demo-cityscapes-r18-argmaxP-e2e-seed0" and run.history("train/loss")

Parameters are flattened and rendered exactly as :class:`~.runs.MlflowLogger` sends them to MLflow, and a
registration moves the alias by the same rule as :func:`~.registry.register_and_promote` (strictly better
metric, or no readable holder). A study's runs nest as in MLflow: ``study_run`` is the active run or a new
one left active, ``child_run`` is active inside its block, and ``start_run`` there yields (and renames) it.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unipan_pipeline.tracking.params import DEFAULT_MAX_PARAM_LENGTH, flatten_params, render_param
from unipan_pipeline.tracking.tracker import PromotionResult, RunLogger


@dataclass
class FakeRun:
    """One recorded run (a :class:`~.tracker.RunLogger`)."""

    run_id: str
    name: str
    experiment_id: str = "0"
    params: dict[str, str] = field(default_factory=dict)
    metrics: list[tuple[str, float, int]] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    artifacts: list[str] = field(default_factory=list)
    models: list[dict[str, Any]] = field(default_factory=list)
    texts: dict[str, str] = field(default_factory=dict)
    dicts: dict[str, dict[str, Any]] = field(default_factory=dict)
    parent_id: str | None = None

    def log_params(self, params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
        """Flatten and render like MLflow's logger; a key logged before keeps its first value."""
        rendered = {
            k: render_param(v, DEFAULT_MAX_PARAM_LENGTH) for k, v in flatten_params(params, prefix).items()
        }
        for key, value in rendered.items():
            self.params.setdefault(key, value)
        return rendered

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Record ``(key, value, step)``."""
        self.metrics.extend((k, float(v), int(step or 0)) for k, v in metrics.items())

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Record tags as strings."""
        self.tags.update({k: str(v) for k, v in tags.items()})

    def log_artifact(self, path: str | os.PathLike, artifact_path: str) -> None:
        """Record ``<artifact_path>/<file name>`` of an existing file (missing files are skipped)."""
        if Path(path).is_file():
            self.artifacts.append(f"{artifact_path}/{Path(path).name}")

    def log_model(
        self,
        checkpoint_path: str | os.PathLike,
        model_config: Mapping[str, Any],
        categories: Any,
        *,
        eval_transform: Mapping[str, Any] | None,
        name: str = "model",
    ) -> str:
        """Record the model's pieces; the checkpoint must exist. Returns ``models:/fake-<run>-<name>``."""
        if not Path(checkpoint_path).is_file():
            raise FileNotFoundError(f"log_model: checkpoint {checkpoint_path} does not exist")
        uri = f"models:/fake-{self.run_id}-{name}"
        self.models.append(
            {
                "uri": uri,
                "checkpoint": str(checkpoint_path),
                "model_config": dict(model_config),
                "eval_transform": None if eval_transform is None else dict(eval_transform),
            }
        )
        return uri

    def log_text(self, text: str, artifact_file: str) -> None:
        """Record a text file of the run's artifacts."""
        self.texts[artifact_file] = text
        self.artifacts.append(artifact_file)

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None:
        """Record a JSON file of the run's artifacts."""
        self.dicts[artifact_file] = dict(data)
        self.artifacts.append(artifact_file)

    def parent_run_id(self) -> str | None:
        """The run this one is nested under, if any."""
        return self.parent_id

    def history(self, key: str) -> list[tuple[int, float]]:
        """``[(step, value), ...]`` of metric ``key`` in logging order."""
        return [(step, value) for k, value, step in self.metrics if k == key]


@dataclass
class FakeVersion:
    """A registered version."""

    version: int
    run_id: str
    metric_value: float
    tags: dict[str, str]
    description: str


class FakeTracker:
    """A :class:`~.tracker.Tracker` that keeps runs and registered models in memory."""

    def __init__(self) -> None:
        self.runs: dict[str, FakeRun] = {}
        self.versions: dict[str, list[FakeVersion]] = {}
        self.aliases: dict[tuple[str, str], int] = {}
        self.active: list[FakeRun] = []

    def _new_run(self, run_name: str, **fields: Any) -> FakeRun:
        run = FakeRun(run_id=f"run{len(self.runs)}", name=run_name, **fields)
        self.runs[run.run_id] = run
        return run

    @contextlib.contextmanager
    def start_run(self, run_name: str) -> Iterator[FakeRun]:
        """The active run renamed ``run_name`` (as MLflow's under kedro-mlflow or a study's child), else a new
        one, active inside the block."""
        if self.active:
            run = self.active[-1]
            run.name = run_name
            yield run
            return
        with self._activate(self._new_run(run_name)) as run:
            yield run

    @contextlib.contextmanager
    def _activate(self, run: FakeRun) -> Iterator[FakeRun]:
        self.active.append(run)
        try:
            yield run
        finally:
            self.active.remove(run)

    def study_run(self, run_name: str, tags: Mapping[str, str]) -> FakeRun:
        """The active run, else a new one named ``run_name`` left active; tagged with ``tags``."""
        if not self.active:
            self.active.append(self._new_run(run_name))
        run = self.active[-1]
        run.set_tags(tags)
        return run

    @contextlib.contextmanager
    def child_run(self, parent: RunLogger, run_name: str, tags: Mapping[str, str]) -> Iterator[FakeRun]:
        """A new run nested under ``parent``, active inside the block."""
        child = self._new_run(
            run_name, experiment_id=parent.experiment_id, parent_id=parent.run_id, tags=dict(tags)
        )
        with self._activate(child) as run:
            yield run

    def children(self, parent: FakeRun) -> list[FakeRun]:
        """The runs nested under ``parent``, in the order they were opened."""
        return [r for r in self.runs.values() if r.parent_id == parent.run_id]

    def open_run(self, run_id: str) -> FakeRun | None:
        """A recorded run, None for an unknown id."""
        return self.runs.get(run_id)

    def only_run(self) -> FakeRun:
        """The one recorded run (fails when there are none or several)."""
        (run,) = self.runs.values()
        return run

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
        """A new version; ``alias`` moves when the metric is strictly better than the holder's."""
        if not math.isfinite(metric_value):
            raise ValueError(f"register: pq={metric_value} is not a finite number")
        versions = self.versions.setdefault(model_name, [])
        new = FakeVersion(len(versions) + 1, run_id, float(metric_value), dict(version_tags), description)
        versions.append(new)
        held = self.aliases.get((model_name, alias))
        previous = versions[held - 1].metric_value if held is not None else None
        promoted = previous is None or metric_value > previous
        if promoted:
            self.aliases[(model_name, alias)] = new.version
        self.runs[run_id].tags["registered_model"] = f"{model_name}/{new.version}"
        return PromotionResult(model_name, new.version, float(metric_value), promoted, held, previous)
