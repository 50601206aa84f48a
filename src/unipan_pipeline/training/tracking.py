"""MLflow 3 tracking helpers: store layout, a rank-aware metric logger, pyfunc logging and the registry.

Layout (MLflow >= 3.13 refuses the plain ``./mlruns`` file store): tracking + registry in
``sqlite:///<project_root>/mlflow.db``, artifacts under ``<project_root>/mlruns/<experiment>`` (set per
experiment through ``artifact_location`` when the experiment is created). ``mlflow ui`` started from the
project root finds both. The URI is absolute, so ``dvc exp run`` (temporary checkouts) logs to the same
store.

Registered models are named ``unipan-<dataset>``; the alias ``champion`` points at the version with the best
PQ, stored on each version as a tag (``pq``) -- :func:`register_and_promote`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, requires, version
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types.schema import Array, ColSpec, DataType, Schema
from packaging.requirements import Requirement

import unipan_pipeline
from unipan_pipeline.categories import CategoryMap
from unipan_pipeline.training.distributed import is_main_process
from unipan_pipeline.training.pyfunc import PanopticPyfuncModel, build_eval_transform, resolve_import_path

DEFAULT_MAX_PARAM_LENGTH = 500
MLFLOW_MAX_PARAM_LENGTH = 6000  # mlflow.utils.validation.MAX_PARAM_VAL_LENGTH in MLflow 3.x


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


# ------------------------------------------------------------------------------------------------ params
def flatten_params(params: Mapping[str, Any], prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """``{"a": {"b": 1}} -> {"a.b": 1}``; lists/tuples stay values (rendered as JSON by the logger)."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            if value:
                flat.update(flatten_params(value, name, sep))
            else:
                flat[name] = "{}"
        else:
            flat[name] = value
    return flat


def render_param(value: Any, max_length: int = DEFAULT_MAX_PARAM_LENGTH) -> str:
    """String form of a parameter value, truncated to ``max_length`` characters (ending in ``...``)."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, list | tuple):
        try:
            text = json.dumps(list(value))
        except TypeError:
            text = str(list(value))
    else:
        text = str(value)
    max_length = min(max_length, MLFLOW_MAX_PARAM_LENGTH)
    if len(text) > max_length:
        text = text[: max_length - 3] + "..."
    return text


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


# ------------------------------------------------------------------------------------------------ models
def registered_model_name(dataset: str) -> str:
    """``unipan-<dataset>`` (the project's naming of registered models)."""
    return f"unipan-{dataset}"


def log_model_pyfunc(
    checkpoint_path: str | os.PathLike,
    model_config: Mapping[str, Any],
    categories: Any,
    *,
    name: str = "model",
    model_factory: str = "unipan_pipeline.model:build_model",
    config_factory: str = "unipan_pipeline.model:ModelConfig.from_dict",
    pixel_mean: tuple[float, float, float] = (0.485, 0.456, 0.406),
    pixel_std: tuple[float, float, float] = (0.229, 0.224, 0.225),
    eval_transform: Mapping[str, Any] | None = None,
    device: str = "cpu",
    registered_model_name: str | None = None,
    pip_requirements: list[str] | None = None,
    input_example_size: tuple[int, int] | None = (64, 128),
) -> Any:
    """Log the trained network as an ``mlflow.pyfunc`` model into the active run.

    Artifacts: the checkpoint (training checkpoint or bare ``state_dict``), ``model_config.json``,
    ``categories.json`` (``CategoryMap.to_dict()``) and ``inference.json`` (factory import paths, pixel
    normalisation, device). The loaded model (:class:`unipan_pipeline.training.pyfunc.PanopticPyfuncModel`)
    maps an RGB image (``HxWx3 uint8`` array or a path) to
    ``{"panoptic": int32 HxW, "segments_info": [...]}``.

    Args:
        categories: a ``CategoryMap``, its ``to_dict()`` or a path to ``categories.json``.
        model_factory / config_factory: ``"module:attr[.attr]"`` import paths (defaults: the project model).
        pixel_mean / pixel_std: normalisation of the [0, 1] RGB input when ``eval_transform`` is None.
        eval_transform: parameters of the evaluation ``TransformConfig`` (``unipan_pipeline.data.transforms``,
            e.g. ``{"base_scale": 0.25, "mean": [...], "std": [...]}``): the served model then resizes and
            normalises exactly like the evaluation pipeline, and maps its output back to the input size.
        pip_requirements: default :func:`model_requirements` (the project's dependencies, pinned).
        input_example_size: ``(H, W)`` of the generated image logged as input example (MLflow checks that
            the model answers it while logging, and ``mlflow models serve`` shows it); None: no example.

    The model carries :func:`model_signature` (a table, one row per image: ``image`` / ``image_base64`` /
    ``path``) and the project's package as ``code_paths``, so that ``mlflow models serve --env-manager
    local`` and a fresh environment built from its ``requirements.txt`` both load it.

    Returns:
        MLflow's ``ModelInfo`` (``.model_uri`` can be given to :func:`register_and_promote`).
    """
    resolve_import_path(model_factory)
    resolve_import_path(config_factory)
    checkpoint_path = Path(checkpoint_path)
    if not checkpoint_path.is_file():
        raise FileNotFoundError(f"log_model_pyfunc: checkpoint {checkpoint_path} does not exist")
    if isinstance(categories, CategoryMap):
        cat_dict = categories.to_dict()
    elif isinstance(categories, Mapping):
        cat_dict = dict(categories)
    else:
        cat_dict = json.loads(Path(categories).read_text())
    CategoryMap.from_dict(cat_dict)  # fail here, not at serving time
    if eval_transform is not None:
        eval_transform = dict(eval_transform)
        build_eval_transform(eval_transform)  # typos fail here too
    if pip_requirements is None:
        pip_requirements = model_requirements()
    example = None if input_example_size is None else input_example(*input_example_size)
    with tempfile.TemporaryDirectory(prefix="unipan-pyfunc-") as tmp:
        tmp_path = Path(tmp)
        (tmp_path / "model_config.json").write_text(json.dumps(dict(model_config), indent=2, default=str))
        (tmp_path / "categories.json").write_text(json.dumps(cat_dict, indent=2))
        (tmp_path / "inference.json").write_text(
            json.dumps(  # default=list: tuples of the transform parameters
                {
                    "model_factory": model_factory,
                    "config_factory": config_factory,
                    "pixel_mean": list(pixel_mean),
                    "pixel_std": list(pixel_std),
                    "eval_transform": eval_transform,
                    "device": device,
                },
                indent=2,
                default=list,
            )
        )
        artifacts = {
            "checkpoint": str(checkpoint_path),
            "model_config": str(tmp_path / "model_config.json"),
            "categories": str(tmp_path / "categories.json"),
            "inference": str(tmp_path / "inference.json"),
        }
        with warnings.catch_warnings():
            # MLflow 3.17 compares DataFrame columns with a range when it stores the example, which pandas 3
            # deprecates (Pandas4Warning from mlflow/models/utils.py): MLflow's internals, nothing to act on.
            warnings.filterwarnings("ignore", "Operation with range is deprecated", module="mlflow")
            return _log_pyfunc(name, artifacts, pip_requirements, registered_model_name, example)


def _log_pyfunc(
    name: str,
    artifacts: dict[str, str],
    pip_requirements: list[str],
    registered_model_name: str | None,
    example: pd.DataFrame | None,
) -> Any:
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=PanopticPyfuncModel(),
        artifacts=artifacts,
        pip_requirements=pip_requirements,
        registered_model_name=registered_model_name,
        signature=model_signature(),
        input_example=example,
        code_paths=[str(Path(unipan_pipeline.__file__).resolve().parent)],
    )


