"""The ablation study (Table 1): pipeline structure and parameter resolution, the table / claims / paper
figures, the variant bundles of the heuristic rows, and a tiny end-to-end study through ``KedroSession`` in a
COPY of the project (own mlflow.db): six nested row runs with their tags and metrics under one parent run,
four training runs, the table with Table 1's columns, and a single-row rerun with ``--namespaces``."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from kedro.config import OmegaConfigLoader
from kedro.pipeline import Pipeline
from kedro_project import TINY_MODEL, copy_project, isolated_mlflow, run_kedro
from mlflow.tracking import MlflowClient

from unipan_pipeline import ablation, pipeline_registry
from unipan_pipeline.evaluation import METRIC_KEYS
from unipan_pipeline.pipelines import ablation_cityscapes, ablation_coco
from unipan_pipeline.pipelines.ablation_cityscapes.nodes import row_bundle

ROOT = Path(__file__).resolve().parents[1]
STUDY_PIPELINES = {"ablation_cityscapes": ablation_cityscapes, "ablation_coco": ablation_coco}
EVAL_METRICS = ("pq", "pq_th", "pq_st", "sq", "rq", "miou", "ap_box")  # ap_mask: rows with masks only
SUPPLEMENTARY = {"ablation_cityscapes": ("D2gt",), "ablation_coco": ()}
"""Supplementary rows each study's pipeline adds (D2gt: D2 trained on GT detections, Cityscapes only)."""
CITYSCAPES_ROWS = [*ablation.ROWS, "D2gt"]


def _paper(row: str) -> dict[str, Any]:
    """Table 1's settings of a row; D2gt has D2's (it differs in the training detections only)."""
    return ablation.PAPER_TABLE1["D2" if row == "D2gt" else row]


TINY_PARAMS: dict[str, Any] = {
    "generate_synthetic": {
        "splits": {"train": 2, "val": 2},
        "height": 64,
        "width": 128,
        "workers": 1,
        "progress": False,
    },
    "ablation_cityscapes": {
        "base": {
            "augment": {"base_scale": 1.0, "scale_range": None, "crop_size": [64, 128]},
            "augment_eval": {"base_scale": 1.0},
            "model": TINY_MODEL,
            "trainer": {
                "iterations": 2,
                "images_per_batch": 2,
                "num_workers": 0,
                "log_every": 1,
                "checkpoint_every": 0,
                "warmup_iters": 1,
                "lr_steps": [],
                "progress_bar": False,
            },
        },
        "evaluation": {"num_pictures": 0, "affinity_pictures": 0, "progress_bar": False},
    },
}


# ------------------------------------------------------------------------------------------------ helpers
@pytest.fixture(scope="module")
def conf_params() -> dict[str, Any]:
    return OmegaConfigLoader(str(ROOT / "conf"), base_env="base", default_run_env="local")["parameters"]


@pytest.fixture(scope="module")
def catalog_conf() -> dict[str, Any]:
    return OmegaConfigLoader(str(ROOT / "conf"), base_env="base", default_run_env="local")["catalog"]


def _train_nodes(pipe: Pipeline) -> list[Any]:
    return [n for n in pipe.nodes if "ablation_train" in n.tags]


def _eval_nodes(pipe: Pipeline) -> list[Any]:
    return [n for n in pipe.nodes if "ablation_evaluate" in n.tags]


# ------------------------------------------------------------------------------------------------ structure
@pytest.mark.parametrize("name", sorted(STUDY_PIPELINES))
def test_six_rows_four_trainings_one_report(name: str) -> None:
    dataset = name.removeprefix("ablation_")
    pipe = STUDY_PIPELINES[name].create_pipeline()
    trains, evals = _train_nodes(pipe), _eval_nodes(pipe)
    extra = SUPPLEMENTARY[name]
    rows = [*ablation.ROWS, *extra]
    assert len(trains) == 4 + len(extra) and len(evals) == 6 + len(extra)
    assert len(pipe.nodes) == 11 + 2 * len(extra)
    # every model is trained exactly once, in the namespace of its argmax row
    produced = {n.outputs[0]: n for n in trains}
    models = ["A", "B", "C", "D", *(ablation.ROW_MODEL[r] for r in extra)]
    assert set(produced) == {f"ablation_{dataset}_model_{m}" for m in models}
    assert {m: produced[f"ablation_{dataset}_model_{m}"].namespace for m in models} == {
        "A": "A",
        "B": "B",
        "C": "C2",
        "D": "D2",
        **{ablation.ROW_MODEL[r]: r for r in extra},
    }
    # rows and the model they evaluate: C1/C2 and D1/D2 read the same trained model
    reads = {n.namespace: n.inputs[0] for n in evals}
    assert reads == {row: f"ablation_{dataset}_model_{ablation.ROW_MODEL[row]}" for row in rows}
    assert ablation.ROW_MODEL == {
        "A": "A",
        "B": "B",
        "C1": "C",
        "C2": "C",
        "D1": "D",
        "D2": "D",
        "D2gt": "Dgt",
    }
    report = [n for n in pipe.nodes if "ablation_report" in n.tags]
    assert len(report) == 1 and report[0].namespace is None
    assert report[0].inputs[1:] == [f"ablation_{dataset}_row_{r}" for r in rows]


