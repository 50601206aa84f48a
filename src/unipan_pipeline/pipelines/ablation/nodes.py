"""Nodes of the ``ablation`` stage (Table 1 of the paper): train a model, evaluate a row, build the report.

Each node is one call of :mod:`unipan_pipeline.experiment.ablation` (the study: per-seed training and
evaluation, variant bundles, aggregation, the report), which opens the study's parent / child runs through
:mod:`unipan_pipeline.tracking`.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from unipan_pipeline.experiment.ablation import evaluate_study_row, study_report, train_study_model


def train_model(ingest_summary: Any, study: dict[str, Any], *, dataset: str, model: str) -> dict[str, Any]:
    """Train model ``model`` (A, B, C, D, ...) of the study once per seed, each in its own child run.

    Args:
        ingest_summary: output of the ingestion pipeline (ordering only).
        study: ``params:ablation_<dataset>`` (schema in :mod:`unipan_pipeline.ablation`).
        dataset: ``cityscapes`` / ``coco`` (bound by the pipeline).
        model: the model to train (bound by the pipeline).

    Returns:
        ``{seeds: {"<k>": the glue's training manifest}, ablation: {study, model, rows, flags, seeds}}``.
    """
    del ingest_summary  # orders the node after the ingestion
    return train_study_model(study, dataset=dataset, model=model)


def evaluate_row(
    model_manifest: dict[str, Any], study: dict[str, Any], *, dataset: str, row: str
) -> dict[str, Any]:
    """Evaluate row ``row`` (its model, its inference and thresholds) on every seed's weights, one child run
    per seed, then log the mean / sd / interval over the seeds in the row's aggregate child run.

    Returns:
        See :func:`~unipan_pipeline.experiment.ablation.evaluate_study_row`.
    """
    return evaluate_study_row(model_manifest, study, dataset=dataset, row=row)


def build_report(
    study: dict[str, Any], *row_results: dict[str, Any], dataset: str
) -> tuple[pd.DataFrame, pd.DataFrame, str, dict[str, Any], list[dict[str, Any]], pd.DataFrame, pd.DataFrame]:
    """The study's Table 1 over the seeds, the paper's, the claims as observed; logged on the parent run.

    Returns:
        ``(table, paper_table, markdown, metrics, claims, seed_table, interval_table)``; see
        :func:`~unipan_pipeline.experiment.ablation.study_report`.
    """
    return study_report(study, row_results, dataset=dataset)
