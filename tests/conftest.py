"""Shared fixtures: a tiny category map, a synthetic panoptic batch following the batch contract, and the
default pipeline run once on tiny data (``tiny_project``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from builders import make_panoptic_sample
from kedro_project import ROOT, TINY_PARAMS, copy_project, run_kedro

from unipan_pipeline.categories import Category, CategoryMap


@pytest.fixture
def tiny_categories() -> CategoryMap:
    """3 stuff + 2 thing classes with COCO-like dataset ids (gaps, not equal to train ids)."""
    spec = [
        (10, "sky", False),
        (20, "road", False),
        (30, "grass", False),
        (41, "car", True),
        (57, "person", True),
    ]
    return CategoryMap(
        "tiny",
        [Category(id=i, name=n, isthing=t, color=(k, k, k), train_id=k) for k, (i, n, t) in enumerate(spec)],
    )


@pytest.fixture
def synthetic_batch() -> tuple[list[torch.Tensor], list[dict]]:
    """Two images of different sizes (64x96 and 80x72) with 3 and 2 thing instances."""
    a = make_panoptic_sample(64, 96, [(8, 10, 40, 50, 3), (30, 20, 70, 60, 4), (60, 5, 90, 30, 3)], seed=1)
    b = make_panoptic_sample(80, 72, [(5, 40, 40, 78, 4), (35, 10, 70, 45, 3)], seed=2)
    return [a[0], b[0]], [a[1], b[1]]


_TINY: dict[str, Path] = {}


@pytest.fixture(scope="session")
def tiny_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default pipeline run once on tiny data in a copy of the project.

    Used by several modules; the module-level cache keeps it to one run per session even if pytest builds
    the fixture twice (MLflow also caches one SQLite engine per relative URI and process)."""
    if "project" in _TINY:
        return _TINY["project"]
    torch.set_num_threads(1)
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "RANK", "WORLD_SIZE"):
        os.environ.pop(var, None)
    os.environ["KEDRO_DISABLE_TELEMETRY"] = "1"
    project = copy_project(tmp_path_factory.mktemp("unipan") / "project")
    project_db = ROOT / "mlflow.db"
    before = project_db.stat().st_mtime if project_db.exists() else None
    run_kedro(project, None, TINY_PARAMS)
    after = project_db.stat().st_mtime if project_db.exists() else None
    assert before == after, "the tiny run touched the project's own mlflow.db"
    _TINY["project"] = project
    return project
