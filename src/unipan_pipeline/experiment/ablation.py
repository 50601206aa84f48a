"""The ablation study (Table 1 of the paper) as plain functions: train a model per seed, evaluate a row per
seed, aggregate over the seeds, assemble the report; the Kedro nodes of ``pipelines/ablation`` call these.

They reuse the experiment glue (:func:`~unipan_pipeline.experiment.train_experiment`,
:func:`~unipan_pipeline.experiment.evaluate_experiment`) for each seed of ``params:ablation_<dataset>.seeds``
(the statistics are :mod:`unipan_pipeline.ablation`'s) and add the study's MLflow layout::

    ablation_<dataset>              the parent run (kedro-mlflow's run of `kedro run`; ablation_role=study):
    |                               parameters, the tables with intervals, the paper's Table 1, the claims
    |-- train A seed0, ...          one child per trained model and seed (ablation_role=model): curves, model
    |-- A seed0, A seed1, ...       one child per row and seed (ablation_role=row_seed): tags row/seed/msk/
    |                               aff/e2e/heu/amx, the evaluation's metrics, resolved model.* params
    |-- A, B, C1, C2, D1, D2        one aggregate child per row (ablation_role=row): the mean over the seeds
                                    of each metric (pq, pq_th, ...), its sd and interval (pq/sd, pq/ci_low,
                                    pq/ci_high), n_seeds; tags as above plus the per-seed run ids

In ``mlflow ui``: filter ``tags.ablation_role = "row"`` (and ``tags.ablation_study = "cityscapes"``), select
the six runs, *Compare* (``"row_seed"`` for the single evaluations). Without an open run (kedro-mlflow
disabled, a function called from Python) the first one opens the parent run itself in the experiment
``unipan`` of the current tracking URI; it is ended when the process exits.

Rows sharing a trained model (C1/C2, D1/D2) are evaluated from the same weights of each seed: a row whose
inference settings (``inference``, thresholds) differ from the trained configuration gets a *variant bundle*
(``<models_dir>/variants/<row>/seed<k>/``: the seed's ``model.pt`` hard-linked (copied where linking is not
possible) and its ``model_config.json`` with the row's settings), so the glue's evaluation loads the network
in the row's inference mode.

Runs go through :func:`~unipan_pipeline.tracking.current_tracker` (``study_run`` / ``child_run``), so a
:class:`~unipan_pipeline.tracking.fake.FakeTracker` replaces MLflow in tests; nothing here imports MLflow.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from unipan_pipeline import ablation
from unipan_pipeline.experiment.common import atomic_write_json, plain
from unipan_pipeline.experiment.evaluate import evaluate_experiment
from unipan_pipeline.experiment.train import train_experiment
from unipan_pipeline.fileio.atomic import link_or_copy
from unipan_pipeline.model import ModelConfig
from unipan_pipeline.tracking.tracker import RunLogger, current_tracker

log = logging.getLogger(__name__)

ROLE_TAG = "ablation_role"
STUDY_TAG = "ablation_study"
# ModelConfig fields that only act at inference: rows of one model may differ in these
_INFERENCE_FIELDS = ablation.ROW_KEYS | ablation.ROW_INFERENCE_KEYS


# ------------------------------------------------------------------------------------------------ runs
def _parent_run(dataset: str) -> RunLogger:
    """The study's parent run: the active run (kedro-mlflow's), or a new one when none is open."""
    return current_tracker().study_run(f"ablation_{dataset}", {ROLE_TAG: "study", STUDY_TAG: dataset})


@contextlib.contextmanager
def _child_run(dataset: str, run_name: str, tags: Mapping[str, str]) -> Iterator[RunLogger]:
    """A run nested under the study's parent run, active inside the block (so the glue logs into it)."""
    parent = _parent_run(dataset)
    with current_tracker().child_run(parent, run_name, {STUDY_TAG: dataset, **tags}) as run:
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


