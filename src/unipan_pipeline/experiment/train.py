"""Training glue: parameters -> data sets, model, trainer, validation PQ, MLflow, model bundle.

Parameter schema of a training namespace (``train_cityscapes``, ``train_coco``, ``demo``)::

    dataset: cityscapes               # registered model name unipan-<dataset>
    ingested_root: data/03_primary/cityscapes
    train_split: train
    val_split: val
    augment: {...}                    # TransformConfig keys (training)
    augment_eval: {...}               # TransformConfig keys (validation / evaluation / serving)
    model: {...}                      # ModelConfig keys
    trainer: {...}                    # TrainerConfig keys (checkpoint_dir: data/06_models/<name>/checkpoints)
    validation: {max_images: 20}      # in-training PQ on the first N val images (0 = off)
    output_dir: data/06_models/<name> # model bundle (model.pt, model_config.json, categories.json, ...)
    evaluation: {...}                 # optional: read by the evaluation pipeline only (the demo's)

The network is trained by :func:`unipan_pipeline.training.train` (checkpoints + automatic resume in
``trainer.checkpoint_dir``, ``trainer.num_processes`` DDP workers through torch's elastic launcher). The
validation callback computes PQ (the paper's metric, Kirillov et al.) at the ORIGINAL ground-truth resolution:
predicted id maps are resized (nearest) from the evaluation-transform size to the PNG size.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from unipan_pipeline.categories import CategoryMap
from unipan_pipeline.data import (
    PanopticDataset,
    PanopticTransform,
    TransformConfig,
    collate_panoptic,
    load_ingested,
    read_panoptic_png,
)
from unipan_pipeline.evaluation import PQAccumulator
from unipan_pipeline.experiment.common import (
    atomic_write_json,
    data_source,
    plain,
    provenance,
    run_name,
    save_bundle,
)
from unipan_pipeline.model import ModelConfig, build_model
from unipan_pipeline.params import from_params
from unipan_pipeline.tracking.tracker import current_tracker
from unipan_pipeline.training import TrainerConfig, seed_everything, train
from unipan_pipeline.training.distributed import result_of_main
from unipan_pipeline.training.process import joined_process_group

log = logging.getLogger(__name__)


@dataclass
class ValidationParams:
    """``validation`` of a training namespace."""

    max_images: int = 0
    """In-training PQ on the first ``max_images`` val images (0 = off)."""


@dataclass
class TrainParams:
    """A training namespace (``params:train_cityscapes``, ``params:train_coco``, ``params:demo``), typed by
    :func:`unipan_pipeline.params.from_params`; schema in the module docstring."""

    dataset: str
    ingested_root: str
    train_split: str
    val_split: str
    augment: dict[str, Any]
    augment_eval: dict[str, Any] | None
    model: ModelConfig
    trainer: TrainerConfig
    validation: ValidationParams | None
    output_dir: str
    evaluation: dict[str, Any] | None = None


PQ_KEYS = ("pq", "sq", "rq", "pq_th", "sq_th", "rq_th", "pq_st", "sq_st", "rq_st")


# ------------------------------------------------------------------------------------------------ helpers
def eval_transform(params: Mapping[str, Any] | None) -> PanopticTransform:
    """The deterministic evaluation transform of ``augment_eval``."""
    return PanopticTransform(TransformConfig.from_params(dict(params or {}), train=False))


def prediction_at_size(output: Mapping[str, Any], size: tuple[int, int]) -> tuple[np.ndarray, list[dict]]:
    """A model output's (``panoptic``, ``segments_info``) as plain numpy / python, resized (nearest) to
    ``size`` when the evaluation transform rescaled the image; segment areas are recounted."""
    from unipan_pipeline.tracking.pyfunc import resize_panoptic  # noqa: PLC0415 - imports MLflow

    panoptic = output["panoptic"].detach().cpu().to(torch.int32)
    segments = []
    for s in output["segments_info"]:
        seg = {k: plain(v) for k, v in s.items()}
        seg["id"], seg["category_id"] = int(seg["id"]), int(seg["category_id"])
        segments.append(seg)
    if tuple(panoptic.shape) != tuple(size):
        panoptic, segments = resize_panoptic(panoptic, segments, tuple(size))
    return panoptic.numpy().astype(np.int32), segments


def pq_summary(results: Mapping[str, Any]) -> dict[str, float]:
    """``PQAccumulator.compute()`` -> flat ``{pq, sq, rq, pq_th, ...}`` (empty groups left out)."""
    out: dict[str, float] = {}
    for suffix, group in (("", "All"), ("_th", "Things"), ("_st", "Stuff")):
        g = results[group]
        for key in ("pq", "sq", "rq"):
            v = float(g[key])
            if g.get("n", 1) and math.isfinite(v):
                out[key + suffix] = v
    return out


class PQValidator:
    """``validate_fn(model, iteration) -> {pq, sq, rq, pq_th, ...}`` on the first ``max_images`` images of a
    split, at ground-truth resolution (picklable: the data are loaded lazily in the process that calls it).
    """

    def __init__(
        self,
        ingested_root: str,
        split: str,
        transform_params: Mapping[str, Any] | None,
        max_images: int,
        categories: CategoryMap | None = None,
    ) -> None:
        self.ingested_root = str(ingested_root)
        self.split = split
        self.transform_params = dict(transform_params or {})
        self.max_images = int(max_images)
        self.categories = categories
        self._cache: dict[str, Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_cache"] = None
        return state

    def _data(self) -> dict[str, Any]:
        if self._cache is None:
            ds = PanopticDataset(
                self.ingested_root, self.split, self.categories, eval_transform(self.transform_params)
            )
            split = load_ingested(self.ingested_root, self.split)
            n = min(self.max_images, len(ds))
            gt = [(read_panoptic_png(split.png_path(i)), split.segments(i)) for i in range(n)]
            self._cache = {"dataset": ds, "gt": gt, "ids": ds.image_ids[:n]}
        return self._cache

    def __call__(self, model: torch.nn.Module, iteration: int) -> dict[str, float]:
        data = self._data()
        ds: PanopticDataset = data["dataset"]
        device = next(model.parameters()).device
        acc = PQAccumulator(ds.categories)
        t0 = time.perf_counter()
        with torch.no_grad():
            for i, (gt_ids, gt_segments) in enumerate(data["gt"]):
                image, _ = ds[i]
                out = model([image.to(device)])[0]
                pred, segments = prediction_at_size(out, gt_ids.shape)
                acc.update(gt_ids, gt_segments, pred, segments, image_id=data["ids"][i])
        metrics = pq_summary(acc.compute())
        log.info(
            "validation PQ at iteration %d on %d images: %.4f (%.1f s)",
            iteration,
            len(data["gt"]),
            metrics.get("pq", float("nan")),
            time.perf_counter() - t0,
        )
        return metrics


def _check_resume_compatible(checkpoint_dir: Path, fingerprint: dict[str, Any]) -> None:
    """Refuse to resume from checkpoints of another model / data set / seed (clear error, nothing deleted).

    A run with another seed would otherwise resume the old run's checkpoints and end with its weights. The
    seed is compared only where the folder recorded one (folders written before it was recorded resume)."""
    path = checkpoint_dir / "run_config.json"
    fingerprint = json.loads(json.dumps(plain(fingerprint)))  # tuples -> lists, as read back
    if path.is_file() and any(checkpoint_dir.glob("*.pt")):
        old = json.loads(path.read_text())
        diff = sorted(
            f"{section}.{k}"
            for section in ("model", "categories", "dataset", "trainer")
            if section != "trainer" or section in old
            for k in set(old.get(section) or {}) | set(fingerprint.get(section) or {})
            if (old.get(section) or {}).get(k) != (fingerprint.get(section) or {}).get(k)
        )
        if diff:
            raise ValueError(
                f"{checkpoint_dir} holds checkpoints of a different configuration (differs in: {diff[:8]}); "
                f"delete that folder or point trainer.checkpoint_dir elsewhere to start afresh"
            )
    atomic_write_json(path, fingerprint)


def _curves(result: Any, checkpoint_dir: Path | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Loss / lr and validation curves of the whole training, also across resumes: the rows of earlier
    invocations up to the resumed iteration are kept in ``<checkpoint_dir>/curves.json``."""
    train_rows = [{**h, "iteration": int(h["iteration"])} for h in result.history]
    val_rows = [{"iteration": int(it), **m} for it, m in sorted(result.validation.items())]
    if checkpoint_dir is not None:
        store = checkpoint_dir / "curves.json"
        if store.is_file() and result.start_iteration > 0:
            old = json.loads(store.read_text())
            keep = result.start_iteration if result.history or result.validation else result.iteration
            train_rows = [r for r in old.get("train", []) if r["iteration"] <= keep] + train_rows
            val_rows = [r for r in old.get("val", []) if r["iteration"] <= keep] + val_rows
        atomic_write_json(store, {"train": train_rows, "val": val_rows})
    train_curve = (
        pd.DataFrame(train_rows) if train_rows else pd.DataFrame(columns=["iteration", "train/loss"])
    )
    val_curve = pd.DataFrame(val_rows) if val_rows else pd.DataFrame(columns=["iteration", "pq"])
    return train_curve, val_curve


