"""Evaluation: panoptic quality (file and in-memory), semantic mIoU, COCO AP, reports and metrics files.

* :mod:`.panoptic_quality` - :func:`pq_compute_files` (drop-in for ``panopticapi``'s ``pq_compute``) and
  :class:`PQAccumulator` (in memory).
* :mod:`.semantic` - :class:`SemanticConfusion` (mIoU over train ids).
* :mod:`.detection_ap` - :class:`COCODetectionEvaluator` (AP box / AP mask through pycocotools).
* :mod:`.reports` - per-class tables and pictures; :mod:`.metrics` - ``metrics.json``.
* ``python -m unipan_pipeline.evaluation pq ...`` - command line.
"""

from __future__ import annotations

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
