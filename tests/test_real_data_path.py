"""The real-data path on a fresh clone: only a real-layout Cityscapes tree under data/01_raw/cityscapes.

The tree is written by the generator (the same files and encodings as Cityscapes) into a throw-away copy of
the project and its manifest removed, so nothing of the generated-data path exists; ingestion, training and
evaluation must then run on it alone, and images without annotations must be named, never dropped silently.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from kedro_project import TINY_MODEL, copy_project, run_kedro

from unipan_pipeline.data.cityscapes import ingest_cityscapes
from unipan_pipeline.data.errors import MissingDataError
from unipan_pipeline.synthetic import generate_cityscapes_tree

TINY_TRAIN: dict[str, Any] = {
    "augment": {"scale_range": None, "crop_size": [64, 128]},
    "model": {**TINY_MODEL, "norm": "bn"},
    "trainer": {
        "iterations": 2,
        "images_per_batch": 2,
        "optimizer": "adamw",
        "lr": 1e-3,
        "num_workers": 0,
        "log_every": 1,
        "validate_every": 0,
        "checkpoint_every": 2,
        "warmup_iters": 1,
        "lr_steps": [],
        "progress_bar": False,
    },
}


def real_layout_tree(root: Path) -> Path:
    """A Cityscapes tree as distributed (no generator manifest beside it)."""
    generate_cityscapes_tree(root, {"train": 2, "val": 2}, 64, 128, seed=3, progress=False)
    (root / "synthetic_manifest.json").unlink(missing_ok=True)
    return root


def add_unannotated_image(root: Path) -> Path:
    """Copy one val image under a new frame name that has no gtFine files."""
    src = sorted((root / "leftImg8bit" / "val").glob("*/*_leftImg8bit.png"))[0]
    dst = src.with_name(src.name.replace("_000019_", "_000042_"))
    shutil.copyfile(src, dst)
    return dst


def test_unannotated_image_is_an_error_naming_it(tmp_path: Path) -> None:
    raw = real_layout_tree(tmp_path / "cityscapes")
    orphan = add_unannotated_image(raw)
    out = tmp_path / "out"
    with pytest.raises(MissingDataError, match=orphan.name) as err:
        ingest_cityscapes(raw, out, ["train", "val"])
    assert "unannotated_images: warn" in str(err.value)
    assert not out.exists()


def test_unannotated_image_warn_lists_it_and_ingests_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    raw = real_layout_tree(tmp_path / "cityscapes")
    orphan = add_unannotated_image(raw)
    with caplog.at_level(logging.WARNING, logger="unipan_pipeline.data.cityscapes"):
        summary = ingest_cityscapes(raw, tmp_path / "out", ["train", "val"], unannotated_images="warn")
    assert summary["splits"]["val"]["images"] == 2 and summary["splits"]["train"]["images"] == 2
    assert any(str(orphan) in r.getMessage() for r in caplog.records)
    with pytest.raises(ValueError, match="unannotated_images"):
        ingest_cityscapes(raw, tmp_path / "out2", ["val"], unannotated_images="ignore")  # type: ignore[arg-type]


def test_cityscapes_pipelines_run_on_a_real_tree_alone(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "RANK", "WORLD_SIZE"):
        os.environ.pop(var, None)
    os.environ["KEDRO_DISABLE_TELEMETRY"] = "1"
    project = copy_project(tmp_path / "project")
    real_layout_tree(project / "data" / "01_raw" / "cityscapes")
    params = {
        "train_cityscapes": TINY_TRAIN,
        "evaluate_cityscapes": {
            "max_images": 2,
            "num_pictures": 1,
            "affinity_pictures": 1,
            "progress_bar": False,
        },
    }
    run_kedro(project, ["ingest_cityscapes", "train_cityscapes", "evaluate_cityscapes"], params)

    raw = project / "data" / "01_raw"
    assert sorted(p.name for p in raw.iterdir()) == ["cityscapes"], "generated data appeared"
    summary = json.loads((project / "data/03_primary/cityscapes_ingested.json").read_text())
    assert summary["source"].startswith("real")
    assert summary["splits"]["train"]["images"] == 2 and summary["splits"]["val"]["images"] == 2
    assert (project / "data/06_models/cityscapes/model.pt").is_file()
    metrics = json.loads((project / "data/08_reporting/cityscapes/metrics.json").read_text())
    assert 0.0 <= metrics["pq"] <= 1.0


def test_ingest_without_any_data_says_what_to_do(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project")
    os.environ["KEDRO_DISABLE_TELEMETRY"] = "1"
    with pytest.raises(Exception, match="generate_synthetic") as err:
        run_kedro(project, ["ingest_cityscapes"])
    assert "data/01_raw/cityscapes" in str(err.value)