# ------------------------------------------------------------------------------------------------ study
def seed_manifest(model_manifest: Mapping[str, Any], seed: int, where: str) -> dict[str, Any]:
    """The training manifest of one seed in a model's manifest (``seeds: {"<k>": manifest}``)."""
    seeds = model_manifest.get("seeds")
    if not isinstance(seeds, Mapping) or str(seed) not in seeds:
        have = sorted(seeds) if isinstance(seeds, Mapping) else "none (trained before seeds existed?)"
        model = (model_manifest.get("ablation") or {}).get("model", "?")
        raise ValueError(
            f"{where}: the trained model {model} has no seed {seed} (seeds: {have}); train it with the "
            f"study's seeds (`--namespaces={ablation.training_row(model) if model != '?' else '<row>'}`)"
        )
    return dict(seeds[str(seed)])


def train_study_model(study: dict[str, Any], *, dataset: str, model: str) -> dict[str, Any]:
    """Train model ``model`` (A, B, C, D, ...) of the study once per seed, each in its own child run.

    Args:
        study: ``params:ablation_<dataset>`` (schema in :mod:`unipan_pipeline.ablation`).
        dataset: ``cityscapes`` / ``coco`` (bound by the pipeline).
        model: the model to train (bound by the pipeline).

    Returns:
        ``{seeds: {"<k>": the glue's training manifest}, ablation: {study, model, rows, flags, seeds}}``.
    """
    where = f"ablation_{dataset}"
    ablation.validate_study(study, where)
    seeds = ablation.study_seeds(study, where)
    manifests: dict[str, Any] = {}
    flags: dict[str, bool] = {}
    for seed in seeds:
        params = ablation.training_params(study, model, where, seed=seed)
        flags = ablation.row_flags(ModelConfig.from_dict(params["model"]))
        tags = {
            ROLE_TAG: "model",
            "ablation_model": model,
            "ablation_rows": ",".join(ablation.rows_of_model(model)),
            "seed": str(seed),
            **_bool_tags({k: flags[k] for k in ("msk", "aff", "e2e")}),
        }
        with _child_run(dataset, f"train {model} {ablation.seed_name(seed)}", tags):
            manifest, _train_curve, _val_curve = train_experiment(params, name=f"{where}.models.{model}")
        manifests[str(seed)] = manifest
    return {
        "seeds": manifests,
        "ablation": {
            "study": dataset,
            "model": model,
            "rows": ablation.rows_of_model(model),
            "flags": {k: flags[k] for k in ("msk", "aff", "e2e")},
            "seeds": seeds,
        },
    }


def _evaluate_seed(
    manifest: dict[str, Any],
    study: dict[str, Any],
    cfg: ModelConfig,
    *,
    dataset: str,
    row: str,
    seed: int,
    tags: Mapping[str, str],
) -> dict[str, Any]:
    """Row ``row`` on the weights of one seed, in the child run ``<row> seed<k>``."""
    where = f"ablation_{dataset}"
    _check_manifest(manifest, cfg, row, dataset)
    overrides = {k: v for k, v in cfg.to_dict().items() if k in _INFERENCE_FIELDS}
    bundle = row_bundle(manifest, overrides, ablation.variant_dir(study, row, seed))
    eval_params = ablation.evaluation_params(study, row, where, seed=seed)
    train_run = (manifest.get("mlflow") or {}).get("run_id")
    seed_tags = {
        **tags,
        ROLE_TAG: "row_seed",
        "seed": str(seed),
        **({"ablation_train_run_id": train_run} if train_run else {}),
    }
    with _child_run(dataset, f"{row} {ablation.seed_name(seed)}", seed_tags) as run:
        run.log_params(
            {"model": cfg.to_dict(), "train": {"iterations": manifest.get("iterations"), "seed": seed}}
        )
        evaluated = {
            **manifest,
            "bundle": bundle,
            "mlflow": {"run_id": run.run_id, "experiment_id": run.experiment_id},
        }
        summary = evaluate_experiment(
            evaluated, eval_params, name=f"{where}.rows.{row}.{ablation.seed_name(seed)}"
        )
    return {
        "seed": seed,
        "metrics": summary["metrics"],
        "n_images": summary["n_images"],
        "split": summary["split"],
        "train_iterations": manifest.get("iterations"),
        "train_wall_time_s": manifest.get("wall_time_s"),
        "eval_wall_time_s": summary["wall_time_s"],
        "bundle": bundle,
        "metrics_path": summary["metrics_path"],
        "predictions_dir": summary["predictions_dir"],
        "data_source": manifest.get("data_source"),
        "mlflow": {"run_id": run.run_id, "train_run_id": train_run},
    }