def test_namespaces_select_rows_as_documented() -> None:
    pipe = ablation_cityscapes.create_pipeline()

    def names(*ns: str) -> set[str]:
        return {n.name for n in pipe.only_nodes_with_namespaces(list(ns)).nodes}

    assert names("B") == {"B.cityscapes_train_B", "B.cityscapes_evaluate_B"}
    assert names("A") == {"A.cityscapes_train_A", "A.cityscapes_evaluate_A"}
    assert names("C2") == {"C2.cityscapes_train_C", "C2.cityscapes_evaluate_C2"}  # C2 alone trains C
    assert names("C1") == {"C1.cityscapes_evaluate_C1"}  # C1 alone reads the saved model C
    assert names("C1", "C2") == {
        "C2.cityscapes_train_C",
        "C2.cityscapes_evaluate_C2",
        "C1.cityscapes_evaluate_C1",
    }
    assert names("D2") == {"D2.cityscapes_train_D", "D2.cityscapes_evaluate_D2"}
    assert names("D2gt") == {"D2gt.cityscapes_train_Dgt", "D2gt.cityscapes_evaluate_D2gt"}
    with pytest.raises(ValueError, match="namespaces"):
        pipe.only_nodes_with_namespaces(["C"])  # models are not namespaces
    # the two studies can live in one pipeline (no node or dataset name collides)
    both = pipe + ablation_coco.create_pipeline()
    assert len(both.nodes) == 24


@pytest.mark.parametrize("name", sorted(STUDY_PIPELINES))
def test_conf_resolves_every_row(
    name: str, conf_params: dict[str, Any], catalog_conf: dict[str, Any]
) -> None:
    study = conf_params[name]
    ablation.validate_study(study, name)
    pipe = STUDY_PIPELINES[name].create_pipeline()
    for ds in pipe.datasets():
        if ds.startswith("params:"):
            assert ds == f"params:{name}"
        else:
            assert ds in catalog_conf, f"{ds} is not in conf/base/catalog*.yml"
    # the settings of each row, as resolved into the ModelConfig it is evaluated with, are Table 1's
    for row in ablation.study_rows(study):
        cfg = ablation.row_model_config(study, row, name)
        paper = {f: _paper(row)[f] for f in ablation.FLAGS}
        expected_detections = "ground_truth" if row == "D2gt" else "predicted"
        assert cfg.train_detections == expected_detections, row
        assert ablation.row_flags(cfg) == paper, row
        # the shared base survives the row's overrides
        assert cfg.backbone_depth == study["base"]["model"]["backbone_depth"]
        assert cfg.fpn_channels == study["base"]["model"]["fpn_channels"]
        for key, value in study["rows"][row].items():  # inference + inference-only heuristic_* fields
            assert getattr(cfg, key) == value, (row, key)
    assert ablation.study_rows(study) == [*ablation.ROWS, *SUPPLEMENTARY[name]]
    for model in ablation.study_models(study):
        params = ablation.training_params(study, model, name)
        assert params["output_dir"] == f"{study['outputs']['models_dir']}/{model}"
        assert params["trainer"]["checkpoint_dir"] == f"{study['outputs']['models_dir']}/{model}/checkpoints"
        for key, value in study["models"][model].items():
            assert params["model"][key] == value
    ev = ablation.evaluation_params(study, "C1", name)
    assert ev["predictions_dir"] == f"{study['outputs']['predictions_dir']}/C1"
    assert ev["metrics_path"] == f"{study['outputs']['report_dir']}/rows/C1/metrics.json"


