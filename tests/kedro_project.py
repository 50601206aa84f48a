"""Running the real Kedro project in-process, in a throw-away COPY of it, for the end-to-end tests.

``copy_project`` makes the copy (its own data/ and, through kedro-mlflow's conf, its own ``mlflow.db``),
``run_kedro`` is ``kedro run`` there as from a fresh shell, ``isolated_mlflow`` saves and restores MLflow's
process-wide state around anything that points MLflow elsewhere. ``TINY_MODEL`` is a model small enough to
train a few iterations in seconds. ``project_catalog`` / ``resolved`` resolve dataset names through the
catalog of conf/base (its dataset factories included) without starting a session.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import mlflow.tracking._model_registry.utils as registry_utils
import mlflow.tracking._tracking_service.utils as tracking_utils
from kedro.config import OmegaConfigLoader
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro.io import DataCatalog
from kedro_mlflow.framework.hooks.mlflow_hook import mlflow_hook
from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistryStore
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore as TrackingStore
from mlflow.tracking._model_registry.registry import ModelRegistryStoreRegistry
from mlflow.tracking._tracking_service.registry import TrackingStoreRegistry

ROOT = Path(__file__).resolve().parents[1]

TINY_MODEL: dict[str, Any] = {
    "backbone_depth": 18,
    "pretrained": "none",
    "norm": "bn",
    "trainable_layers": 5,
    "fpn_channels": 32,
    "semantic_channels": 16,
    "affinity_channels": 16,
    "anchor_sizes": [8, 16, 32, 64, 128],
    "rpn_pre_nms_top_n_train": 50,
    "rpn_post_nms_top_n_train": 20,
    "rpn_pre_nms_top_n_test": 50,
    "rpn_post_nms_top_n_test": 20,
    "roi_batch_size_per_image": 16,
    "box_head_channels": 32,
    "mask_head_convs": 1,
    "mask_head_channels": 16,
    "detections_per_img": 10,
}


def project_catalog() -> DataCatalog:
    """The catalog of conf/base (+ conf/local) as Kedro builds it, patterns and all."""
    conf = OmegaConfigLoader(str(ROOT / "conf"), base_env="base", default_run_env="local")
    return DataCatalog.from_config(conf["catalog"])


def resolved(catalog: DataCatalog, name: str) -> dict[str, Any] | None:
    """``name`` as ``catalog`` resolves it (an entry or a dataset factory): its type, its file path
    relative to the project and its kedro-viz layer; ``None`` where nothing matches (Kedro would then keep
    the data in memory)."""
    dataset = catalog.get(name)
    if dataset is None:
        return None
    filepath = dataset._describe().get("filepath")
    return {
        "type": type(dataset).__name__,
        "filepath": None if filepath is None else str(filepath),
        "layer": ((dataset.metadata or {}).get("kedro-viz") or {}).get("layer"),
    }


def copy_project(dest: Path) -> Path:
    """A runnable copy of the project: pyproject + conf/base (+ logging.yml), empty conf/local, data/ and
    src/ (the package itself is imported from the editable install)."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    shutil.copytree(ROOT / "conf" / "base", dest / "conf" / "base")
    if (ROOT / "conf" / "logging.yml").exists():
        shutil.copy(ROOT / "conf" / "logging.yml", dest / "conf" / "logging.yml")
    for sub in ("conf/local", "src", "data"):
        (dest / sub).mkdir()
    return dest


@contextlib.contextmanager
def isolated_mlflow(uri: str | None = None) -> Iterator[None]:
    """Save MLflow's global URIs (module state AND the MLFLOW_*_URI variables that ``set_*_uri`` export),
    optionally point both at ``uri``, end open runs and restore everything afterwards."""
    names = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    saved = tracking_utils._tracking_uri, registry_utils._registry_uri, {k: os.environ.get(k) for k in names}
    try:
        if uri is not None:
            mlflow.set_tracking_uri(uri)
            mlflow.set_registry_uri(uri)
        yield
    finally:
        while mlflow.active_run() is not None:
            mlflow.end_run()
        mlflow.set_tracking_uri(saved[0])
        registry_utils._registry_uri = saved[1]
        for k, v in saved[2].items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def forget_mlflow_stores() -> None:
    """Drop MLflow's per-process store / engine caches. They are keyed by the URI string, and kedro-mlflow's
    ``sqlite:///mlflow.db`` is relative: without this, a second project run in the same pytest process would
    write into the first project's database."""
    TrackingStoreRegistry._get_store_with_resolved_uri.cache_clear()
    ModelRegistryStoreRegistry._get_store_with_resolved_uri.cache_clear()
    for store in (TrackingStore, RegistryStore):
        engines = getattr(store, "_engine_map", None)
        if isinstance(engines, dict):
            engines.clear()


def run_kedro(
    project: Path,
    pipelines: list[str] | None = None,
    params: dict[str, Any] | None = None,
    namespaces: list[str] | None = None,
) -> None:
    """``kedro run [--pipelines ...] [--namespaces ...]`` in-process in ``project``, as from a fresh shell:
    cwd switched there, no MLflow URI preset (kedro-mlflow's conf/base/mlflow.yml applies); MLflow's globals
    restored afterwards. ``pipelines=None`` runs the default pipeline."""
    old_cwd = Path.cwd()
    with isolated_mlflow():
        for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
            os.environ.pop(k, None)
        registry_utils._registry_uri = None
        mlflow.set_tracking_uri(None)
        os.chdir(project)
        forget_mlflow_stores()
        # kedro-mlflow's hook is a process-wide singleton that keeps the last run id even through a pipeline
        # with tracking disabled; each real `kedro run` is a fresh process, so start each test run clean.
        mlflow_hook.run_id = None
        try:
            bootstrap_project(project)
            with KedroSession.create(project_path=project, runtime_params=params or {}) as session:
                session.run(pipeline_names=pipelines, namespaces=namespaces)
        finally:
            while mlflow.active_run() is not None:  # end leftovers while the relative URI means this project
                mlflow.end_run()
            forget_mlflow_stores()
            os.chdir(old_cwd)


TINY_PARAMS: dict[str, Any] = {
    "generate_synthetic": {
        "splits": {"train": 4, "val": 2},
        "height": 64,
        "width": 128,
        "workers": 1,
        "progress": False,
    },
    "demo": {
        "augment": {"base_scale": 1.0, "scale_range": None, "crop_size": [64, 128]},
        "augment_eval": {"base_scale": 1.0},
        "model": TINY_MODEL,
        "trainer": {
            "iterations": 3,
            "images_per_batch": 2,
            "num_workers": 0,
            "log_every": 1,
            "validate_every": 2,
            "checkpoint_every": 2,
            "warmup_iters": 1,
            "lr_steps": [],
            "progress_bar": False,
        },
        "validation": {"max_images": 2},
        "evaluation": {"num_pictures": 1, "affinity_pictures": 1, "progress_bar": False},
    },
}