def evaluate_study_row(
    model_manifest: dict[str, Any], study: dict[str, Any], *, dataset: str, row: str
) -> dict[str, Any]:
    """Evaluate row ``row`` (its model, its inference and thresholds) on every seed's weights, one child run
    per seed, then log the mean / sd / interval over the seeds in the row's aggregate child run.

    Returns:
        ``{row, model, inference, flags, thresholds, seeds: [{seed, metrics, mlflow, ...}], metrics (the
        means, fractions), intervals ({key: {n, mean, std, low, high, confidence}}), n_images, mlflow:
        {run_id (aggregate), parent_run_id, seed_run_ids, train_run_ids}, ...}``.
    """
    where = f"ablation_{dataset}"
    ablation.validate_study(study, where)
    cfg = ablation.row_model_config(study, row, where)
    flags = ablation.row_flags(cfg)
    model = ablation.ROW_MODEL[row]
    seeds = ablation.study_seeds(study, where)
    confidence = ablation.confidence_level(study, where)
    thresholds = ablation.row_thresholds(cfg)
    tags = {
        "row": row,
        "ablation_model": model,
        "inference": cfg.inference,
        **_bool_tags(flags),
    }
    results = [
        _evaluate_seed(
            seed_manifest(model_manifest, seed, f"{where} row {row}"),
            study,
            cfg,
            dataset=dataset,
            row=row,
            seed=seed,
            tags=tags,
        )
        for seed in seeds
    ]
    means, intervals = ablation.aggregate_seeds({r["seed"]: r["metrics"] for r in results}, confidence)
    aggregate_tags = {
        **tags,
        ROLE_TAG: "row",
        "seeds": ",".join(map(str, seeds)),
        "ablation_seed_run_ids": ",".join(r["mlflow"]["run_id"] for r in results),
        "ablation_train_run_ids": ",".join(str(r["mlflow"]["train_run_id"]) for r in results),
    }
    with _child_run(dataset, row, aggregate_tags) as run:
        run.log_params({"model": cfg.to_dict(), "seeds": seeds, "confidence": confidence})
        values: dict[str, float] = {"n_seeds": float(len(seeds))}
        for key, iv in intervals.items():
            for name, value in (
                ("", iv["mean"]),
                ("/sd", iv["std"]),
                ("/ci_low", iv["low"]),
                ("/ci_high", iv["high"]),
            ):
                if value is not None:
                    values[key + name] = float(value)
        run.log_metrics(values)
    parent_id = run.parent_run_id()
    first = results[0]
    return plain(
        {
            "row": row,
            "model": model,
            "inference": cfg.inference,
            "flags": flags,
            "thresholds": thresholds,
            "seeds": results,
            "metrics": means,
            "intervals": intervals,
            "confidence": confidence,
            "n_images": first["n_images"],
            "split": first["split"],
            "dataset": dataset,
            "data_source": first["data_source"],
            "train_iterations": first["train_iterations"],
            "mlflow": {
                "run_id": run.run_id,
                "parent_run_id": parent_id,
                "seed_run_ids": {str(r["seed"]): r["mlflow"]["run_id"] for r in results},
                "train_run_ids": {str(r["seed"]): r["mlflow"]["train_run_id"] for r in results},
            },
        }
    )