def test_bad_study_parameters_name_the_key(conf_params: dict[str, Any]) -> None:
    study = json.loads(json.dumps(conf_params["ablation_cityscapes"]))
    bad = json.loads(json.dumps(study))
    bad["models"]["A"]["use_masks"] = False
    bad["rows"]["A"]["inference"] = "heuristic"  # the merger needs masks
    with pytest.raises(ValueError, match=r"ablation_cityscapes\.rows\.A"):
        ablation.validate_study(bad, "ablation_cityscapes")
    bad = json.loads(json.dumps(study))
    bad["models"]["C"]["inference"] = "heuristic"
    with pytest.raises(ValueError, match=r"models\.C: `inference` is a row setting"):
        ablation.validate_study(bad, "ablation_cityscapes")
    bad = json.loads(json.dumps(study))
    del bad["rows"]["D1"]
    with pytest.raises(ValueError, match=r"rows: missing key\(s\) \['D1'\]"):
        ablation.validate_study(bad, "ablation_cityscapes")
    bad = json.loads(json.dumps(study))
    bad["models"]["B"]["use_afinity"] = True
    with pytest.raises(ValueError, match="use_afinity"):
        ablation.training_params(bad, "B", "ablation_cityscapes")
    bad = json.loads(json.dumps(study))
    del bad["models"]["Dgt"]  # a supplementary row without its model
    with pytest.raises(ValueError, match="D2gt and its model Dgt together"):
        ablation.validate_study(bad, "ablation_cityscapes")
    del bad["rows"]["D2gt"]  # neither: the study is Table 1 alone
    ablation.validate_study(bad, "ablation_cityscapes")
    with pytest.raises(ValueError, match=r"no model 'Dgt'"):
        ablation.training_params(bad, "Dgt", "ablation_cityscapes")


# ------------------------------------------------------------------------------------------------ table
def test_paper_table_matches_the_papers_text() -> None:
    """Sec. 4.1 quotes differences that Table 1's figures must reproduce (B-A: +4.4 all / +4.2 things /
    +4.4 stuff / +4.0 RQ; D2-C2 +1.8; D1-C1 +1.3; D2-D1 +0.8)."""
    paper = ablation.paper_table().set_index("Model")[[t for t, _ in ablation.METRIC_COLUMNS]]
    assert list(ablation.paper_table().columns) == list(ablation.TABLE_COLUMNS)
    d = paper.loc["B"] - paper.loc["A"]
    assert [round(d[c], 1) for c in ("PQ all", "PQ th", "PQ st", "RQ")] == [4.4, 4.2, 4.4, 4.0]
    claims = {c["key"]: c["paper_delta"] for c in ablation.claims_status(ablation.paper_table())}
    assert claims == {
        "B_over_A": 4.4,
        "C2_over_A": 5.0,
        "D2_over_C2": 1.8,
        "D1_over_C1": 1.3,
        "D2_over_D1": 0.8,
    }
    assert pd.isna(paper.loc["A", "AP mask"]) and paper.loc["D2", "AP box"] == 38.8


def _result(row: str, pq: float | None, **metrics: float) -> dict[str, Any]:
    cfg = ablation.PAPER_TABLE1[row]
    return {
        "row": row,
        "flags": {f: cfg[f] for f in ablation.FLAGS},
        "metrics": {**dict.fromkeys(METRIC_KEYS), "pq": pq, **metrics},
    }


def test_result_table_and_claims_are_computed_from_the_numbers() -> None:
    pqs = {"A": 0.40, "B": 0.38, "C1": 0.41, "C2": 0.45, "D1": 0.45, "D2": 0.47}
    results = [_result(r, pq, ap_box=0.2) for r, pq in reversed(list(pqs.items()))]  # any order in
    table = ablation.result_table(results)
    assert list(table.columns) == list(ablation.TABLE_COLUMNS)
    assert list(table["Model"]) == list(ablation.ROWS)
    assert table.set_index("Model").loc["C2", "PQ all"] == 45.0
    assert table["AP mask"].isna().all() and (table["AP box"] == 20.0).all()
    assert list(table["heu"]) == [False, False, True, False, True, False]
    observed = {c["key"]: (c["observed"], c["delta"]) for c in ablation.claims_status(table)}
    assert observed == {
        "B_over_A": ("does not hold", -2.0),
        "C2_over_A": ("holds", 5.0),
        "D2_over_C2": ("holds", 2.0),
        "D1_over_C1": ("holds", 4.0),
        "D2_over_D1": ("holds", 2.0),
    }
    # an equal PQ is not "better"; a missing PQ makes the claim undefined
    table2 = ablation.result_table([_result("D1", 0.5), _result("D2", 0.5), _result("C1", None)])
    observed2 = {c["key"]: c["observed"] for c in ablation.claims_status(table2)}
    assert observed2["D2_over_D1"] == "does not hold"
    assert observed2["D1_over_C1"] == observed2["B_over_A"] == "undefined"
    metrics = ablation.metrics_by_row(table)
    assert (
        set(metrics) == set(ablation.ROWS) and metrics["D2"]["pq"] == 47.0 and metrics["A"]["ap_mask"] is None
    )
    md = ablation.report_markdown(table, ablation.claims_status(table), title="t")
    assert "| Model" in md and "54.6" in md and "does not hold" in md and "✓" in md


