"""End to end: the default pipeline (generate -> ingest -> train -> evaluate -> register) through
``KedroSession`` in a COPY of the project (tmp dir, own mlflow.db), with tiny parameters; then MLflow,
the registry, the written predictions and the resume behaviour are checked.

The tiny run (4 train / 2 val images of 64x128, 3 iterations, a very slim model) is made once per session
(``tiny_project`` fixture, also used by ``test_predict.py``).
"""

from __future__ import annotations

import json
import math
import os
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
import torch
from kedro.config import OmegaConfigLoader
from kedro_project import TINY_MODEL, TINY_PARAMS, isolated_mlflow
from mlflow.tracking import MlflowClient

from unipan_pipeline.evaluation import METRIC_KEYS, pq_compute_files
from unipan_pipeline.experiment import PQValidator, evaluate_experiment, register_experiment, train_experiment
from unipan_pipeline.experiment.common import check_keys, data_source, load_bundle
from unipan_pipeline.tracking import use_tracker
from unipan_pipeline.tracking.fake import FakeTracker
from unipan_pipeline.tracking.registry import register_and_promote

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def client(tiny_project: Path) -> Iterator[MlflowClient]:
    uri = f"sqlite:///{tiny_project / 'mlflow.db'}"
    with isolated_mlflow(uri):
        yield MlflowClient(tracking_uri=uri, registry_uri=uri)


def _manifest(project: Path) -> dict[str, Any]:
    return json.loads((project / "data/06_models/demo/model.json").read_text())


def test_default_pipeline_writes_model_checkpoints_and_curves(tiny_project: Path) -> None:
    manifest = _manifest(tiny_project)
    assert manifest["dataset"] == "cityscapes" and manifest["data_source"] == "synthetic"
    assert manifest["iterations"] == 3 and manifest["start_iteration"] == 0
    ckpts = sorted((tiny_project / "data/06_models/demo/checkpoints").glob("ckpt_*.pt"))
    assert [p.name for p in ckpts] == ["ckpt_00000002.pt", "ckpt_00000003.pt"]
    for key in ("checkpoint", "model_config", "categories", "inference"):
        assert (tiny_project / manifest["bundle"][key]).is_file()  # paths relative to the project root
    state = torch.load(tiny_project / manifest["bundle"]["checkpoint"], weights_only=True)
    final = torch.load(ckpts[-1], weights_only=True)["model"]
    assert state.keys() == final.keys() and all(torch.equal(state[k], final[k]) for k in state)
    train_curve = pd.read_csv(tiny_project / "data/08_reporting/demo/train_curve.csv")
    assert train_curve["iteration"].tolist() == [1, 2, 3]
    assert {"train/loss", "train/lr", "train/loss_panoptic"} <= set(train_curve.columns)
    val_curve = pd.read_csv(tiny_project / "data/08_reporting/demo/val_curve.csv")
    assert val_curve["iteration"].tolist() == [2, 3] and val_curve["pq"].between(0, 1).all()


def test_metrics_json_and_reports(tiny_project: Path) -> None:
    metrics = json.loads((tiny_project / "data/08_reporting/demo/metrics.json").read_text())
    assert set(METRIC_KEYS) <= set(metrics) and metrics["n_images"] == 2
    for key in METRIC_KEYS:
        assert metrics[key] is None or 0.0 <= metrics[key] <= 1.0, key
    assert metrics["pq"] is not None and metrics["miou"] is not None
    # the demo model has the affinity head: its effect and argmax(Psi)'s PQ on the same weights
    for key in ("affinity/cells_changed", "pq_without_affinity"):
        assert metrics[key] is not None and 0.0 <= metrics[key] <= 1.0, key
    assert metrics["affinity/relative_change"] > 0.0  # an affinity head changes P (random init at least)
    assert metrics["affinity/gain"] == 1.0  # the demo has no gain on the propagated term
    assert {"affinity/thing_cells_changed", "pq_th_without_affinity", "pq_st_without_affinity"} <= set(
        metrics
    )
    reports = tiny_project / "data/08_reporting/demo/evaluation"
    names = {p.name for p in reports.iterdir()}
    assert {"pq_per_class.csv", "pq_per_class.md", "pq_per_class.png"} <= names
    assert any(n.startswith("comparison_") for n in names) and any(n.startswith("affinity_") for n in names)
    table = pd.read_csv(reports / "pq_per_class.csv")
    assert len(table) == 19 and table["PQ"].between(0, 1).all()


