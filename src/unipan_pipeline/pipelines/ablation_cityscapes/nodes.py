"""Nodes of the ablation pipelines (Table 1 of the paper): train a model, evaluate a row, build the report.

They reuse the experiment glue (:func:`~unipan_pipeline.experiment.train_experiment`,
:func:`~unipan_pipeline.experiment.evaluate_experiment`) and add the study's MLflow layout::

    ablation_<dataset>            the parent run (kedro-mlflow's run of `kedro run`; tag ablation_role=study):
    |                             parameters, the result table, the paper's Table 1, the claims as observed
    |-- train A, train B, ...     one child run per trained model (ablation_role=model): curves, model
    |-- A, B, C1, C2, D1, D2      one child run per row (ablation_role=row): tags row/msk/aff/e2e/heu/amx,
                                  the evaluation's metrics (pq, pq_th, pq_st, sq, rq, miou, ap_mask, ap_box,
                                  ...), resolved model.* params, reports

In ``mlflow ui``: filter ``tags.ablation_role = "row"`` (and ``tags.ablation_study = "cityscapes"``), select
the six runs, *Compare*. Without an open run (kedro-mlflow disabled, a node called from Python) the first
node opens the parent run itself in the experiment ``unipan`` of the current tracking URI; it is ended when
the process exits.

Rows sharing a trained model (C1/C2, D1/D2) are evaluated from the same weights: the heuristic rows get a
*variant bundle* (``<models_dir>/<row>/``: the model's ``model.pt`` hard-linked (copied where linking is not
possible) and its ``model_config.json`` with the row's ``inference: heuristic`` and ``heuristic_*`` values),
so the glue's evaluation loads the network in the row's inference mode.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from unipan_pipeline import ablation
from unipan_pipeline.experiment import evaluate_experiment, train_experiment
from unipan_pipeline.experiment.common import DEFAULT_EXPERIMENT, atomic_write_json, plain
from unipan_pipeline.fileio.atomic import link_or_copy
from unipan_pipeline.model import ModelConfig

log = logging.getLogger(__name__)

ROLE_TAG = "ablation_role"
STUDY_TAG = "ablation_study"
# ModelConfig fields that only act at inference: rows of one model may differ in these
_INFERENCE_FIELDS = ablation.ROW_KEYS | ablation.ROW_INFERENCE_KEYS


# ------------------------------------------------------------------------------------------------ MLflow
def _parent_run(dataset: str) -> Any:
    """The study's parent run: the active run (kedro-mlflow's), or a new one when none is open."""
    import mlflow  # noqa: PLC0415 - heavy import

    from unipan_pipeline.training.tracking import get_or_create_experiment  # noqa: PLC0415

    run = mlflow.active_run()
    if run is None:
        exp_id = get_or_create_experiment(
            DEFAULT_EXPERIMENT, Path.cwd(), tracking_uri=mlflow.get_tracking_uri()
        )
        run = mlflow.start_run(experiment_id=exp_id, run_name=f"ablation_{dataset}")
        log.warning(
            "no MLflow run is open (kedro-mlflow tracking disabled?): started the study's parent run %s",
            run.info.run_id,
        )
    mlflow.set_tags({ROLE_TAG: "study", STUDY_TAG: dataset})
    return run


@contextlib.contextmanager
def _child_run(dataset: str, run_name: str, tags: Mapping[str, str]) -> Iterator[Any]:
    """A run nested under the study's parent run, active inside the block (so the glue logs into it)."""
    import mlflow  # noqa: PLC0415

    parent = _parent_run(dataset)
    with mlflow.start_run(
        run_name=run_name,
        experiment_id=parent.info.experiment_id,
        nested=True,
        tags={STUDY_TAG: dataset, **tags},
    ) as run:
        yield run


def _bool_tags(flags: Mapping[str, bool]) -> dict[str, str]:
    return {k: "true" if v else "false" for k, v in flags.items()}


# ------------------------------------------------------------------------------------------------ bundles


