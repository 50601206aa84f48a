"""The first screen of ``kedro run``: no warning a user cannot act on, log lines at the terminal's width, a
summary at the end, runs named for what they trained."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml
from kedro.validation.type_extractor import TypeExtractor

from unipan_pipeline import logging_handlers
from unipan_pipeline.experiment.common import run_name
from unipan_pipeline.pipeline_registry import register_pipelines
from unipan_pipeline.summary import run_summary, ui_command

ROOT = Path(__file__).resolve().parents[1]


def test_registry_and_type_extraction_emit_no_warning(caplog: pytest.LogCaptureFixture) -> None:
    """What Kedro does before any node runs: build every pipeline (the ablations too) and read the type
    hints of every node function (it warned 22 times about the ablation's functools.partial nodes)."""
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.DEBUG):
        warnings.simplefilter("always")
        pipelines = register_pipelines()
        TypeExtractor(pipelines).extract_types_from_pipelines()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], [
        r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING
    ]
    ours = [w for w in caught if "unipan_pipeline" in w.filename or "type hints" in str(w.message)]
    assert not ours, [str(w.message) for w in ours]
    node = next(n for n in pipelines["ablation_cityscapes"].nodes if n.name.endswith("train_A"))
    assert node.func.__name__ == "train_model" and "study" in node.func.__annotations__


def test_pyfunc_class_definition_does_not_ask_for_type_hints() -> None:
    import importlib  # noqa: PLC0415

    from unipan_pipeline.tracking import pyfunc  # noqa: PLC0415

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        importlib.reload(pyfunc)
    assert not [w for w in caught if "Add type hints" in str(w.message)]


def test_kedro_cli_start_prints_no_warning() -> None:
    """A fresh ``kedro`` process (plugins loaded: kedro-mlflow defines a PythonModel without type hints)
    prints no warning before any work."""
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1", "COLUMNS": "200"}
    kedro = Path(sys.executable).with_name("kedro")
    done = subprocess.run(
        [str(kedro), "registry", "list"],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    screen = done.stdout + done.stderr
    assert "- demo" in screen
    assert "WARNING" not in screen and "Warning" not in screen, screen[-3000:]


def test_mlflow_conf_has_no_relative_artifact_location() -> None:
    cfg = yaml.safe_load((ROOT / "conf/base/mlflow.yml").read_text())
    location = cfg["tracking"]["experiment"]["create_experiment_kwargs"]["artifact_location"]
    assert location is None or Path(location).is_absolute() or "://" in location


def test_log_console_uses_terminal_width(monkeypatch: pytest.MonkeyPatch) -> None:
    logging_conf = yaml.safe_load((ROOT / "conf/logging.yml").read_text())
    assert logging_conf["handlers"]["rich"]["console"] == "ext://unipan_pipeline.logging_handlers.console"
    monkeypatch.setenv("COLUMNS", "133")
    assert logging_handlers.terminal_width() == 133
    monkeypatch.delenv("COLUMNS")
    # no terminal on any standard stream under pytest's capture -> the fallback, not rich's 80
    monkeypatch.setattr(logging_handlers.os, "get_terminal_size", lambda fd: (_ for _ in ()).throw(OSError))
    assert logging_handlers.terminal_width(fallback=150) == 150


def test_run_name_describes_the_training() -> None:
    assert (
        run_name("demo", "cityscapes", {"backbone_depth": 18}, 0) == "demo-cityscapes-r18-argmaxP-e2e-seed0"
    )
    assert (
        run_name(
            "train_coco",
            "coco",
            {"use_affinity": False, "train_end_to_end": False, "potential_variant": "B"},
            3,
        )
        == "train_coco-coco-r50-argmaxPsiB-no-e2e-seed3"
    )
    assert (
        run_name("x", "cityscapes", {"inference": "heuristic"}, 1) == "x-cityscapes-r50-heuristic-e2e-seed1"
    )


def test_summary_names_metrics_places_and_run() -> None:
    manifest = {
        "name": "demo",
        "dataset": "cityscapes",
        "data_source": "synthetic",
        "iterations": 3,
        "output_dir": "data/06_models/demo",
        "mlflow": {"run_id": "abc123", "run_name": "demo-cityscapes-r18-argmaxP-e2e-seed0"},
    }
    evaluation = {
        "metrics": {"pq": 0.391, "pq_th": 0.25, "pq_st": 0.48, "sq": 0.7, "rq": 0.5, "miou": 0.61},
        "n_images": 40,
        "split": "val",
        "predictions_dir": "data/07_model_output/demo",
        "metrics_path": "data/08_reporting/demo/metrics.json",
        "report_files": ["data/08_reporting/demo/evaluation/pq_per_class.png"],
        "mlflow_run_id": "abc123",
    }
    registration = {
        "registered": True,
        "promoted": True,
        "model_name": "unipan-cityscapes",
        "version": 2,
        "model_uri": "models:/unipan-cityscapes@champion",
    }
    text = run_summary(manifest, evaluation, registration, tracking_uri="sqlite:///mlflow.db")
    for piece in (
        "PQ 39.1 (things 25.0, stuff 48.0)",
        "mIoU 61.0",
        "AP box n/a",
        "data/08_reporting/demo/evaluation/",
        "data/06_models/demo/",
        "models:/unipan-cityscapes@champion",
        "data/07_model_output/demo/",
        "demo-cityscapes-r18-argmaxP-e2e-seed0 (abc123)",
        "mlflow ui --backend-store-uri sqlite:///mlflow.db",
    ):
        assert piece in text, (piece, text)
    assert ui_command("sqlite:////abs/mlflow.db") == "mlflow ui --backend-store-uri sqlite:////abs/mlflow.db"