# ------------------------------------------------------------------------------------------------ main entry
def train_experiment(
    params: TrainParams | Mapping[str, Any], *, name: str = "train"
) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """Train one configuration end to end and log it to MLflow.

    Args:
        params: a training namespace (schema in the module docstring).
        name: the namespace's name, used in error messages and as the MLflow run name.

    Returns:
        ``(manifest, train_curve, val_curve)``: the manifest (dataset, data source, MLflow run id, bundle
        paths, model config, eval transform, final validation PQ, ...) and the loss / lr and validation-PQ
        curves (one row per logged step / validation).
    """
    spec = (
        params
        if isinstance(params, TrainParams)
        else from_params(TrainParams, plain(params), f"params:{name}")
    )
    root, train_split, val_split = str(spec.ingested_root), str(spec.train_split), str(spec.val_split)
    source = data_source(root)
    log.info("%s: training on the %s %s data set at %s", name, source["source"], spec.dataset, root)

    categories = load_ingested(root, train_split).categories
    train_tf = PanopticTransform(
        TransformConfig.from_params(spec.augment, train=True, where=f"params:{name}.augment")
    )
    eval_params = dict(spec.augment_eval or {})
    eval_transform(eval_params)  # typos fail before training
    dataset = PanopticDataset(root, train_split, categories, train_tf)
    model_cfg, trainer_cfg = spec.model, spec.trainer
    max_images = int(spec.validation.max_images or 0) if spec.validation is not None else 0
    validator = PQValidator(root, val_split, eval_params, max_images, categories) if max_images > 0 else None

    seed_everything(trainer_cfg.seed)  # the initial weights come from the run's seed, like everything after
    model = build_model(model_cfg, categories)  # before touching any folder: fails fast without weights
    if trainer_cfg.checkpoint_path is not None:
        trainer_cfg.checkpoint_path.mkdir(parents=True, exist_ok=True)
        _check_resume_compatible(
            trainer_cfg.checkpoint_path,
            {
                "model": model_cfg.to_dict(),
                "categories": {"map": categories.to_dict()},
                "dataset": {"dataset": spec.dataset, "train_split": train_split},
                "trainer": {"seed": trainer_cfg.seed},
            },
        )

    n_params = sum(p.numel() for p in model.parameters())
    tags = {
        "dataset": spec.dataset,
        "pipeline.namespace": name,
        **provenance(root, [train_split, val_split]),
        "model.num_parameters": str(n_params),
        "trainer.num_processes": str(trainer_cfg.num_processes),
    }
    job = _Job(name, spec, source, categories, dataset, model, validator, tags)
    with joined_process_group(trainer_cfg):
        # Under an external `torchrun` every rank trains (DDP); rank 0 alone tracks, writes the bundle and
        # logs the model, and hands its manifest and curves to the other ranks through torch.distributed
        # (the catalog saves them on every rank).
        return result_of_main(lambda: _train_tracked(job), lambda: _train(job))


