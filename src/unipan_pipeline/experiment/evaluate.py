"""Evaluation glue: a trained model (training manifest) -> predictions, metrics, reports, MLflow, registry.

Parameter schema of an evaluation namespace (``evaluate_cityscapes``, ``evaluate_coco``,
``demo.evaluation``)::

    split: val                        # split of the model's ingested data set
    ingested_root: null               # null: the data set the model was trained on
    max_images: null                  # first N images (null = all)
    device: auto
    predictions_dir: data/07_model_output/<name>   # COCO panoptic json + PNGs (replaced atomically)
    report_dir: data/08_reporting/<name>/evaluation # tables, pictures
    metrics_path: data/08_reporting/<name>/metrics.json
    num_pictures: 3                   # prediction / ground-truth comparisons
    affinity_pictures: 1              # Fig. 6 heat maps (models with the affinity head)
    progress_bar: true
    register: {enabled: true, model_name: null, alias: champion}   # model_name null: unipan-<dataset>

Metrics (all fractions): PQ / SQ / RQ for all, things and stuff and per class (``PQAccumulator``, the
protocol of ``pq_compute``) at the original ground-truth resolution; mIoU of the semantic head's argmax
(``SemanticConfusion``, same resolution); AP box / mask of the detector (``COCODetectionEvaluator``, at the
evaluation input resolution). Models with the affinity head and argmax inference also get the affinity's
effect (:mod:`unipan_pipeline.evaluation.affinity_effect`): ``affinity/cells_changed``,
``affinity/thing_cells_changed``, ``affinity/relative_change`` and ``pq_without_affinity`` (+ ``_th`` /
``_st``), the PQ of argmax(Psi) on the same weights, and ``affinity/gain``, the gain on the propagated
term (``exp(log_gain)``, 1 unless set or learnt). Everything is logged into the training run of the
model (its manifest holds the run id), so one MLflow run shows parameters, curves, metrics, reports and the
model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from unipan_pipeline.categories import IGNORE_INDEX, CategoryMap
from unipan_pipeline.data import PanopticDataset, load_ingested, read_panoptic_png
from unipan_pipeline.data.dataset import ids_to_index
from unipan_pipeline.data.store import atomic_directory, read_rgb_image
from unipan_pipeline.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from unipan_pipeline.evaluation import (
    COCODetectionEvaluator,
    PQAccumulator,
    SemanticConfusion,
    target_to_panoptic,
    write_id_png,
    write_metrics_json,
)
from unipan_pipeline.evaluation.affinity_effect import AffinityEffect
from unipan_pipeline.evaluation.metrics import collect_metrics
from unipan_pipeline.evaluation.reports import (
    plot_affinity,
    plot_panoptic_comparison,
    plot_pq_bars,
    write_per_class_table,
)
from unipan_pipeline.experiment.common import (
    atomic_write_json,
    check_keys,
    load_bundle,
    plain,
)
from unipan_pipeline.experiment.train import eval_transform, pq_summary, prediction_at_size
from unipan_pipeline.tracking.tracker import RunLogger, current_tracker, registered_model_name

log = logging.getLogger(__name__)

EVAL_KEYS = {
    "split",
    "ingested_root",
    "max_images",
    "device",
    "predictions_dir",
    "report_dir",
    "metrics_path",
    "num_pictures",
    "affinity_pictures",
    "progress_bar",
    "register",
}
EVAL_REQUIRED = {"predictions_dir", "report_dir", "metrics_path"}


def gt_semantic(gt_ids: np.ndarray, segments: list[dict], categories: CategoryMap) -> np.ndarray:
    """Train-id map of a ground-truth id map (void -> 255; crowd regions keep their class)."""
    index = ids_to_index(gt_ids, [int(s["id"]) for s in segments])
    lut = categories.dataset_to_train_lut()
    classes = np.array([IGNORE_INDEX] + [int(lut[int(s["category_id"])]) for s in segments], dtype=np.int64)
    return classes[index]


def _resize_nearest(x: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    if tuple(x.shape[-2:]) == tuple(size):
        return x.detach().cpu().numpy()
    y = torch.nn.functional.interpolate(x[None, None].float(), size=size, mode="nearest")[0, 0]
    return y.to(x.dtype).cpu().numpy()


def _denormalise(image: torch.Tensor, transform_params: Mapping[str, Any] | None) -> np.ndarray:
    p = dict(transform_params or {})
    mean = torch.tensor(p.get("mean", IMAGENET_MEAN))[:, None, None]
    std = torch.tensor(p.get("std", IMAGENET_STD))[:, None, None]
    rgb = (image.cpu() * std + mean).clamp(0, 1) * 255
    return rgb.permute(1, 2, 0).to(torch.uint8).numpy()


def _affinity_picture(  # noqa: PLR0917 - one call site, all arguments required
    model: Any,
    image: torch.Tensor,
    target: Mapping[str, Any],
    out: Mapping[str, Any],
    categories: CategoryMap,
    transform_params: Mapping[str, Any] | None,
    out_dir: Path,
    name: str,
) -> list[Path]:
    """Fig. 6: affinity heat map of a pixel inside the largest predicted thing (image centre if none)."""
    from unipan_pipeline.model.instance_affinity import pixel_affinity  # noqa: PLC0415

    device = next(model.parameters()).device
    with torch.no_grad():
        image_list = model.batch_images([image.to(device)])
        q = model.affinity_extractor(model.backbone(image_list.tensors))[0]
    pan = out["panoptic"].cpu().numpy()
    things = [s for s in out["segments_info"] if s.get("isthing")]
    h, w = pan.shape
    y, x = h // 2, w // 2
    if things:
        seg = max(things, key=lambda s: int(s["area"]))
        ys, xs = np.nonzero(pan == int(seg["id"]))
        k = len(ys) // 2
        y, x = int(ys[k]), int(xs[k])
    stride = 4
    hq, wq = q.shape[-2:]
    heat = pixel_affinity(model.affinity, q, min(y // stride, hq - 1), min(x // stride, wq - 1))
    heat = heat[: (h + stride - 1) // stride, : (w + stride - 1) // stride].detach().cpu().numpy()
    gt_ids, gt_segments = target_to_panoptic(target, categories)
    return plot_affinity(
        _denormalise(image, transform_params),
        out["boxes"].detach().cpu().numpy(),
        gt_ids,
        gt_segments,
        heat,
        pred_ids=pan,
        pred_segments=[plain(dict(s)) for s in out["segments_info"]],
        pixel=(y, x),
        categories=categories,
        out_dir=out_dir,
        name=name,
    )


def evaluate_experiment(
    manifest: Mapping[str, Any], params: Mapping[str, Any], *, name: str = "evaluate"
) -> dict[str, Any]:
    """Evaluate the model of a training manifest on a split; write predictions, reports and metrics.json;
    log metrics and reports into the model's MLflow run.

    Returns:
        A summary: ``metrics`` (the ``metrics.json`` keys), ``per_class`` PQ, ``n_images``, paths, run id.
    """
    where = f"params:{name}"
    params = plain(params)
    check_keys(params, where, required=EVAL_REQUIRED, optional=EVAL_KEYS)
    t0 = time.perf_counter()
    loaded = load_bundle(manifest["bundle"]["checkpoint"], device=str(params.get("device", "auto")))
    model, categories = loaded.model, loaded.categories
    model.eval()
    model.return_masks = True  # full-resolution masks for AP mask
    device = next(model.parameters()).device
    root = str(params.get("ingested_root") or manifest["ingested_root"])
    split = str(params.get("split", manifest.get("val_split", "val")))
    tf_params = loaded.eval_transform
    dataset = PanopticDataset(root, split, categories, eval_transform(tf_params))
    data = load_ingested(root, split)
    n = len(dataset) if params.get("max_images") is None else min(int(params["max_images"]), len(dataset))
    if n == 0:
        raise ValueError(f"{where}: split {split!r} of {root} has no image to evaluate")
    report_dir = Path(params["report_dir"])
    report_dir.mkdir(parents=True, exist_ok=True)
    num_pictures = int(params.get("num_pictures", 3))
    affinity_pictures = int(params.get("affinity_pictures", 1)) if model.affinity is not None else 0

    pq_acc = PQAccumulator(categories)
    with_affinity = model.affinity is not None and model.cfg.inference == "argmax"
    model.return_potentials = with_affinity  # Psi and P, and the panoptic output of argmax(Psi)
    effect = AffinityEffect(categories.num_stuff) if with_affinity else None
    pq_psi = PQAccumulator(categories) if with_affinity else None
    semantic = SemanticConfusion(categories.num_classes, class_names=categories.names)
    detection = COCODetectionEvaluator.from_categories(categories)
    annotations: list[dict[str, Any]] = []
    pictures: list[Path] = []
    png_dir_name = f"panoptic_{split}"
    with atomic_directory(params["predictions_dir"]) as tmp:
        (tmp / png_dir_name).mkdir()
        bar = tqdm(range(n), desc=f"evaluate {split}", disable=not params.get("progress_bar", True))
        with torch.no_grad():
            for i in bar:
                image, target = dataset[i]
                out = model([image.to(device)])[0]
                image_id = str(data.images[i]["id"])
                gt_ids = read_panoptic_png(data.png_path(i))
                gt_segments = data.segments(i)
                pred_ids, pred_segments = prediction_at_size(out, gt_ids.shape)
                pq_acc.update(gt_ids, gt_segments, pred_ids, pred_segments, image_id=image_id)
                if effect is not None and pq_psi is not None:
                    effect.update(out["potential"], out["panoptic_logits"], tuple(image.shape[-2:]))
                    psi_ids, psi_segments = prediction_at_size(
                        {
                            "panoptic": out["potential_panoptic"],
                            "segments_info": out["potential_segments_info"],
                        },
                        gt_ids.shape,
                    )
                    pq_psi.update(gt_ids, gt_segments, psi_ids, psi_segments, image_id=image_id)
                semantic.update(
                    _resize_nearest(out["semantic"], gt_ids.shape),
                    gt_semantic(gt_ids, gt_segments, categories),
                    image_id=image_id,
                )
                detection.update([out], [target])
                file_name = data.annotations[image_id]["file_name"]
                write_id_png(tmp / png_dir_name / file_name, pred_ids)
                annotations.append(
                    {
                        "image_id": image_id,
                        "file_name": file_name,
                        "segments_info": [{**s, "iscrowd": 0} for s in pred_segments],
                    }
                )
                if i < num_pictures:
                    pictures += plot_panoptic_comparison(
                        read_rgb_image(data.image_path(i)),
                        pred_ids,
                        pred_segments,
                        gt_ids,
                        gt_segments,
                        categories=categories,
                        out_dir=report_dir,
                        name=f"comparison_{image_id}.png",
                    )
                if i < affinity_pictures:
                    pictures += _affinity_picture(
                        model,
                        image,
                        target,
                        out,
                        categories,
                        tf_params,
                        report_dir,
                        f"affinity_{image_id}.png",
                    )
        images = [
            {k: im[k] for k in ("id", "file_name", "height", "width") if k in im} for im in data.images[:n]
        ]
        atomic_write_json(
            tmp / f"{png_dir_name}.json",
            {"images": images, "annotations": annotations, "categories": categories.to_coco()},
        )
    pq_results = pq_acc.compute()
    sem_results = semantic.compute()
    det_results = detection.compute()
    metrics = collect_metrics(pq_results, sem_results, detection=det_results)
    if effect is not None and pq_psi is not None and model.affinity is not None:
        metrics.update(affinity_metrics(effect, pq_psi))
        metrics["affinity/gain"] = model.affinity.gain()  # exp(log_gain): 1 unless set or learnt
    metrics_path = write_metrics_json(
        params["metrics_path"],
        pq_results,
        sem_results,
        det_results,
        extra={"n_images": n, **{k: v for k, v in metrics.items() if k.startswith(AFFINITY_PREFIXES)}},
    )
    tables = write_per_class_table(pq_results, pq_acc.class_stats(), out_dir=report_dir)
    bars = plot_pq_bars(pq_results, categories, out_dir=report_dir)
    per_class = {
        s["name"]: {k: s[k] for k in ("pq", "sq", "rq", "tp", "fp", "fn")}
        for s in pq_acc.class_stats().values()
    }
    wall = time.perf_counter() - t0
    log.info(
        "%s: %d %s images in %.1f s: PQ %s (things %s, stuff %s), mIoU %s, AP box %s, AP mask %s",
        name,
        n,
        split,
        wall,
        *(_fmt(metrics[k]) for k in ("pq", "pq_th", "pq_st", "miou", "ap_box", "ap_mask")),
    )
    run = _existing_run((manifest.get("mlflow") or {}).get("run_id"))
    run_id = run.run_id if run is not None else None
    if run is not None:
        _log_evaluation(run, params, metrics, per_class, [metrics_path, *tables, *bars, *pictures])
    return plain(
        {
            "metrics": metrics,
            "pq_summary": pq_summary(pq_results),
            "per_class": per_class,
            "n_images": n,
            "split": split,
            "ingested_root": root,
            "dataset": manifest.get("dataset"),
            "predictions_dir": str(params["predictions_dir"]),
            "metrics_path": str(metrics_path),
            "report_files": [str(p) for p in [*tables, *bars, *pictures]],
            "mlflow_run_id": run_id,
            "wall_time_s": round(wall, 2),
        }
    )


AFFINITY_PREFIXES = ("affinity/", "pq_without_affinity", "pq_th_without_affinity", "pq_st_without_affinity")


def affinity_metrics(effect: AffinityEffect, pq_psi: PQAccumulator) -> dict[str, float | None]:
    """The affinity's effect (:mod:`unipan_pipeline.evaluation.affinity_effect`) and the PQ / PQ things /
    PQ stuff of argmax(Psi): ``pq_without_affinity``, ``pq_th_without_affinity``,
    ``pq_st_without_affinity``."""
    psi = collect_metrics(pq_psi.compute())
    out: dict[str, float | None] = dict(effect.compute())
    for key in ("pq", "pq_th", "pq_st"):
        out[f"{key}_without_affinity"] = psi[key]
    return out


def _existing_run(run_id: str | None) -> RunLogger | None:
    """The model's run in the current tracker, or None (no run id, or a store that never saw the run)."""
    return current_tracker().open_run(run_id) if run_id else None


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def _log_evaluation(
    run: RunLogger,
    params: Mapping[str, Any],
    metrics: Mapping[str, float | None],
    per_class: Mapping[str, Mapping[str, Any]],
    files: list[Path],
) -> None:
    run.log_params({k: v for k, v in params.items() if k != "register"}, prefix="evaluation")
    values = {k: v for k, v in metrics.items() if v is not None}
    values.update({f"pq_class/{_key(c)}": float(s["pq"]) for c, s in per_class.items()})
    run.log_metrics(values)
    for path in files:
        run.log_artifact(path, "evaluation")


