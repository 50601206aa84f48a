"""The trained network as an ``mlflow.pyfunc`` model: artifacts, signature, input example, requirements."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, requires, version
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types.schema import Array, ColSpec, DataType, Schema
from packaging.requirements import Requirement

import unipan_pipeline
from unipan_pipeline.categories import CategoryMap
from unipan_pipeline.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from unipan_pipeline.tracking.pyfunc import PanopticPyfuncModel, build_eval_transform, resolve_import_path

log = logging.getLogger(__name__)


def log_model_pyfunc(
    checkpoint_path: str | os.PathLike,
    model_config: Mapping[str, Any],
    categories: Any,
    *,
    name: str = "model",
    model_factory: str = "unipan_pipeline.model:build_model",
    config_factory: str = "unipan_pipeline.model:ModelConfig.from_dict",
    pixel_mean: tuple[float, float, float] = IMAGENET_MEAN,
    pixel_std: tuple[float, float, float] = IMAGENET_STD,
    eval_transform: Mapping[str, Any] | None = None,
    device: str = "cpu",
    registered_model_name: str | None = None,
    pip_requirements: list[str] | None = None,
    input_example_size: tuple[int, int] | None = (64, 128),
) -> Any:
    """Log the trained network as an ``mlflow.pyfunc`` model into the active run.

    Artifacts: the checkpoint (training checkpoint or bare ``state_dict``), ``model_config.json``,
    ``categories.json`` (``CategoryMap.to_dict()``) and ``inference.json`` (factory import paths, pixel
    normalisation, device). The loaded model (:class:`unipan_pipeline.tracking.pyfunc.PanopticPyfuncModel`)
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


def load_logged_model(uri: str) -> PanopticPyfuncModel:
    """A logged or registered model (``models:/<name>@<alias>``, ``models:/<name>/<version>``,
    ``runs:/<id>/model``) from the current tracking and registry URIs, unwrapped."""
    tracking, registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    log.info("loading %s (MLflow tracking %s, registry %s)", uri, tracking, registry)
    with tempfile.TemporaryDirectory(prefix="unipan-model-") as tmp:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=uri, dst_path=tmp, tracking_uri=tracking, registry_uri=registry
        )
        loaded = mlflow.pyfunc.load_model(local)
    return loaded.unwrap_python_model()