def study_report(
    study: dict[str, Any], row_results: Sequence[dict[str, Any]], *, dataset: str
) -> tuple[pd.DataFrame, pd.DataFrame, str, dict[str, Any], list[dict[str, Any]], pd.DataFrame, pd.DataFrame]:
    """The study's Table 1 over the seeds, the paper's, the claims as observed; logged on the parent run.

    Returns:
        ``(table, paper_table, markdown, metrics, claims, seed_table, interval_table)``: the means (percent,
        Table 1's columns), the paper's Table 1, the Markdown report (means ± interval, PQ per seed,
        thresholds, the claims), ``{row: {pq, ...}}`` (means, for ``dvc metrics``), the claims with the
        intervals of the paired differences, one line per row and seed, and mean / sd / interval per row.
    """
    where = f"ablation_{dataset}"
    confidence = ablation.confidence_level(study, where)
    table = ablation.result_table(row_results)
    paper = ablation.paper_table()
    claims = ablation.claims_observed(row_results, confidence)
    seeds = ablation.seed_table(row_results)
    intervals = ablation.interval_table(row_results, confidence)
    first = row_results[0] if row_results else {}
    base = study.get("base") or {}
    trainer = base.get("trainer") or {}
    model_base = base.get("model") or {}
    n_seeds = sorted({len(ablation.seed_metrics(r)) for r in row_results})
    notes = [
        f"Data: {dataset} ({first.get('data_source', 'unknown')} source), split `{first.get('split')}`, "
        f"{first.get('n_images')} images; `{base.get('ingested_root')}`.",
        f"Training: {trainer.get('iterations')} iterations, batch {trainer.get('images_per_batch')}, "
        f"{trainer.get('optimizer')} lr {trainer.get('lr')}, ResNet-{model_base.get('backbone_depth')} "
        f"(pretrained: {model_base.get('pretrained')}); seeds {ablation.study_seeds(study, where)} "
        f"(every model trained once per seed).",
        f"Intervals: Student t at {100 * confidence:g} % over {'/'.join(map(str, n_seeds))} seeds (the "
        "seed-to-seed spread of this training, not of the data set). A claim holds when the interval of the "
        "paired differences (same seed) is above 0, is reversed when it is below 0, and is within noise when "
        "it contains 0.",
    ]
    markdown = ablation.report_markdown(
        row_results,
        claims,
        title=f"Ablation study (Table 1) on {dataset}",
        confidence=confidence,
        notes=notes,
    )
    metrics = ablation.metrics_by_row(table)
    _log_report(
        _parent_run(dataset),
        table=table,
        paper=paper,
        markdown=markdown,
        metrics=metrics,
        claims=claims,
        seeds=seeds,
        intervals=intervals,
    )
    log.info("ablation_%s:\n%s", dataset, markdown)
    return table, paper, markdown, metrics, claims, seeds, intervals


def _log_report(
    parent: RunLogger,
    *,
    table: pd.DataFrame,
    paper: pd.DataFrame,
    markdown: str,
    metrics: dict[str, Any],
    claims: list[dict[str, Any]],
    seeds: pd.DataFrame,
    intervals: pd.DataFrame,
) -> None:
    """The report on the study's parent run: tables and claims as artifacts, a tag per claim, the paired
    differences and each row's means as metrics."""
    parent.log_text(table.to_csv(index=False), "ablation/table.csv")
    parent.log_text(markdown, "ablation/table.md")
    parent.log_text(paper.to_csv(index=False), "ablation/paper_table1.csv")
    parent.log_text(seeds.to_csv(index=False), "ablation/table_seeds.csv")
    parent.log_text(intervals.to_csv(index=False), "ablation/table_intervals.csv")
    parent.log_dict(metrics, "ablation/metrics.json")
    parent.log_dict({"claims": claims}, "ablation/claims.json")
    parent.set_tags({f"claim.{c['key']}": c["observed"] for c in claims})
    values: dict[str, float] = {}
    for c in claims:
        for name, key in (("", "delta"), ("/ci_low", "delta_low"), ("/ci_high", "delta_high")):
            if c[key] is not None:
                values[f"delta_pq/{c['key']}{name}"] = float(c[key])
    for row, row_values in metrics.items():
        for key, value in row_values.items():
            if value is not None:
                values[f"{row}/{key}"] = float(value)
    parent.log_metrics(values)