def test_predictions_are_coco_panoptic_and_match_in_memory_pq(tiny_project: Path) -> None:
    """The written json + PNGs, scored from files by pq_compute's protocol, give the logged PQ."""
    pred_dir = tiny_project / "data/07_model_output/demo"
    gt_root = tiny_project / "data/03_primary/cityscapes"
    pred = json.loads((pred_dir / "panoptic_val.json").read_text())
    assert len(pred["annotations"]) == 2 and len(pred["categories"]) == 19
    for ann in pred["annotations"]:
        assert (pred_dir / "panoptic_val" / ann["file_name"]).is_file()
    results = pq_compute_files(
        gt_root / "panoptic_val.json",
        pred_dir / "panoptic_val.json",
        gt_root / "panoptic_val",
        pred_dir / "panoptic_val",
    )
    metrics = json.loads((tiny_project / "data/08_reporting/demo/metrics.json").read_text())
    assert math.isclose(results["All"]["pq"], metrics["pq"], rel_tol=1e-9, abs_tol=1e-12)
    assert not list(pred_dir.parent.glob(".demo.tmp-*")), "temporary prediction folder left behind"


def test_mlflow_run_has_params_curves_metrics_artifacts_and_model(
    tiny_project: Path, client: MlflowClient
) -> None:
    runs = mlflow.search_runs(
        search_all_experiments=True,
        filter_string="tags.mlflow.runName = 'demo-cityscapes-r18-argmaxP-e2e-seed0'",  # not '__default__'
    )
    assert len(runs) == 1, "one kedro run -> one MLflow run (evaluation logs into the training run)"
    assert _manifest(tiny_project)["mlflow"]["run_name"] == "demo-cityscapes-r18-argmaxP-e2e-seed0"
    assert runs.run_id[0] == _manifest(tiny_project)["mlflow"]["run_id"]
    run = client.get_run(runs.run_id[0])
    params, tags, metrics = run.data.params, run.data.tags, run.data.metrics
    assert params["demo.trainer.iterations"] == "3"  # kedro-mlflow: the params: inputs
    assert params["resolved.model.fpn_channels"] == "32"  # the glue: full resolved configs
    assert params["evaluation.num_pictures"] == "1"
    assert tags["data.source"] == "synthetic" and tags["dataset"] == "cityscapes"
    assert "data.fingerprint" in tags
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [1, 2, 3]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/pq")] == [2, 3]
    for key in ("pq", "sq", "rq", "pq_th", "pq_st", "miou", "ap_box", "ap_mask", "pq_class/car"):
        assert key in metrics and 0.0 <= metrics[key] <= 1.0, key
    for key in ("affinity/cells_changed", "affinity/relative_change", "pq_without_affinity"):
        assert key in metrics, key  # the affinity's effect, logged with the other metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert {
        "evaluation/pq_per_class.csv",
        "evaluation/pq_per_class.md",
        "evaluation/metrics.json",
    } <= artifacts
    assert any(a.endswith(".png") and "comparison_" in a for a in artifacts)
    artifact_uri = run.info.artifact_uri
    # MLflow's default artifact root of the SQLite store: <project>/mlruns/<experiment id>/ (a path, no URI)
    assert Path(artifact_uri.removeprefix("file://")).is_relative_to(tiny_project / "mlruns")


