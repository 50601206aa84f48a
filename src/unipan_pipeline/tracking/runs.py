"""MLflow runs: the run a training logs into, a rank-aware logger for it (parameters, metrics, tags,
artifacts, texts), and the parent / child runs of a study."""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from unipan_pipeline.tracking.params import (
    DEFAULT_MAX_PARAM_LENGTH,
    MLFLOW_MAX_PARAM_LENGTH,
    flatten_params,
    render_param,
)
from unipan_pipeline.tracking.store import DEFAULT_EXPERIMENT, get_or_create_experiment
from unipan_pipeline.tracking.tracker import PromotionResult, RunLogger
from unipan_pipeline.training.distributed import is_main_process

log = logging.getLogger(__name__)


class MlflowLogger:
    """Metric/param sink for :func:`unipan_pipeline.training.train` that writes to one MLflow run.

    Only rank 0 writes (checked at call time, so one object can be handed to every DDP worker). The object
    pickles as ``(tracking_uri, run_id)``: workers spawned by the elastic launcher log into the parent's
    run through their own client.

    Args:
        run_id: the run to write to; default: the active run (e.g. the one kedro-mlflow opened).
        tracking_uri: default: ``mlflow.get_tracking_uri()`` at construction time.
        max_param_length: truncation of long parameter values.
        metric_prefix: prepended to every metric key (e.g. ``"c1/"`` for one ablation row).
    """

    def __init__(
        self,
        run_id: str | None = None,
        tracking_uri: str | None = None,
        *,
        max_param_length: int = DEFAULT_MAX_PARAM_LENGTH,
        metric_prefix: str = "",
    ) -> None:
        if run_id is None:
            active = mlflow.active_run()
            if active is None:
                raise RuntimeError("MlflowLogger: no run_id given and no active MLflow run")
            run_id = active.info.run_id
        self.run_id = run_id
        self.tracking_uri = tracking_uri or mlflow.get_tracking_uri()
        self.max_param_length = max_param_length
        self.metric_prefix = metric_prefix
        self._client: Any = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_client"] = None
        return state

    @property
    def client(self) -> Any:
        """Lazily created ``MlflowClient`` for ``tracking_uri``."""
        if self._client is None:
            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    def log_params(self, params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
        """Flatten nested dicts (``a.b.c``), render and truncate values, log them in batches of 100.

        A parameter already logged with a different value (MLflow forbids changing it, e.g. after a
        resume into the same run) is skipped with a warning. Returns what was sent (rank 0) or ``{}``.
        """
        if not is_main_process():
            return {}
        rendered = {
            k: render_param(v, self.max_param_length) for k, v in flatten_params(params, prefix).items()
        }
        existing = self.client.get_run(self.run_id).data.params
        todo = {k: v for k, v in rendered.items() if k not in existing}
        for k in sorted(set(rendered) & set(existing)):
            if existing[k] != rendered[k]:
                warnings.warn(
                    f"MLflow param {k!r} already logged as {existing[k]!r}; not changed to {rendered[k]!r}",
                    stacklevel=2,
                )
        items = sorted(todo.items())
        for i in range(0, len(items), 100):
            try:
                self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in items[i : i + 100]])
            except MlflowException as exc:
                raise ValueError(
                    f"MLflow rejected parameters {[k for k, _ in items[i : i + 100]]}: {exc}"
                ) from exc
        return rendered

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log scalar metrics at ``step`` (rank 0 only); non-finite values are logged as they are."""
        if not is_main_process() or not metrics:
            return
        ts = int(time.time() * 1000)
        batch = [Metric(f"{self.metric_prefix}{k}", float(v), ts, int(step or 0)) for k, v in metrics.items()]
        for i in range(0, len(batch), 1000):
            self.client.log_batch(self.run_id, metrics=batch[i : i + 1000])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set run tags (rank 0 only)."""
        if not is_main_process():
            return
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, render_param(v, MLFLOW_MAX_PARAM_LENGTH))

    @property
    def experiment_id(self) -> str:
        """The experiment the run belongs to."""
        return str(self.client.get_run(self.run_id).info.experiment_id)

    def rename(self, name: str) -> None:
        """Set the run's name (kedro-mlflow names its run after the pipeline)."""
        self.client.update_run(self.run_id, name=name)

    def log_artifact(self, path: str | os.PathLike, artifact_path: str) -> None:
        """Log one file under ``artifact_path``; a missing file is skipped with a warning."""
        if not Path(path).is_file():
            log.warning("artifact %s does not exist; not logged", path)
            return
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        """A text file (a table, a report) at ``artifact_file`` in the run's artifacts."""
        self.client.log_text(self.run_id, text, artifact_file)

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None:
        """A JSON / YAML file at ``artifact_file`` in the run's artifacts."""
        self.client.log_dict(self.run_id, dict(data), artifact_file)

    def log_model(
        self,
        checkpoint_path: str | os.PathLike,
        model_config: Mapping[str, Any],
        categories: Any,
        *,
        eval_transform: Mapping[str, Any] | None,
        name: str = "model",
    ) -> str:
        """The network as a pyfunc model in this run (which must be the active one); returns its URI."""
        from unipan_pipeline.tracking.models import log_model_pyfunc  # noqa: PLC0415

        active = mlflow.active_run()
        if active is None or active.info.run_id != self.run_id:
            raise RuntimeError(f"log_model: run {self.run_id} is not the active MLflow run")
        info = log_model_pyfunc(
            checkpoint_path, model_config, categories, eval_transform=eval_transform, name=name
        )
        return str(info.model_uri)

    def parent_run_id(self) -> str | None:
        """The run this one is nested under, if any."""
        return self.client.get_run(self.run_id).data.tags.get("mlflow.parentRunId")