def row_bundle(
    manifest: Mapping[str, Any], overrides: Mapping[str, Any], folder: str | os.PathLike
) -> dict[str, str]:
    """The model bundle to evaluate a row with: the trained bundle itself when its configuration already has
    the row's inference settings ``overrides`` (``inference``, ``heuristic_*``), else a variant bundle in
    ``folder`` (same weights, ``model_config.json`` with ``overrides``)."""
    bundle = {k: str(v) for k, v in manifest["bundle"].items()}
    config_path = Path(bundle["model_config"])
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{config_path}: cannot read the trained model's configuration ({err})") from err
    if all(config.get(k) == v for k, v in overrides.items()):
        return bundle
    out = Path(folder)
    variant = {}
    for key, src in bundle.items():
        dst = out / Path(src).name
        if key == "model_config":
            atomic_write_json(dst, {**config, **overrides})
        else:
            link_or_copy(Path(src), dst)
        variant[key] = dst.as_posix()
    return variant


def _check_manifest(manifest: Mapping[str, Any], expected: ModelConfig, row: str, dataset: str) -> None:
    """The trained model on disk must be the one the study's parameters describe (a row evaluated alone,
    e.g. ``--namespaces=C1``, reads the model an earlier run trained)."""
    trained = dict(manifest.get("model_config") or {})
    wanted = plain(expected.to_dict())
    diff = sorted(
        k
        for k in set(trained) | set(wanted)
        if k not in _INFERENCE_FIELDS and trained.get(k) != wanted.get(k)
    )
    if diff:
        model = ablation.ROW_MODEL[row]
        raise ValueError(
            f"ablation_{dataset} row {row}: the trained model {model} at {manifest.get('output_dir')} was "
            f"trained with other settings (differs in {diff[:8]}); retrain it with "
            f"`kedro run --pipelines=ablation_{dataset} --namespaces={ablation.training_row(model)}`"
        )


# ------------------------------------------------------------------------------------------------ nodes
def train_model(ingest_summary: Any, study: dict[str, Any], *, dataset: str, model: str) -> dict[str, Any]:
    """Train model ``model`` (A, B, C or D) of the study in its own child run.

    Args:
        ingest_summary: output of the ingestion pipeline (ordering only).
        study: ``params:ablation_<dataset>`` (schema in :mod:`unipan_pipeline.ablation`).
        dataset: ``cityscapes`` / ``coco`` (bound by the pipeline).
        model: the model to train (bound by the pipeline).

    Returns:
        The glue's training manifest, with ``ablation`` = {study, model, rows, flags}.
    """
    where = f"ablation_{dataset}"
    ablation.validate_study(study, where)
    params = ablation.training_params(study, model, where)
    flags = ablation.row_flags(ModelConfig.from_dict(params["model"]))
    tags = {
        ROLE_TAG: "model",
        "ablation_model": model,
        "ablation_rows": ",".join(ablation.rows_of_model(model)),
        **_bool_tags({k: flags[k] for k in ("msk", "aff", "e2e")}),
    }
    with _child_run(dataset, f"train {model}", tags):
        manifest, _train_curve, _val_curve = train_experiment(params, name=f"{where}.models.{model}")
    manifest["ablation"] = {
        "study": dataset,
        "model": model,
        "rows": ablation.rows_of_model(model),
        "flags": {k: flags[k] for k in ("msk", "aff", "e2e")},
    }
    return manifest