@dataclass
class _Job:
    """What :func:`train_experiment` assembles before training."""

    name: str
    spec: TrainParams
    source: dict[str, str]
    categories: CategoryMap
    dataset: PanopticDataset
    model: torch.nn.Module
    validator: PQValidator | None
    tags: dict[str, str]


def _train(job: _Job, logger: Any = None) -> Any:
    return train(
        job.model,
        job.dataset,
        job.spec.trainer,
        collate_fn=collate_panoptic,
        validate_fn=job.validator,
        logger=logger,
    )


def _train_tracked(job: _Job) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """Rank 0's part of :func:`train_experiment`: train in a tracked run, write the bundle, log the model."""
    spec, name, model = job.spec, job.name, job.model
    categories, tags, source = job.categories, job.tags, job.source
    model_cfg, trainer_cfg = spec.model, spec.trainer
    root, train_split, val_split = str(spec.ingested_root), str(spec.train_split), str(spec.val_split)
    eval_params = dict(spec.augment_eval or {})
    validation = dataclasses.asdict(spec.validation) if spec.validation is not None else {}
    n_params = int(tags["model.num_parameters"])
    prefix = name.replace(".models.", "-")  # ablation_cityscapes.models.A -> ablation_cityscapes-A
    title = run_name(prefix, str(spec.dataset), model_cfg.to_dict(), trainer_cfg.seed)
    with current_tracker().start_run(title) as run:
        run.set_tags(tags)
        run.log_params(
            {
                "model": model_cfg.to_dict(),
                "trainer": trainer_cfg.to_dict(),
                "augment": spec.augment,
                "augment_eval": eval_params,
                "validation": validation,
                "data": {"dataset": spec.dataset, "root": root, "train": train_split, "val": val_split},
            },
            prefix="resolved",
        )
        result = _train(job, run)
        bundle = save_bundle(
            spec.output_dir, model.state_dict(), model_cfg.to_dict(), categories, eval_params
        )
        train_curve, val_curve = _curves(result, trainer_cfg.checkpoint_path)
        last = val_curve.iloc[-1].items() if len(val_curve) else []
        final_val = {k: float(v) for k, v in last if k != "iteration" and pd.notna(v)}
        run.log_metrics({f"final_val/{k}": v for k, v in final_val.items()}, step=result.iteration)
        model_uri = run.log_model(
            bundle["checkpoint"], model_cfg.to_dict(), categories, eval_transform=eval_params, name="model"
        )
        for key in ("model_config", "categories", "inference"):
            run.log_artifact(bundle[key], "bundle")
        run_id, experiment_id = run.run_id, run.experiment_id
    manifest = {
        "name": name,
        "dataset": spec.dataset,
        "data_source": source["source"],
        "ingested_root": root,
        "train_split": train_split,
        "val_split": val_split,
        "mlflow": {
            "run_id": run_id,
            "run_name": title,
            "experiment_id": experiment_id,
            "artifact": "model",
            "model_uri": model_uri,  # models:/m-<id>, MLflow 3's logged model
        },
        "bundle": bundle,
        "output_dir": str(spec.output_dir),
        "model_config": model_cfg.to_dict(),
        "eval_transform": eval_params,
        "num_parameters": n_params,
        "iterations": result.iteration,
        "start_iteration": result.start_iteration,
        "resumed_from": result.resumed_from,
        "final_checkpoint": result.final_checkpoint,
        "world_size": result.world_size,
        "wall_time_s": round(result.wall_time_s, 2),
        "final_validation": final_val,
        "provenance": tags,
    }
    log.info(
        "%s: %d iterations in %.1f s (resumed from %s); final validation %s; MLflow run %s",
        name,
        result.iteration,
        result.wall_time_s,
        result.resumed_from,
        final_val,
        run_id,
    )
    atomic_write_json(Path(spec.output_dir) / "manifest.json", manifest)
    return plain(manifest), train_curve, val_curve