def active_run_logger() -> MlflowLogger | None:
    """A logger for the active run (kedro-mlflow's run of ``kedro run``), None when no run is open."""
    run = mlflow.active_run()
    return None if run is None else MlflowLogger(run.info.run_id)


@contextlib.contextmanager
def training_run(run_name: str, experiment: str = DEFAULT_EXPERIMENT) -> Iterator[MlflowLogger]:
    """The run to log a training into, named ``run_name``.

    Under ``kedro run`` kedro-mlflow has opened one run for the whole pipeline: that run is used (and left
    open). Otherwise (command line, tests, a pipeline with tracking disabled) a run is started in
    ``experiment`` of the current tracking URI -- MLflow's default, ``sqlite:///mlflow.db`` in the working
    directory, or ``$MLFLOW_TRACKING_URI`` -- with artifacts under ``./mlruns/<experiment>``, and ended on
    exit.
    """
    active = mlflow.active_run()
    if active is not None:
        logger = MlflowLogger(active.info.run_id)
        logger.rename(run_name)
        yield logger
        return
    exp_id = get_or_create_experiment(experiment, Path.cwd(), tracking_uri=mlflow.get_tracking_uri())
    with mlflow.start_run(experiment_id=exp_id, run_name=run_name) as run:
        logger = MlflowLogger(run.info.run_id)
        logger.rename(run_name)
        yield logger


def study_run(run_name: str, tags: Mapping[str, str], experiment: str = DEFAULT_EXPERIMENT) -> MlflowLogger:
    """A study's parent run: the active run (kedro-mlflow's), else a new active one named ``run_name`` in
    ``experiment`` (left open: the study's child runs nest under it); tagged with ``tags``."""
    run = mlflow.active_run()
    if run is None:
        exp_id = get_or_create_experiment(experiment, Path.cwd(), tracking_uri=mlflow.get_tracking_uri())
        run = mlflow.start_run(experiment_id=exp_id, run_name=run_name)
        log.warning(
            "no MLflow run is open (kedro-mlflow tracking disabled?): started the study's parent run %s",
            run.info.run_id,
        )
    logger = MlflowLogger(run.info.run_id)
    logger.set_tags(tags)
    return logger


@contextlib.contextmanager
def child_run(parent: RunLogger, run_name: str, tags: Mapping[str, str]) -> Iterator[MlflowLogger]:
    """A run nested under ``parent``, active inside the block (so code that logs to the active run logs
    into it)."""
    with mlflow.start_run(
        run_name=run_name, experiment_id=parent.experiment_id, nested=True, tags=dict(tags)
    ) as run:
        yield MlflowLogger(run.info.run_id)


class MlflowTracker:
    """The :class:`~unipan_pipeline.tracking.tracker.Tracker` of the project: MLflow at its current URI."""

    def start_run(self, run_name: str) -> contextlib.AbstractContextManager[MlflowLogger]:
        """See :func:`training_run`."""
        return training_run(run_name)

    def open_run(self, run_id: str) -> MlflowLogger | None:
        """``run_id`` when the current tracking store has it; else None with a warning (e.g. data pulled with
        DVC onto a machine whose mlflow.db never saw the training run)."""
        try:
            MlflowClient().get_run(run_id)
        except MlflowException:
            log.warning(
                "MLflow run %s of the model is not in this tracking store: nothing logged/registered", run_id
            )
            return None
        return MlflowLogger(run_id)

    def study_run(self, run_name: str, tags: Mapping[str, str]) -> MlflowLogger:
        """See :func:`study_run`."""
        return study_run(run_name, tags)

    def child_run(
        self, parent: RunLogger, run_name: str, tags: Mapping[str, str]
    ) -> contextlib.AbstractContextManager[MlflowLogger]:
        """See :func:`child_run`."""
        return child_run(parent, run_name, tags)

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
        """:func:`~.registry.register_and_promote`, then :func:`~.registry.describe_version`."""
        from unipan_pipeline.tracking.registry import describe_version, register_and_promote  # noqa: PLC0415

        result = register_and_promote(run_id, model_name, metric_value, alias=alias, model_uri=model_uri)
        if result is not None:
            describe_version(run_id, model_name, result.version, version_tags, description)
        return result
