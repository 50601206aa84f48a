"""Shared pieces of the experiment glue: parameter checking, atomic writes, provenance, run names, and the
model bundle (the files a trained model is made of).

Model bundle (written by :func:`save_bundle` into a training run's ``output_dir``)::

    model.pt             the network's state_dict (written atomically)
    model_config.json    ModelConfig.to_dict()
    categories.json      CategoryMap.to_dict()
    inference.json       factory import paths, pixel normalisation, the evaluation transform, device

These are exactly the artefacts of :func:`unipan_pipeline.tracking.models.log_model_pyfunc`, so a bundle on
disk and a logged MLflow model load through the same class
(:class:`unipan_pipeline.tracking.pyfunc.PanopticPyfuncModel`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from unipan_pipeline.categories import CategoryMap
from unipan_pipeline.data.store import MARKER
from unipan_pipeline.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from unipan_pipeline.devices import resolve_device
from unipan_pipeline.fileio.atomic import atomic_write, write_text_atomic
from unipan_pipeline.params import check_mapping
from unipan_pipeline.tracking.tracker import DEFAULT_EXPERIMENT  # noqa: F401 - kept for old imports

log = logging.getLogger(__name__)

BUNDLE_FILES = {
    "checkpoint": "model.pt",
    "model_config": "model_config.json",
    "categories": "categories.json",
    "inference": "inference.json",
}
MODEL_FACTORY = "unipan_pipeline.model:build_model"
CONFIG_FACTORY = "unipan_pipeline.model:ModelConfig.from_dict"


# ------------------------------------------------------------------------------------------------ params
def check_keys(
    params: Mapping[str, Any], where: str, *, required: set[str], optional: set[str] = frozenset()
) -> None:
    """Raise ``ValueError`` naming ``where`` (e.g. ``params:train_cityscapes``) and its conf file on missing /
    unknown keys (:func:`unipan_pipeline.params.check_mapping`)."""
    check_mapping(params, where, known=set(required) | set(optional), required=required)


def plain(obj: Any) -> Any:
    """Kedro/OmegaConf containers, tuples, numpy / torch scalars -> plain JSON-able python."""
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return plain(obj.item() if obj.numel() == 1 else obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


# ------------------------------------------------------------------------------------------------ files
def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (:func:`unipan_pipeline.fileio.atomic.write_text_atomic`)."""
    return write_text_atomic(path, text)