def evaluate_row(
    model_manifest: dict[str, Any], study: dict[str, Any], *, dataset: str, row: str
) -> dict[str, Any]:
    """Evaluate row ``row`` (its model, its inference) in its own child run, tagged with Table 1's settings.

    Returns:
        ``{row, model, inference, flags, metrics (fractions), n_images, mlflow: {run_id, parent_run_id,
        train_run_id}, ...}`` (one row of the result table).
    """
    import mlflow  # noqa: PLC0415

    where = f"ablation_{dataset}"
    ablation.validate_study(study, where)
    cfg = ablation.row_model_config(study, row, where)
    _check_manifest(model_manifest, cfg, row, dataset)
    flags = ablation.row_flags(cfg)
    model = ablation.ROW_MODEL[row]
    overrides = {k: v for k, v in cfg.to_dict().items() if k in _INFERENCE_FIELDS}
    bundle = row_bundle(model_manifest, overrides, ablation.model_dir(study, row))
    eval_params = ablation.evaluation_params(study, row, where)
    train_run = (model_manifest.get("mlflow") or {}).get("run_id")
    tags = {
        ROLE_TAG: "row",
        "row": row,
        "ablation_model": model,
        "inference": cfg.inference,
        **_bool_tags(flags),
        **({"ablation_train_run_id": train_run} if train_run else {}),
    }
    with _child_run(dataset, row, tags) as run:
        from unipan_pipeline.training.tracking import MlflowLogger  # noqa: PLC0415

        MlflowLogger(run.info.run_id).log_params(
            {"model": cfg.to_dict(), "train": {"iterations": model_manifest.get("iterations")}}
        )
        manifest = {
            **model_manifest,
            "bundle": bundle,
            "mlflow": {"run_id": run.info.run_id, "experiment_id": run.info.experiment_id},
        }
        summary = evaluate_experiment(manifest, eval_params, name=f"{where}.rows.{row}")
    parent_id = mlflow.get_run(run.info.run_id).data.tags.get("mlflow.parentRunId")
    return plain(
        {
            "row": row,
            "model": model,
            "inference": cfg.inference,
            "flags": flags,
            "metrics": summary["metrics"],
            "n_images": summary["n_images"],
            "split": summary["split"],
            "dataset": dataset,
            "data_source": model_manifest.get("data_source"),
            "train_iterations": model_manifest.get("iterations"),
            "train_wall_time_s": model_manifest.get("wall_time_s"),
            "eval_wall_time_s": summary["wall_time_s"],
            "bundle": bundle,
            "metrics_path": summary["metrics_path"],
            "predictions_dir": summary["predictions_dir"],
            "mlflow": {"run_id": run.info.run_id, "parent_run_id": parent_id, "train_run_id": train_run},
        }
    )


def build_report(
    study: dict[str, Any], *row_results: dict[str, Any], dataset: str
) -> tuple[pd.DataFrame, pd.DataFrame, str, dict[str, Any], list[dict[str, Any]]]:
    """The study's Table 1, the paper's, the claims as observed; logged on the study's parent run.

    Returns:
        ``(table, paper_table, markdown, metrics, claims)``: the measured table (percent), the paper's
        Table 1, both as Markdown with the claims, ``{row: {pq, ...}}`` for ``dvc metrics`` and the claims.
    """
    import mlflow  # noqa: PLC0415

    table = ablation.result_table(row_results)
    paper = ablation.paper_table()
    claims = ablation.claims_status(table)
    first = row_results[0] if row_results else {}
    base = study.get("base") or {}
    trainer = base.get("trainer") or {}
    model_base = base.get("model") or {}
    notes = [
        f"Data: {dataset} ({first.get('data_source', 'unknown')} source), split `{first.get('split')}`, "
        f"{first.get('n_images')} images; `{base.get('ingested_root')}`.",
        f"Training: {trainer.get('iterations')} iterations, batch {trainer.get('images_per_batch')}, "
        f"{trainer.get('optimizer')} lr {trainer.get('lr')}, ResNet-{model_base.get('backbone_depth')} "
        f"(pretrained: {model_base.get('pretrained')}); one seed per model.",
        "Small differences between rows are within the noise of one short training run: the observations "
        "describe this run, they do not test the paper's claims statistically.",
        "Claims: observed 'holds' when the first row's PQ (all) is higher than the second's.",
    ]
    markdown = ablation.report_markdown(
        table, claims, title=f"Ablation study (Table 1) on {dataset}", notes=notes
    )
    metrics = ablation.metrics_by_row(table)
    parent = _parent_run(dataset)
    run_id = parent.info.run_id
    mlflow.log_text(table.to_csv(index=False), "ablation/table.csv", run_id=run_id)
    mlflow.log_text(markdown, "ablation/table.md", run_id=run_id)
    mlflow.log_text(paper.to_csv(index=False), "ablation/paper_table1.csv", run_id=run_id)
    mlflow.log_dict(metrics, "ablation/metrics.json", run_id=run_id)
    mlflow.log_dict({"claims": claims}, "ablation/claims.json", run_id=run_id)
    client = mlflow.tracking.MlflowClient()
    for c in claims:
        client.set_tag(run_id, f"claim.{c['key']}", c["observed"])
        if c["delta"] is not None:
            client.log_metric(run_id, f"delta_pq/{c['key']}", float(c["delta"]))
    for row, values in metrics.items():
        for key, value in values.items():
            if value is not None:
                client.log_metric(run_id, f"{row}/{key}", float(value))
    log.info("ablation_%s:\n%s", dataset, markdown)
    return table, paper, markdown, metrics, claims
