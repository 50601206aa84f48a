"""The official reference evaluators, run in a clean spawned process.

panopticapi's ``pq_compute`` forks a ``multiprocessing.Pool`` from the calling process. Inside a long pytest
session that process holds torch / MLflow threads (and handlers left by earlier tests), and a fork taken while
another thread holds a lock can deadlock the pool. A fresh ``spawn``-ed interpreter has none of that, so the
reference result is computed there: same code, same inputs, same numbers.
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from panopticapi.evaluation import pq_compute


def _pq_compute_quiet(gt_json: str, pred_json: str, gt_folder: str | None, pred_folder: str | None) -> Any:
    with contextlib.redirect_stdout(io.StringIO()):
        return pq_compute(gt_json, pred_json, gt_folder, pred_folder)


def official_pq_compute(
    gt_json: str | Path,
    pred_json: str | Path,
    gt_folder: str | Path | None = None,
    pred_folder: str | Path | None = None,
) -> dict[str, Any]:
    """``panopticapi.evaluation.pq_compute(gt_json, pred_json, gt_folder, pred_folder)``, spawned."""
    args = tuple(None if a is None else str(a) for a in (gt_json, pred_json, gt_folder, pred_folder))
    # ProcessPoolExecutor's worker is not daemonic, so pq_compute may start its own pool inside it
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_pq_compute_quiet, *args).result()