def atomic_write_json(path: str | os.PathLike, data: Any) -> Path:
    """JSON (indented, NaN -> null) written atomically."""
    return atomic_write_text(path, json.dumps(plain(data), indent=2) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` atomically (:func:`unipan_pipeline.fileio.atomic.atomic_write`)."""
    with atomic_write(path, "wb") as f:
        torch.save(obj, f)
    return Path(path)


# ------------------------------------------------------------------------------------------------ provenance
def data_source(ingested_root: str | os.PathLike) -> dict[str, str]:
    """Which raw data set an ingested folder came from: ``{"source": "synthetic"|"real"|..., "raw_root"}``.

    Read from the ingestion marker (``_INGESTED.json``, ``"source": "synthetic:/path"``).
    """
    marker = Path(ingested_root) / MARKER
    try:
        raw = str(json.loads(marker.read_text()).get("source", "unknown"))
    except (OSError, json.JSONDecodeError):
        return {"source": "unknown", "raw_root": ""}
    kind, _, where = raw.partition(":")
    return {"source": kind or "unknown", "raw_root": where}


def data_fingerprint(ingested_root: str | os.PathLike, splits: list[str]) -> str:
    """sha256 (first 16 hex digits) of the splits' ``panoptic_<split>.json`` files: identifies the data."""
    h = hashlib.sha256()
    for split in splits:
        path = Path(ingested_root) / f"panoptic_{split}.json"
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def git_commit(cwd: str | os.PathLike | None = None) -> str | None:
    """``git rev-parse HEAD`` of the project (None outside a git checkout or without git)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def dvc_hashes(path: str | os.PathLike, lock_file: str | os.PathLike = "dvc.lock") -> dict[str, str]:
    """md5 of every DVC output under ``path`` recorded in ``dvc.lock`` (``{}`` without a lock file)."""
    lock = Path(lock_file)
    if not lock.is_file():
        return {}
    import yaml  # noqa: PLC0415 - only needed here

    try:
        data = yaml.safe_load(lock.read_text()) or {}
    except yaml.YAMLError:
        return {}
    wanted = Path(path).as_posix().rstrip("/")
    found: dict[str, str] = {}
    for stage in (data.get("stages") or {}).values():
        for out in stage.get("outs") or []:
            p = str(out.get("path", "")).rstrip("/")
            if (p == wanted or wanted.startswith(p + "/") or p.startswith(wanted + "/")) and "md5" in out:
                found[p] = str(out["md5"])
    return found


def provenance(ingested_root: str | os.PathLike, splits: list[str]) -> dict[str, str]:
    """Tags describing the code and data versions of a run (``code.git_commit``, ``data.*``)."""
    src = data_source(ingested_root)
    tags = {
        "data.ingested_root": str(ingested_root),
        "data.source": src["source"],
        "data.raw_root": src["raw_root"],
        "data.fingerprint": data_fingerprint(ingested_root, splits),
    }
    commit = git_commit()
    if commit:
        tags["code.git_commit"] = commit
    for p, md5 in dvc_hashes(ingested_root).items():
        tags[f"data.dvc_md5.{p}"] = md5
    return tags


# ------------------------------------------------------------------------------------------------ runs
def run_name(prefix: str, dataset: str, model: Mapping[str, Any], seed: Any) -> str:
    """What a training run trained, e.g. ``demo-cityscapes-r18-argmaxP-e2e-seed0``.

    ``<prefix>-<dataset>-r<backbone depth>-<inference><P|Psi>-<e2e|no-e2e>-seed<seed>``: ``argmaxP`` is argmax
    over the instance affinity ``P`` (``argmaxPsi`` without it, over the dynamic potential), ``heuristic``
    the Panoptic FPN merger; the potential variant is appended when it is not the paper's ``C``, ``-nomask``
    when the mask head is off. Missing keys take :class:`~unipan_pipeline.model.ModelConfig`'s defaults.
    """
    from unipan_pipeline.model import ModelConfig  # noqa: PLC0415 - keeps this module light

    cfg = ModelConfig.from_dict(dict(model))
    if cfg.inference == "heuristic":
        variant = "heuristic"
    else:
        variant = f"{cfg.inference}{'P' if cfg.use_affinity else 'Psi'}"
    if cfg.potential_variant != "C":
        variant += cfg.potential_variant
    parts = [prefix, dataset, f"r{cfg.backbone_depth}", variant, "e2e" if cfg.train_end_to_end else "no-e2e"]
    if not cfg.use_masks:
        parts.append("nomask")
    parts.append(f"seed{seed}")
    return "-".join(str(p) for p in parts if str(p))


# ------------------------------------------------------------------------------------------------ bundle
def inference_spec(eval_transform: Mapping[str, Any] | None, device: str = "cpu") -> dict[str, Any]:
    """``inference.json`` content (the schema of ``log_model_pyfunc``)."""
    mean = (eval_transform or {}).get("mean", IMAGENET_MEAN)
    std = (eval_transform or {}).get("std", IMAGENET_STD)
    return {
        "model_factory": MODEL_FACTORY,
        "config_factory": CONFIG_FACTORY,
        "pixel_mean": list(mean),
        "pixel_std": list(std),
        "eval_transform": plain(eval_transform) if eval_transform is not None else None,
        "device": device,
    }


def save_bundle(
    out_dir: str | os.PathLike,
    state_dict: Mapping[str, torch.Tensor],
    model_config: Mapping[str, Any],
    categories: CategoryMap,
    eval_transform: Mapping[str, Any] | None,
) -> dict[str, str]:
    """Write the model bundle (see the module docstring) atomically file by file; returns name -> path."""
    out = Path(out_dir)
    paths = {k: out / v for k, v in BUNDLE_FILES.items()}
    atomic_torch_save(dict(state_dict), paths["checkpoint"])
    atomic_write_json(paths["model_config"], dict(model_config))
    atomic_write_json(paths["categories"], categories.to_dict())
    atomic_write_json(paths["inference"], inference_spec(eval_transform))
    return {k: str(v) for k, v in paths.items()}


@dataclass
class LoadedModel:
    """A network ready for inference and what it needs: categories, eval transform parameters, device."""

    predictor: Any  # PanopticPyfuncModel (predict_images, model, categories, transform)
    eval_transform: dict[str, Any] | None
    source: str

    @property
    def model(self) -> torch.nn.Module:
        return self.predictor.model

    @property
    def categories(self) -> CategoryMap:
        return self.predictor.categories


def _bundle_dir(location: str | os.PathLike) -> Path:
    path = Path(location)
    if not path.is_file():
        return path
    if path.suffix == ".json" and path.name not in BUNDLE_FILES.values():
        try:
            manifest = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not a training manifest (invalid JSON: {err})") from None
        if (
            isinstance(manifest, dict)
            and "bundle" in manifest
            and not (path.parent / BUNDLE_FILES["checkpoint"]).is_file()
        ):
            # a training manifest stored away from its bundle (paths are relative to the project root)
            return Path(manifest["bundle"]["checkpoint"]).parent
    return path.parent


def load_bundle(location: str | os.PathLike, device: str = "auto") -> LoadedModel:
    """Load a bundle folder (or a training manifest json pointing at one) for inference."""
    from unipan_pipeline.tracking.pyfunc import PanopticPyfuncModel  # noqa: PLC0415 - imports MLflow

    folder = _bundle_dir(location)
    artifacts = {k: str(folder / v) for k, v in BUNDLE_FILES.items()}
    missing = [p for p in artifacts.values() if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{location} is not a complete model bundle: missing {missing} (train a model first, "
            f"e.g. `kedro run --pipelines=train_cityscapes`)"
        )
    spec = json.loads(Path(artifacts["inference"]).read_text())
    dev = resolve_device(device)
    if spec.get("device") != str(dev.type):
        spec["device"] = dev.type
        with tempfile.TemporaryDirectory(prefix="unipan-bundle-") as tmp:
            artifacts["inference"] = str(Path(tmp) / "inference.json")
            Path(artifacts["inference"]).write_text(json.dumps(spec))
            predictor = PanopticPyfuncModel()
            predictor.load_context(SimpleNamespace(artifacts=artifacts))
    else:
        predictor = PanopticPyfuncModel()
        predictor.load_context(SimpleNamespace(artifacts=artifacts))
    return LoadedModel(predictor, spec.get("eval_transform"), str(folder))


def load_model_uri(uri: str, device: str = "auto") -> LoadedModel:
    """A model from any of: ``models:/<name>@<alias>``, ``models:/<name>/<version>``, ``runs:/<id>/model``,
    a bare 32-hex run id, a bundle folder or a training manifest json."""
    import re  # noqa: PLC0415

    uri = str(uri)
    if re.fullmatch(r"[0-9a-f]{32}", uri):
        uri = f"runs:/{uri}/model"
    if "://" not in uri and not uri.startswith(("models:", "runs:")):
        return load_bundle(uri, device)
    from unipan_pipeline.tracking.models import load_logged_model  # noqa: PLC0415 - imports MLflow

    predictor = load_logged_model(uri)
    dev = resolve_device(device)
    predictor.device = dev
    predictor.model.to(dev)
    transform = predictor.transform
    params = None
    if transform is not None:
        cfg = transform.config
        params = {k: getattr(cfg, k) for k in ("base_scale", "eval_min_size", "eval_max_size", "mean", "std")}
    return LoadedModel(predictor, params, uri)