def test_registered_champion_and_promotion(tiny_project: Path, client: MlflowClient) -> None:
    reg = json.loads((tiny_project / "data/08_reporting/demo/registration.json").read_text())
    assert reg["registered"] and reg["promoted"] and reg["model_name"] == "unipan-cityscapes"
    champion = client.get_model_version_by_alias("unipan-cityscapes", "champion")
    assert int(champion.version) == reg["version"]
    assert champion.tags["data_source"] == "synthetic"
    # the version's description says what it scored and what it was trained on
    desc = champion.description
    assert f"PQ {100 * reg['pq']:.1f}" in desc and "mIoU" in desc, desc
    assert "synthetic" in desc and "data/03_primary/cityscapes" in desc, desc
    assert "demo-cityscapes-r18-argmaxP-e2e-seed0" in desc, desc
    run_id = _manifest(tiny_project)["mlflow"]["run_id"]
    worse = register_and_promote(run_id, "unipan-cityscapes", reg["pq"] - 1.0)
    assert worse is not None and not worse.promoted
    assert client.get_model_version_by_alias("unipan-cityscapes", "champion").version == champion.version
    better = register_and_promote(run_id, "unipan-cityscapes", reg["pq"] + 1.0)
    assert better is not None and better.promoted
    assert int(client.get_model_version_by_alias("unipan-cityscapes", "champion").version) == better.version


def test_rerun_resumes_from_the_final_checkpoint(tiny_project: Path, client: MlflowClient) -> None:
    """A second training call finds the final checkpoint: nothing left to train, curves are kept."""
    conf = OmegaConfigLoader(
        str(tiny_project / "conf"), base_env="base", default_run_env="local", runtime_params=TINY_PARAMS
    )
    params = conf["parameters"]["demo"]
    old = Path.cwd()
    os.chdir(tiny_project)
    try:
        manifest, train_curve, val_curve = train_experiment(params, name="demo")
    finally:
        os.chdir(old)
    assert manifest["start_iteration"] == 3 and manifest["resumed_from"].endswith("ckpt_00000003.pt")
    assert train_curve["iteration"].tolist() == [1, 2, 3] and val_curve["iteration"].tolist() == [2, 3]
    bad = {**params, "model": {**params["model"], "fpn_channels": 48}}
    os.chdir(tiny_project)
    try:
        with pytest.raises(ValueError, match=r"different configuration.*model.fpn_channels"):
            train_experiment(bad, name="demo")
        reseeded = {**params, "trainer": {**params["trainer"], "seed": int(params["trainer"]["seed"]) + 1}}
        with pytest.raises(ValueError, match=r"different configuration.*trainer.seed"):
            train_experiment(reseeded, name="demo")  # not the old seed's weights under the new seed's name
    finally:
        os.chdir(old)


def test_validator_pickles_and_scores_at_gt_resolution(tiny_project: Path) -> None:
    root = tiny_project / "data/03_primary/cityscapes"
    validator = PQValidator(str(root), "val", {"base_scale": 0.5}, max_images=2)
    clone = pickle.loads(pickle.dumps(validator))
    model = load_bundle(tiny_project / "data/06_models/demo").model
    metrics = clone(model, 0)  # the model sees 32x64 images, PQ is computed on the 64x128 PNGs
    assert 0.0 <= metrics["pq"] <= 1.0 and clone._cache is not None
    assert pickle.loads(pickle.dumps(clone))._cache is None


def test_parameter_errors_name_the_namespace(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=r"params:demo: missing key\(s\) \['model'\].*unknown key\(s\) \['modle'\]"
    ):
        check_keys({"modle": {}}, "params:demo", required={"model"})
    with pytest.raises(ValueError, match="params:x: missing key"):
        train_experiment({"dataset": "cityscapes"}, name="x")
    assert data_source(tmp_path) == {"source": "unknown", "raw_root": ""}