def model_signature() -> ModelSignature:
    """Input schema of the served model: one row per image, one of three optional columns set.

    ``image`` -- an ``HxWx3`` array of integers in 0..255 (JSON arrives as int64; the model checks the
    range), ``image_base64`` -- the encoded PNG/JPEG file (MLflow decodes base64 for binary columns),
    ``path`` -- a file the server can read.
    """
    return ModelSignature(
        inputs=Schema(
            [
                ColSpec(Array(Array(Array(DataType.long))), "image", required=False),
                ColSpec(DataType.binary, "image_base64", required=False),
                ColSpec(DataType.string, "path", required=False),
            ]
        )
    )


def input_example(height: int = 64, width: int = 128) -> pd.DataFrame:
    """A deterministic ``height x width`` RGB gradient as a one-row ``image`` table (the logged example)."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], axis=-1)
    return pd.DataFrame({"image": [rgb.astype(np.int64).tolist()]})


def model_requirements(distribution: str = "unipan_pipeline") -> list[str]:
    """The project's runtime dependencies (its package metadata, extras left out), pinned to the installed
    versions (``name[extras]==x.y.z``); a dependency that is not installed keeps its specifier."""
    try:
        declared = requires(distribution) or []
    except PackageNotFoundError:
        declared = []
    reqs = []
    for spec in declared:
        req = Requirement(spec)
        if req.marker is not None and "extra" in str(req.marker):
            continue
        extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
        try:
            reqs.append(f"{req.name}{extras}=={version(req.name)}")
        except PackageNotFoundError:
            reqs.append(str(req))
    return reqs


@dataclass(frozen=True)
class PromotionResult:
    """What :func:`register_and_promote` did."""

    model_name: str
    version: int
    metric_value: float
    promoted: bool
    previous_champion: int | None
    previous_value: float | None


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


@contextlib.contextmanager
def _tracking_uri(uri: str | None) -> Iterator[None]:
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
