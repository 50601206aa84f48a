"""Nodes of the ``evaluate`` stage (thin wrappers around :mod:`unipan_pipeline.experiment`)."""

from __future__ import annotations

from typing import Any

from unipan_pipeline.experiment import evaluate_experiment, register_experiment


def evaluate_model(model_manifest: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """Predict the evaluation split, compute PQ / SQ / RQ (all, things, stuff, per class), mIoU and AP,
    write predictions (COCO panoptic), reports and ``metrics.json``, and log them into the model's run.

    Args:
        model_manifest: output of a training node.
        params: an evaluation namespace; schema in :mod:`unipan_pipeline.experiment.evaluate`.
    """
    return evaluate_experiment(model_manifest, params, name="evaluation")


def register_model(
    model_manifest: dict[str, Any], evaluation: dict[str, Any], params: dict[str, Any]
) -> dict[str, Any]:
    """Register the model as ``unipan-<dataset>``; move the ``champion`` alias only if its PQ is better."""
    return register_experiment(model_manifest, evaluation, params)