def test_registration_skips_without_a_usable_run(client: MlflowClient) -> None:
    evaluation = {"metrics": {"pq": 0.5}}
    missing = {"mlflow": {"run_id": "0" * 32}, "dataset": "cityscapes"}
    out = register_experiment(missing, evaluation, {"register": {"enabled": True}})
    assert not out["registered"] and "not in this tracking store" in out["reason"]
    off = register_experiment(missing, evaluation, {"register": {"enabled": False}})
    assert not off["registered"] and "enabled is false" in off["reason"]
    with pytest.raises(ValueError, match="unknown key"):
        register_experiment(missing, evaluation, {"register": {"alais": "x"}})


def test_training_evaluation_and_registration_through_a_fake_tracker(
    tiny_project: Path, tmp_path: Path
) -> None:
    """The glue logs through the current tracker: with the in-memory one, no MLflow store is touched."""
    root = tiny_project / "data/03_primary/cityscapes"
    demo = TINY_PARAMS["demo"]
    params = {
        "dataset": "cityscapes",
        "ingested_root": str(root),
        "train_split": "train",
        "val_split": "val",
        "augment": demo["augment"],
        "augment_eval": demo["augment_eval"],
        "model": TINY_MODEL,
        "trainer": {**demo["trainer"], "iterations": 2, "checkpoint_dir": str(tmp_path / "ck"), "seed": 4},
        "validation": {"max_images": 1},
        "output_dir": str(tmp_path / "model"),
    }
    tracker = FakeTracker()
    with use_tracker(tracker), isolated_mlflow(f"sqlite:///{tmp_path / 'never.db'}"):
        manifest, train_curve, val_curve = train_experiment(params, name="fake")
        run = tracker.only_run()
        assert run.name == manifest["mlflow"]["run_name"] == "fake-cityscapes-r18-argmaxP-e2e-seed4"
        assert manifest["mlflow"]["run_id"] == run.run_id
        assert manifest["mlflow"]["model_uri"] == run.models[0]["uri"]
        assert (
            run.params["resolved.trainer.iterations"] == "2" and run.params["resolved.data.train"] == "train"
        )
        assert run.tags["dataset"] == "cityscapes" and run.tags["pipeline.namespace"] == "fake"
        assert [step for step, _ in run.history("train/loss")] == train_curve["iteration"].tolist() == [1, 2]
        assert run.history("val/pq") and run.history("final_val/pq") == [(2, val_curve["pq"].iloc[-1])]
        assert sorted(run.artifacts) == [
            "bundle/categories.json",
            "bundle/inference.json",
            "bundle/model_config.json",
        ]
        evaluation = evaluate_experiment(
            manifest,
            {
                "max_images": 1,
                "device": "cpu",
                "predictions_dir": str(tmp_path / "pred"),
                "report_dir": str(tmp_path / "report"),
                "metrics_path": str(tmp_path / "metrics.json"),
                "num_pictures": 0,
                "affinity_pictures": 0,
                "progress_bar": False,
            },
            name="fake",
        )
        assert evaluation["mlflow_run_id"] == run.run_id
        assert run.params["evaluation.max_images"] == "1"
        assert [v for k, v, _ in run.metrics if k == "pq"] == [evaluation["metrics"]["pq"]]
        assert "evaluation/metrics.json" in run.artifacts
        registered = register_experiment(manifest, evaluation, {"register": {}})
        assert registered["registered"] and registered["version"] == 1 and registered["promoted"]
        assert tracker.aliases[("unipan-cityscapes", "champion")] == 1
        assert run.tags["registered_model"] == "unipan-cityscapes/1"
        assert tracker.versions["unipan-cityscapes"][0].tags["split"] == "val"
        # a manifest whose run the tracker does not know: nothing logged, nothing registered
        other = {**manifest, "mlflow": {"run_id": "unknown"}}
        assert not register_experiment(other, evaluation, {"register": {}})["registered"]
    assert not (tmp_path / "never.db").exists()
