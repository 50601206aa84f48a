"""PQ results as text and JSON: ``pq_compute``'s table and a plain-JSON copy of the result dict."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from unipan_pipeline.evaluation.pq_matching import PQCategories

__all__ = ["format_pq_table", "results_to_jsonable"]


def format_pq_table(results: Mapping[str, Any], categories: PQCategories | None = None) -> str:
    """``pq_compute``'s summary table (and, given categories, cityscapesscripts' per-class table above)."""
    lines: list[str] = []
    if categories is not None:
        lines.append("{:14s}| {:>5s}  {:>5s}  {:>5s}".format("Category", "PQ", "SQ", "RQ"))
        names = dict(zip(categories.ids, categories.names, strict=True))
        for cid in sorted(results["per_class"]):
            r = results["per_class"][cid]
            lines.append(
                f"{names.get(cid, str(cid))[:14]:14s}| {100 * r['pq']:5.1f}  {100 * r['sq']:5.1f}  "
                f"{100 * r['rq']:5.1f}"
            )
        lines.append("-" * 41)
    lines.append("{:10s}| {:>5s}  {:>5s}  {:>5s} {:>5s}".format("", "PQ", "SQ", "RQ", "N"))
    lines.append("-" * (10 + 7 * 4))
    for name in ("All", "Things", "Stuff"):
        r = results[name]
        lines.append(
            f"{name:10s}| {100 * r['pq']:5.1f}  {100 * r['sq']:5.1f}  {100 * r['rq']:5.1f} {r['n']:5d}"
        )
    return "\n".join(lines)


def _clean(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k) if not isinstance(k, str) else k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def results_to_jsonable(results: Mapping[str, Any]) -> dict[str, Any]:
    """Plain-JSON copy of a result dict: numpy scalars -> Python, ``nan`` -> ``None``, keys -> str."""
    return _clean(results)
