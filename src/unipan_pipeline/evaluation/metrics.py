"""The run's headline numbers as ``metrics.json`` (for DVC / MLflow): fractions in [0, 1] or ``null``."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from unipan_pipeline.fileio.atomic import write_json_atomic

__all__ = ["METRIC_KEYS", "collect_metrics", "write_metrics_json"]

METRIC_KEYS = (
    "pq",
    "sq",
    "rq",
    "pq_th",
    "pq_st",
    "sq_th",
    "sq_st",
    "rq_th",
    "rq_st",
    "miou",
    "ap_box",
    "ap_mask",
)


def _frac(value: Any) -> float | None:
    if value is None:
        return None
    v = float(value)
    if not math.isfinite(v) or v < 0:  # nan: empty group; COCOeval's -1: no ground truth
        return None
    if v > 1.0 + 1e-9:
        raise ValueError(f"metric value {v} is not a fraction in [0, 1] (percentages are not accepted)")
    return v


def collect_metrics(
    pq: Mapping[str, Any] | None = None,
    semantic: Mapping[str, Any] | float | None = None,
    detection: Mapping[str, Any] | None = None,
) -> dict[str, float | None]:
    """Flatten results: ``pq`` = :func:`pq_compute_files` / ``PQAccumulator.compute()`` output, ``semantic`` =
    ``SemanticConfusion.compute()`` (or an mIoU value), ``detection`` =
    ``COCODetectionEvaluator.compute()``."""
    out: dict[str, float | None] = dict.fromkeys(METRIC_KEYS)
    if pq is not None:
        for suffix, group in (("", "All"), ("_th", "Things"), ("_st", "Stuff")):
            for key in ("pq", "sq", "rq"):
                out[key + suffix] = _frac(pq[group][key]) if pq[group].get("n", 1) else None
    if semantic is not None:
        out["miou"] = _frac(semantic["miou"] if isinstance(semantic, Mapping) else semantic)
    if detection is not None:
        out["ap_box"] = _frac(detection.get("ap_box"))
        out["ap_mask"] = _frac(detection.get("ap_mask"))
    return out


def write_metrics_json(
    path: str | os.PathLike,
    pq: Mapping[str, Any] | None = None,
    semantic: Mapping[str, Any] | float | None = None,
    detection: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``metrics.json`` atomically (temp file + rename) and return its path.

    Keys: :data:`METRIC_KEYS` (fractions or ``null`` where not applicable) plus ``extra`` (e.g. ``n_images``).
    """
    metrics: dict[str, Any] = collect_metrics(pq, semantic, detection)
    for k, v in (extra or {}).items():
        metrics[k] = None if isinstance(v, float) and not math.isfinite(v) else v
    path = Path(path)
    write_json_atomic(path, metrics, indent=2, allow_nan=False)
    return path