def _key(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def version_description(manifest: Mapping[str, Any], evaluation: Mapping[str, Any]) -> str:
    """Markdown description of a registered model version: its metrics, the data it was trained and
    evaluated on, and the run that trained it."""
    m = evaluation.get("metrics") or {}

    def pct(key: str) -> str:
        v = m.get(key)
        return "n/a" if v is None else f"{100 * float(v):.1f}"

    mlflow_info = manifest.get("mlflow") or {}
    prov = manifest.get("provenance") or {}
    lines = [
        f"PQ {pct('pq')} (things {pct('pq_th')}, stuff {pct('pq_st')}), SQ {pct('sq')}, RQ {pct('rq')}, "
        f"mIoU {pct('miou')}, AP box {pct('ap_box')} / mask {pct('ap_mask')} (percent) on "
        f"{evaluation.get('n_images', '?')} images of the {evaluation.get('split', '?')} split.",
        "",
        f"Data: {manifest.get('dataset', '?')}, source {manifest.get('data_source', '?')}, ingested at "
        f"`{manifest.get('ingested_root', '?')}` (train split `{manifest.get('train_split', '?')}`, "
        f"data fingerprint {prov.get('data.fingerprint', '?')}).",
        "",
        f"Trained by run {mlflow_info.get('run_name', '?')} ({mlflow_info.get('run_id', '?')}), "
        f"{manifest.get('iterations', '?')} iterations, code {prov.get('code.git_commit', 'unknown')}.",
    ]
    return "\n".join(lines)


def register_experiment(
    manifest: Mapping[str, Any], evaluation: Mapping[str, Any], params: Mapping[str, Any]
) -> dict[str, Any]:
    """Register the run's MLflow model as ``unipan-<dataset>`` and move ``champion`` when its PQ is better.

    Skipped (with a reason in the returned dict) when registration is disabled, the manifest has no MLflow
    run, or PQ is undefined.
    """
    reg = dict((plain(params) or {}).get("register") or {})
    check_keys(reg, "register", required=set(), optional={"enabled", "model_name", "alias"})
    pq = (evaluation.get("metrics") or {}).get("pq")
    if not reg.get("enabled", True):
        return {"registered": False, "reason": "register.enabled is false"}
    run = _existing_run((manifest.get("mlflow") or {}).get("run_id"))
    if run is None:
        return {"registered": False, "reason": "the model's MLflow run is not in this tracking store"}
    run_id = run.run_id
    if pq is None:
        log.warning("PQ is undefined: model of run %s not registered", run_id)
        return {"registered": False, "reason": "PQ is undefined"}
    model_name = reg.get("model_name") or registered_model_name(str(manifest["dataset"]))
    alias = str(reg.get("alias", "champion"))
    version_tags = {
        k: str(v)
        for k, v in {
            "dataset": manifest.get("dataset"),
            "data_source": manifest.get("data_source"),
            "pq_th": (evaluation.get("metrics") or {}).get("pq_th"),
            "split": evaluation.get("split"),
        }.items()
        if v is not None
    }
    result = current_tracker().register(
        run_id,
        model_name,
        float(pq),
        alias=alias,
        model_uri=(manifest.get("mlflow") or {}).get("model_uri"),  # registering runs:/ makes MLflow warn
        version_tags=version_tags,
        description=version_description(manifest, evaluation),
    )
    if result is None:
        return {"registered": False, "reason": "not the main process"}
    log.info(
        "registered %s version %d (PQ %.4f); %s %s (previous: version %s, PQ %s)",
        model_name,
        result.version,
        result.metric_value,
        alias,
        "moved to it" if result.promoted else "kept",
        result.previous_champion,
        result.previous_value,
    )
    return {
        "registered": True,
        "model_name": model_name,
        "version": result.version,
        "pq": result.metric_value,
        "alias": alias,
        "promoted": result.promoted,
        "previous_champion": result.previous_champion,
        "previous_pq": result.previous_value,
        "model_uri": f"models:/{model_name}@{alias}"
        if result.promoted
        else f"models:/{model_name}/{result.version}",
    }
