"""Evaluation: panoptic quality (file and in-memory), semantic mIoU, COCO AP, reports and metrics files.

* :mod:`.panoptic_quality` - :func:`pq_compute_files` (drop-in for ``panopticapi``'s ``pq_compute``) and
  :class:`PQAccumulator` (in memory).
* :mod:`.semantic` - :class:`SemanticConfusion` (mIoU over train ids).
* :mod:`.detection_ap` - :class:`COCODetectionEvaluator` (AP box / AP mask through pycocotools).
* :mod:`.reports` - per-class tables and pictures; :mod:`.metrics` - ``metrics.json``.
* ``python -m unipan_pipeline.evaluation pq ...`` - command line.

The names below are imported on first use (PEP 562), so that the PQ command line and its worker processes
do not pay for pycocotools & co. at start-up.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from unipan_pipeline.evaluation.detection_ap import COCODetectionEvaluator
    from unipan_pipeline.evaluation.errors import (
        CorruptPNGError,
        EvaluationError,
        ImageMismatchError,
        MissingFileError,
        SegmentMismatchError,
        ShapeMismatchError,
        UnknownCategoryError,
    )
    from unipan_pipeline.evaluation.metrics import METRIC_KEYS, collect_metrics, write_metrics_json
    from unipan_pipeline.evaluation.panoptic_quality import (
        PQAccumulator,
        PQCategories,
        evaluate_image,
        format_pq_table,
        pq_compute_files,
        read_id_png,
        results_to_jsonable,
        target_to_panoptic,
        update_from_model,
        write_id_png,
    )
    from unipan_pipeline.evaluation.semantic import SemanticConfusion, semantic_miou

_MODULE_OF = {
    "COCODetectionEvaluator": "detection_ap",
    "CorruptPNGError": "errors",
    "EvaluationError": "errors",
    "ImageMismatchError": "errors",
    "MissingFileError": "errors",
    "SegmentMismatchError": "errors",
    "ShapeMismatchError": "errors",
    "UnknownCategoryError": "errors",
    "METRIC_KEYS": "metrics",
    "collect_metrics": "metrics",
    "write_metrics_json": "metrics",
    "PQAccumulator": "panoptic_quality",
    "PQCategories": "panoptic_quality",
    "evaluate_image": "panoptic_quality",
    "format_pq_table": "panoptic_quality",
    "pq_compute_files": "panoptic_quality",
    "read_id_png": "panoptic_quality",
    "results_to_jsonable": "panoptic_quality",
    "target_to_panoptic": "panoptic_quality",
    "update_from_model": "panoptic_quality",
    "write_id_png": "panoptic_quality",
    "SemanticConfusion": "semantic",
    "semantic_miou": "semantic",
}

__all__ = [
    "METRIC_KEYS",
    "COCODetectionEvaluator",
    "CorruptPNGError",
    "EvaluationError",
    "ImageMismatchError",
    "MissingFileError",
    "PQAccumulator",
    "PQCategories",
    "SegmentMismatchError",
    "SemanticConfusion",
    "ShapeMismatchError",
    "UnknownCategoryError",
    "collect_metrics",
    "evaluate_image",
    "format_pq_table",
    "pq_compute_files",
    "read_id_png",
    "results_to_jsonable",
    "semantic_miou",
    "target_to_panoptic",
    "update_from_model",
    "write_id_png",
    "write_metrics_json",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