def test_variant_bundle_shares_the_weights(tmp_path: Path) -> None:
    src = tmp_path / "C"
    src.mkdir()
    files = {
        "checkpoint": src / "model.pt",
        "model_config": src / "model_config.json",
        "categories": src / "categories.json",
        "inference": src / "inference.json",
    }
    files["checkpoint"].write_bytes(b"weights")
    files["model_config"].write_text(json.dumps({"inference": "argmax", "use_masks": True}))
    files["categories"].write_text("{}")
    files["inference"].write_text("{}")
    manifest = {"bundle": {k: str(v) for k, v in files.items()}}
    assert row_bundle(manifest, {"inference": "argmax"}, tmp_path / "C2") == manifest["bundle"]
    variant = row_bundle(manifest, {"inference": "heuristic", "heuristic_stuff_area": 64}, tmp_path / "C1")
    assert Path(variant["checkpoint"]).parent == tmp_path / "C1"
    assert Path(variant["checkpoint"]).read_bytes() == b"weights"
    assert json.loads(Path(variant["model_config"]).read_text()) == {
        "inference": "heuristic",
        "use_masks": True,
        "heuristic_stuff_area": 64,
    }
    assert json.loads(files["model_config"].read_text())["inference"] == "argmax"  # the trained one untouched


# ------------------------------------------------------------------------------------------------ end to end
def test_registered_in_the_project() -> None:
    registered = pipeline_registry.register_pipelines()
    for name, module in STUDY_PIPELINES.items():
        assert name in registered
        assert {n.name for n in registered[name].nodes} == {n.name for n in module.create_pipeline().nodes}
    assert not [n for n in registered["__default__"].nodes if "ablation" in n.tags], (
        "`kedro run` = the demo only"
    )


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generate + ingest a tiny street-scene set, then the whole ablation study, in a copy of the project."""
    torch.set_num_threads(1)
    os.environ["KEDRO_DISABLE_TELEMETRY"] = "1"
    for var in ("RANK", "WORLD_SIZE"):
        os.environ.pop(var, None)
    project = copy_project(tmp_path_factory.mktemp("ablation") / "project")
    project_db = ROOT / "mlflow.db"
    before = project_db.stat().st_mtime if project_db.exists() else None
    run_kedro(project, ["generate_synthetic", "ingest_cityscapes"], TINY_PARAMS)
    run_kedro(project, ["ablation_cityscapes"], TINY_PARAMS)
    after = project_db.stat().st_mtime if project_db.exists() else None
    assert before == after, "the tiny study touched the project's own mlflow.db"
    return project


@pytest.fixture
def client(tiny_study: Path) -> Iterator[MlflowClient]:
    uri = f"sqlite:///{tiny_study / 'mlflow.db'}"
    with isolated_mlflow():
        yield MlflowClient(tracking_uri=uri, registry_uri=uri)


def _children(client: MlflowClient, parent: Any) -> list[Any]:
    return client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )


def test_tiny_study_nested_runs(tiny_study: Path, client: MlflowClient) -> None:
    exp = client.get_experiment_by_name("unipan")
    parents = client.search_runs([exp.experiment_id], filter_string="tags.ablation_role = 'study'")
    assert len(parents) == 1, "one `kedro run` = one parent run"
    parent = parents[0]
    assert parent.data.tags["ablation_study"] == "cityscapes"
    children = _children(client, parent)
    rows = {r.data.tags["row"]: r for r in children if r.data.tags.get("ablation_role") == "row"}
    models = {
        r.data.tags["ablation_model"]: r for r in children if r.data.tags.get("ablation_role") == "model"
    }
    assert sorted(rows) == sorted(CITYSCAPES_ROWS) and len(children) == 12
    assert sorted(models) == [*ablation.MODELS, "Dgt"]
    for row, run in rows.items():
        assert run.info.run_name == row and run.info.status == "FINISHED"
        expected = {f: "true" if _paper(row)[f] else "false" for f in ablation.FLAGS}
        assert {f: run.data.tags[f] for f in ablation.FLAGS} == expected, row
        assert set(EVAL_METRICS) <= set(run.data.metrics), row
        assert ("ap_mask" in run.data.metrics) == _paper(row)["msk"], row
        # the ModelConfig the row was evaluated with, and the model it came from
        assert run.data.params["model.inference"] == ("heuristic" if expected["heu"] == "true" else "argmax")
        assert run.data.params["model.use_masks"] == str(_paper(row)["msk"])
        assert run.data.params["model.use_affinity"] == str(_paper(row)["aff"])
        assert run.data.params["model.train_end_to_end"] == str(_paper(row)["e2e"])
        assert run.data.params["model.train_detections"] == ("ground_truth" if row == "D2gt" else "predicted")
        train_run = models[ablation.ROW_MODEL[row]]
        assert run.data.tags["ablation_train_run_id"] == train_run.info.run_id
    # shared models: C1/C2 and D1/D2 evaluate the same training run; each model trained once
    assert rows["C1"].data.tags["ablation_train_run_id"] == rows["C2"].data.tags["ablation_train_run_id"]
    assert rows["D1"].data.tags["ablation_train_run_id"] == rows["D2"].data.tags["ablation_train_run_id"]
    for model, run in models.items():
        assert "train/loss" in run.data.metrics, model
        assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"bundle"}
    # the parent holds the table, the paper's table and the claims
    arts = {a.path for a in client.list_artifacts(parent.info.run_id, "ablation")}
    assert arts == {
        f"ablation/{f}" for f in ("table.csv", "table.md", "paper_table1.csv", "metrics.json", "claims.json")
    }
    claim_tags = {k for k in parent.data.tags if k.startswith("claim.")}
    assert claim_tags == {f"claim.{c.key}" for c in ablation.CLAIMS}


def test_tiny_study_table_metrics_and_claims(tiny_study: Path) -> None:
    report = tiny_study / "data/08_reporting/ablation_cityscapes"
    table = pd.read_csv(report / "table.csv")
    assert list(table.columns) == list(ablation.TABLE_COLUMNS)
    assert list(table["Model"]) == CITYSCAPES_ROWS
    for row in CITYSCAPES_ROWS:
        measured = json.loads((report / "rows" / row / "metrics.json").read_text())
        got = table.set_index("Model").loc[row]
        assert got["PQ all"] == pytest.approx(100 * measured["pq"], abs=0.006)
        assert got["IoU"] == pytest.approx(100 * measured["miou"], abs=0.006)
        assert bool(got["heu"]) == _paper(row)["heu"]
    metrics = json.loads((report / "metrics.json").read_text())
    assert set(metrics) == set(CITYSCAPES_ROWS)
    assert all(set(v) == {k for _, k in ablation.METRIC_COLUMNS} for v in metrics.values())
    claims = json.loads((report / "claims.json").read_text())
    pq = table.set_index("Model")["PQ all"]
    for c in claims:
        better, worse = c["claim"].split(" over ")
        delta = round(pq[better] - pq[worse], 2)
        assert c["delta"] == pytest.approx(delta, abs=0.011)
        assert c["observed"] == ("holds" if c["delta"] > 0 else "does not hold")
    md = (report / "table.md").read_text()
    assert "Paper, Table 1" in md and "61.4" in md
    # shared models: C1 and D1 evaluate variant bundles of the weights of C and D
    models = tiny_study / "data/06_models/ablation_cityscapes"
    for row, model in (("C1", "C"), ("D1", "D")):
        assert (models / row / "model.pt").read_bytes() == (models / model / "model.pt").read_bytes()
        assert json.loads((models / row / "model_config.json").read_text())["inference"] == "heuristic"
        assert json.loads((models / model / "model_config.json").read_text())["inference"] == "argmax"
    assert sorted(p.name for p in models.iterdir()) == ["A", "B", "C", "C1", "D", "D1", "Dgt"]


def test_single_row_rerun_with_namespaces(tiny_study: Path, client: MlflowClient) -> None:
    """``--namespaces=C1`` evaluates row C1 from the saved model C (no training) under a new parent run."""
    model_json = tiny_study / "data/06_models/ablation_cityscapes/C/model.json"
    before = model_json.read_bytes()
    run_kedro(tiny_study, ["ablation_cityscapes"], TINY_PARAMS, namespaces=["C1"])
    assert model_json.read_bytes() == before
    exp = client.get_experiment_by_name("unipan")
    parents = client.search_runs(
        [exp.experiment_id], filter_string="tags.ablation_role = 'study'", order_by=["start_time DESC"]
    )
    assert len(parents) == 2
    children = _children(client, parents[0])
    assert [(r.data.tags["ablation_role"], r.data.tags.get("row")) for r in children] == [("row", "C1")]
