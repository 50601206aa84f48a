"""The ablation study (Table 1): pipeline structure and parameter resolution (seeds, explicit thresholds per
row), the table / intervals / claims / paper figures, the variant bundles, and a tiny end-to-end study with
TWO seeds through ``KedroSession`` in a COPY of the project (own mlflow.db): under one parent run, one child
per model and seed, one per row and seed, one aggregate per row; the tables with intervals, the claims from
the paired differences, and a single-row rerun with ``--namespaces``."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog
from kedro.pipeline import Pipeline
from kedro_project import TINY_MODEL, copy_project, isolated_mlflow, project_catalog, resolved, run_kedro
from mlflow.tracking import MlflowClient

from unipan_pipeline import ablation, pipeline_registry
from unipan_pipeline.evaluation import METRIC_KEYS
from unipan_pipeline.experiment.ablation import row_bundle
from unipan_pipeline.pipelines.ablation import create_pipeline as create_study

ROOT = Path(__file__).resolve().parents[1]
STUDY_PIPELINES = ("ablation_cityscapes", "ablation_coco")
EVAL_METRICS = ("pq", "pq_th", "pq_st", "sq", "rq", "miou", "ap_box")  # ap_mask: rows with masks only
SUPPLEMENTARY = {"ablation_cityscapes": ("D2gt",), "ablation_coco": ()}
"""Supplementary rows each study's pipeline adds (D2gt: D2 trained on GT detections, Cityscapes only)."""
CITYSCAPES_ROWS = [*ablation.ROWS, "D2gt"]
CITYSCAPES_MODELS = [*ablation.MODELS, "Dgt"]
TINY_SEEDS = (0, 1)


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
        "seeds": list(TINY_SEEDS),
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
def catalog() -> DataCatalog:
    return project_catalog()


def _study(name: str) -> Pipeline:
    """The registered study ``name`` (``ablation_cityscapes``, ``ablation_coco``)."""
    return pipeline_registry.register_pipelines()[name]


def _train_nodes(pipe: Pipeline) -> list[Any]:
    return [n for n in pipe.nodes if "ablation_train" in n.tags]


def _eval_nodes(pipe: Pipeline) -> list[Any]:
    return [n for n in pipe.nodes if "ablation_evaluate" in n.tags]


# ------------------------------------------------------------------------------------------------ structure
@pytest.mark.parametrize("name", sorted(STUDY_PIPELINES))
def test_six_rows_four_trainings_one_report(name: str) -> None:
    dataset = name.removeprefix("ablation_")
    pipe = _study(name)
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
    pipe = _study("ablation_cityscapes")

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
    both = pipe + _study("ablation_coco")
    assert len(both.nodes) == 24


@pytest.mark.parametrize("name", sorted(STUDY_PIPELINES))
def test_conf_resolves_every_row(name: str, conf_params: dict[str, Any], catalog: DataCatalog) -> None:
    study = conf_params[name]
    ablation.validate_study(study, name)
    pipe = _study(name)
    ingested = f"{name.removeprefix('ablation_')}_ingested"
    for ds in pipe.datasets():
        if ds.startswith("params:"):
            assert ds == f"params:{name}"
        else:
            entry = resolved(catalog, ds)
            assert entry and entry["filepath"], f"{ds} matches no entry or factory of conf/base/catalog.yml"
            folder = "03_primary" if ds == ingested else "06_models" if "_model_" in ds else "08_reporting"
            assert entry["filepath"].startswith(f"data/{folder}/"), (ds, entry)
            assert ds == ingested or entry["filepath"].startswith(f"data/{folder}/{name}/"), (ds, entry)
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
    seeds = ablation.study_seeds(study, name)
    assert seeds == [0, 1, 2] and ablation.confidence_level(study, name) == 0.95
    models_dir = study["outputs"]["models_dir"]
    for model in ablation.study_models(study):
        for seed in seeds:
            params = ablation.training_params(study, model, name, seed=seed)
            assert params["output_dir"] == f"{models_dir}/{model}/seed{seed}"
            assert params["trainer"]["checkpoint_dir"] == f"{models_dir}/{model}/seed{seed}/checkpoints"
            assert params["trainer"]["seed"] == seed and params["trainer"]["deterministic"] is True
            for key, value in study["models"][model].items():
                assert params["model"][key] == value
    ev = ablation.evaluation_params(study, "C1", name, seed=2)
    assert ev["predictions_dir"] == f"{study['outputs']['predictions_dir']}/C1/seed2"
    assert ev["metrics_path"] == f"{study['outputs']['report_dir']}/rows/C1/seed2/metrics.json"
    assert ablation.variant_dir(study, "C1", 2).as_posix() == f"{models_dir}/variants/C1/seed2"


@pytest.mark.parametrize("name", sorted(STUDY_PIPELINES))
def test_every_row_states_its_thresholds_and_both_paths_see_the_same_detections(
    name: str, conf_params: dict[str, Any]
) -> None:
    """No confound from the inference thresholds: each row sets every threshold of its inference, and the
    argmax rows keep the detections the heuristic rows keep (one score threshold)."""
    study = conf_params[name]
    scores = set()
    for row in ablation.study_rows(study):
        cfg = ablation.row_model_config(study, row, name)
        thresholds = ablation.row_thresholds(cfg)
        assert set(thresholds) == set(ablation.ROW_THRESHOLDS[cfg.inference]), row
        assert set(thresholds) <= set(study["rows"][row]), f"{row}: a threshold is left to the default"
        scores.add(cfg.panoptic_min_score if cfg.inference == "argmax" else cfg.heuristic_score_thresh)
    assert scores == {0.5}, scores
    # a row without one of its thresholds is an error naming the row and the key
    bad = json.loads(json.dumps(study))
    del bad["rows"]["D1"]["heuristic_overlap_thresh"]
    with pytest.raises(ValueError, match=r"rows\.D1: state the thresholds .*heuristic_overlap_thresh"):
        ablation.validate_study(bad, name)
    bad = json.loads(json.dumps(study))
    del bad["rows"]["B"]["panoptic_min_score"]
    with pytest.raises(ValueError, match=r"rows\.B: state the thresholds .*panoptic_min_score"):
        ablation.validate_study(bad, name)


def test_seeds_parameter(conf_params: dict[str, Any]) -> None:
    study = json.loads(json.dumps(conf_params["ablation_cityscapes"]))
    for given, expected in (([4, 1], [4, 1]), (1, [0]), (3, [0, 1, 2])):
        study["seeds"] = given
        assert ablation.study_seeds(study) == expected
        ablation.validate_study(study, "ablation_cityscapes")
    del study["seeds"]
    assert ablation.study_seeds(study) == list(ablation.DEFAULT_SEEDS) == [0, 1, 2]
    for bad in ([], [0, 0], [-1], 0, "0", [1.5], True):
        study["seeds"] = bad
        with pytest.raises(ValueError, match=r"ablation_cityscapes\.seeds must be"):
            ablation.validate_study(study, "ablation_cityscapes")
    study["seeds"] = [0]
    study["base"]["trainer"]["seed"] = 0
    with pytest.raises(ValueError, match=r"base\.trainer\.seed: each model is trained once per seed"):
        ablation.validate_study(study, "ablation_cityscapes")
    del study["base"]["trainer"]["seed"]
    study["confidence"] = 1.0
    with pytest.raises(ValueError, match=r"confidence must be a number in \(0, 1\)"):
        ablation.validate_study(study, "ablation_cityscapes")


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
        ablation.training_params(bad, "B", "ablation_cityscapes", seed=0)
    bad = json.loads(json.dumps(study))
    del bad["models"]["Dgt"]  # a supplementary row without its model
    with pytest.raises(ValueError, match="D2gt and its model Dgt together"):
        ablation.validate_study(bad, "ablation_cityscapes")
    del bad["rows"]["D2gt"]  # neither: the study is Table 1 alone
    ablation.validate_study(bad, "ablation_cityscapes")
    with pytest.raises(ValueError, match=r"no model 'Dgt'"):
        ablation.training_params(bad, "Dgt", "ablation_cityscapes", seed=0)


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
    cfg = ablation.PAPER_TABLE1["D2" if row == "D2gt" else row]  # D2gt: D2's switches, GT detections
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


def test_mean_interval_is_students_t() -> None:
    iv = ablation.mean_interval([1.0, 2.0, 3.0, None, float("nan")], 0.95)  # None / NaN left out
    t = 0.95 / math.sqrt(2 * 0.975 * 0.025)  # t_{0.975} with 2 degrees of freedom, in closed form
    assert (iv.n, iv.mean, iv.std) == (3, 2.0, 1.0)
    assert iv.low == pytest.approx(2.0 - t / 3**0.5, rel=1e-12)
    assert iv.high == pytest.approx(2.0 + t / 3**0.5, rel=1e-12)
    assert iv.half_width == pytest.approx(t / 3**0.5, rel=1e-12)
    wider = ablation.mean_interval([1.0, 2.0, 3.0], 0.99)
    assert wider.low < iv.low and wider.high > iv.high
    one = ablation.mean_interval([0.4])
    assert (one.n, one.mean, one.std, one.low, one.high) == (1, 0.4, None, None, None)
    assert ablation.mean_interval([None]).mean is None
    means, intervals = ablation.aggregate_seeds({0: {"pq": 0.3, "ap_mask": None}, 1: {"pq": 0.5}})
    assert means == {"pq": pytest.approx(0.4)} and intervals["pq"]["n"] == 2
    t1 = math.tan(math.pi * (0.975 - 0.5))  # t_{0.975} with 1 degree of freedom: the Cauchy quantile
    # sd = 0.1 * sqrt(2), standard error sd / sqrt(2) = 0.1
    assert intervals["pq"]["low"] == pytest.approx(0.4 - t1 * 0.1, rel=1e-9)


def _seeded(row: str, pqs: dict[int, float | None], **metrics: float) -> dict[str, Any]:
    res = _result(row, None)
    res["seeds"] = [{"seed": s, "metrics": {**res["metrics"], "pq": pq, **metrics}} for s, pq in pqs.items()]
    return res


def test_claims_from_paired_differences_with_intervals() -> None:
    # B-A: +1.0 +/- tiny on every seed -> holds; C2-A: -3 +/- small -> reversed; D2-C2: +-5 -> within noise;
    # D1-C1: C1 lacks seed 2, pairs on 0 and 1 only; D2-D1: only seed 0 has both PQs -> one seed
    results = [
        _seeded("A", {0: 0.40, 1: 0.50, 2: 0.45}),
        _seeded("B", {0: 0.41, 1: 0.511, 2: 0.459}),
        _seeded("C2", {0: 0.37, 1: 0.46, 2: 0.425}),
        _seeded("C1", {0: 0.30, 1: 0.30}),
        _seeded("D1", {0: 0.35, 1: 0.31, 2: 0.90}),
        _seeded("D2", {0: 0.42, 1: None, 2: None}),
    ]
    claims = {c["key"]: c for c in ablation.claims_observed(results, 0.95)}
    assert [c.key for c in ablation.CLAIMS] == list(claims)
    b = claims["B_over_A"]
    assert b["deltas"] == {"0": pytest.approx(1.0), "1": pytest.approx(1.1), "2": pytest.approx(0.9)}
    assert b["delta"] == pytest.approx(1.0) and b["delta_low"] > 0 and b["observed"] == "holds"
    iv = ablation.mean_interval([1.0, 1.1, 0.9])
    assert (b["delta_low"], b["delta_high"]) == (
        pytest.approx(iv.low, abs=1e-3),
        pytest.approx(iv.high, abs=1e-3),
    )
    assert claims["C2_over_A"]["observed"] == "reversed" and claims["C2_over_A"]["delta_high"] < 0
    d2c2 = claims["D2_over_C2"]
    assert d2c2["n_seeds"] == 1 and d2c2["observed"] == "one seed: no interval"
    d1c1 = claims["D1_over_C1"]
    assert d1c1["n_seeds"] == 2 and d1c1["deltas"] == {"0": pytest.approx(5.0), "1": pytest.approx(1.0)}
    assert d1c1["delta_low"] < 0 < d1c1["delta_high"] and d1c1["observed"] == "within noise"
    assert claims["D2_over_D1"]["paper_delta"] == 0.8
    no_rows = ablation.claims_observed([_seeded("A", {0: 0.4})])
    assert {c["observed"] for c in no_rows} == {"undefined"}
    # the tables and the report show the same numbers
    intervals = ablation.interval_table(results).set_index("Model")
    assert list(intervals.index) == ["A", "B", "C1", "C2", "D1", "D2"]
    a = ablation.mean_interval([40.0, 50.0, 45.0])
    assert intervals.loc["A", "PQ all"] == pytest.approx(45.0)
    assert intervals.loc["A", "PQ all sd"] == pytest.approx(a.std, abs=1e-3)
    assert intervals.loc["A", "PQ all low"] == pytest.approx(a.low, abs=1e-3)
    assert intervals.loc["C1", "seeds"] == 2 and pd.isna(intervals.loc["D2", "PQ all low"])
    seeds = ablation.seed_table(results)
    assert len(seeds) == 3 + 3 + 2 + 3 + 3 + 3 and set(seeds["seed"]) == {0, 1, 2}
    assert seeds.set_index(["Model", "seed"]).loc[("B", 1), "PQ all"] == pytest.approx(51.1)
    md = ablation.report_markdown(results, list(claims.values()), title="t")
    assert f"| 45.0 ± {a.half_width:.1f}" in md and "54.6" in md and "✓" in md
    assert "holds" in md and "reversed" in md and "within noise" in md and "[" in md


def test_supplementary_claim_judged_only_with_both_rows() -> None:
    # D2 vs D2gt (supplementary Table C): paired per seed like Table 1's claims, no paper figure
    table1 = [_seeded(r, {0: 0.40, 1: 0.45, 2: 0.50}) for r in ablation.ROWS]
    assert [c["key"] for c in ablation.claims_observed(table1)] == [c.key for c in ablation.CLAIMS]
    d2gt = _seeded("D2gt", {0: 0.37, 1: 0.43, 2: 0.46})
    claims = ablation.claims_observed([*table1, d2gt])
    assert [c["key"] for c in claims] == [*(c.key for c in ablation.CLAIMS), "D2_over_D2gt"]
    supp = claims[-1]
    assert supp["deltas"] == {"0": pytest.approx(3.0), "1": pytest.approx(2.0), "2": pytest.approx(4.0)}
    assert supp["paper_delta"] is None and supp["observed"] == "holds" and supp["delta_low"] > 0
    md = ablation.report_markdown([*table1, d2gt], claims, title="t")
    cells = next([c.strip() for c in x.split("|")] for x in md.splitlines() if x.startswith("| D2 over D2gt"))
    assert cells[3] == "—" and float(cells[4]) == 3.0 and cells[-2] == "holds"  # no paper ΔPQ for Table C
    # a study without the row (COCO) does not judge it
    assert "D2_over_D2gt" not in {c.key for c in ablation.study_claims(ablation.ROWS)}


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
    for name in STUDY_PIPELINES:
        dataset = name.removeprefix("ablation_")
        study = create_study(dataset, f"{dataset}_ingested", supplementary=SUPPLEMENTARY[name])
        assert {n.name for n in registered[name].nodes} == {n.name for n in study.nodes}
        assert registered[name].inputs() == {f"{dataset}_ingested", f"params:{name}"}
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


def _role(runs: list[Any], role: str) -> list[Any]:
    return [r for r in runs if r.data.tags.get("ablation_role") == role]


def test_tiny_study_nested_runs(tiny_study: Path, client: MlflowClient) -> None:
    exp = client.get_experiment_by_name("unipan")
    parents = client.search_runs([exp.experiment_id], filter_string="tags.ablation_role = 'study'")
    assert len(parents) == 1, "one `kedro run` = one parent run"
    parent = parents[0]
    assert parent.data.tags["ablation_study"] == "cityscapes"
    children = _children(client, parent)
    n_seeds = len(TINY_SEEDS)
    models = {(r.data.tags["ablation_model"], int(r.data.tags["seed"])): r for r in _role(children, "model")}
    per_seed = {(r.data.tags["row"], int(r.data.tags["seed"])): r for r in _role(children, "row_seed")}
    aggregates = {r.data.tags["row"]: r for r in _role(children, "row")}
    # one child per model and seed, one per row and seed, one aggregate per row; nothing else
    assert sorted(models) == sorted((m, s) for m in CITYSCAPES_MODELS for s in TINY_SEEDS)
    assert sorted(per_seed) == sorted((r, s) for r in CITYSCAPES_ROWS for s in TINY_SEEDS)
    assert sorted(aggregates) == sorted(CITYSCAPES_ROWS)
    assert len(children) == (len(CITYSCAPES_MODELS) + len(CITYSCAPES_ROWS)) * n_seeds + len(CITYSCAPES_ROWS)
    for (model, seed), run in models.items():
        assert "train/loss" in run.data.metrics, model
        assert run.data.params["resolved.trainer.seed"] == str(seed), model
        assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"bundle"}
    for (row, seed), run in per_seed.items():
        assert run.info.run_name == f"{row} seed{seed}" and run.info.status == "FINISHED"
        expected = {f: "true" if _paper(row)[f] else "false" for f in ablation.FLAGS}
        assert {f: run.data.tags[f] for f in ablation.FLAGS} == expected, row
        assert set(EVAL_METRICS) <= set(run.data.metrics), row
        assert ("ap_mask" in run.data.metrics) == _paper(row)["msk"], row
        # the ModelConfig the row was evaluated with (its inference and thresholds), and its training
        assert run.data.params["model.inference"] == ("heuristic" if expected["heu"] == "true" else "argmax")
        assert run.data.params["model.use_masks"] == str(_paper(row)["msk"])
        assert run.data.params["model.use_affinity"] == str(_paper(row)["aff"])
        assert run.data.params["model.train_end_to_end"] == str(_paper(row)["e2e"])
        assert run.data.params["model.train_detections"] == ("ground_truth" if row == "D2gt" else "predicted")
        score = "panoptic_min_score" if expected["amx"] == "true" else "heuristic_score_thresh"
        assert run.data.params[f"model.{score}"] == "0.5", row
        assert run.data.tags["ablation_train_run_id"] == models[(ablation.ROW_MODEL[row], seed)].info.run_id
    # shared models: C1/C2 and D1/D2 of one seed evaluate the same training run
    for seed in TINY_SEEDS:
        for a, b in (("C1", "C2"), ("D1", "D2")):
            tag = "ablation_train_run_id"
            assert per_seed[(a, seed)].data.tags[tag] == per_seed[(b, seed)].data.tags[tag]
    # each aggregate holds the mean, sd and interval over its row's seed runs
    for row, run in aggregates.items():
        assert run.info.run_name == row and run.data.tags["seeds"] == ",".join(map(str, TINY_SEEDS))
        seed_runs = [per_seed[(row, s)] for s in TINY_SEEDS]
        assert run.data.tags["ablation_seed_run_ids"].split(",") == [r.info.run_id for r in seed_runs]
        assert run.data.metrics["n_seeds"] == n_seeds
        for key in ("pq", "pq_th", "miou"):
            iv = ablation.mean_interval([r.data.metrics[key] for r in seed_runs])
            assert run.data.metrics[key] == pytest.approx(iv.mean, rel=1e-9), (row, key)
            assert run.data.metrics[f"{key}/sd"] == pytest.approx(iv.std, rel=1e-9, abs=1e-12), (row, key)
            assert run.data.metrics[f"{key}/ci_low"] == pytest.approx(iv.low, rel=1e-9, abs=1e-12)
            assert run.data.metrics[f"{key}/ci_high"] == pytest.approx(iv.high, rel=1e-9, abs=1e-12)
    # the parent holds the tables, the paper's table and the claims
    arts = {a.path for a in client.list_artifacts(parent.info.run_id, "ablation")}
    files = ("table.csv", "table.md", "paper_table1.csv", "metrics.json", "claims.json")
    assert arts == {f"ablation/{f}" for f in (*files, "table_seeds.csv", "table_intervals.csv")}
    claim_tags = {k for k in parent.data.tags if k.startswith("claim.")}
    assert claim_tags == {f"claim.{c.key}" for c in ablation.study_claims(CITYSCAPES_ROWS)}
    assert "claim.D2_over_D2gt" in claim_tags  # the supplementary claim, with its two rows in the study
    verdicts = {"holds", "reversed", "within noise", "undefined"}
    assert {parent.data.tags[t] for t in claim_tags} <= verdicts


def test_tiny_study_tables_intervals_and_claims(tiny_study: Path) -> None:
    report = tiny_study / "data/08_reporting/ablation_cityscapes"
    measured = {
        (row, seed): json.loads((report / "rows" / row / f"seed{seed}" / "metrics.json").read_text())
        for row in CITYSCAPES_ROWS
        for seed in TINY_SEEDS
    }
    # one line per row and seed, the seed's own evaluation
    seeds = pd.read_csv(report / "table_seeds.csv").set_index(["Model", "seed"])
    assert sorted(seeds.index) == sorted(measured)
    for key, values in measured.items():
        assert seeds.loc[key, "PQ all"] == pytest.approx(100 * values["pq"], abs=0.006)
    # Table 1 of the means, with Table 1's columns (as before the seeds)
    table = pd.read_csv(report / "table.csv")
    assert list(table.columns) == list(ablation.TABLE_COLUMNS)
    assert list(table["Model"]) == CITYSCAPES_ROWS
    intervals = pd.read_csv(report / "table_intervals.csv").set_index("Model")
    for row in CITYSCAPES_ROWS:
        for title, key in (("PQ all", "pq"), ("IoU", "miou")):
            iv = ablation.mean_interval([100 * measured[(row, s)][key] for s in TINY_SEEDS])
            assert table.set_index("Model").loc[row, title] == pytest.approx(iv.mean, abs=0.006)
            got = intervals.loc[row]
            assert got["seeds"] == len(TINY_SEEDS)
            assert got[title] == pytest.approx(iv.mean, abs=1e-3)
            assert got[f"{title} sd"] == pytest.approx(iv.std, abs=1e-3)
            assert got[f"{title} low"] == pytest.approx(iv.low, abs=1e-3)
            assert got[f"{title} high"] == pytest.approx(iv.high, abs=1e-3)
        assert bool(intervals.loc[row, "heu"]) == _paper(row)["heu"]
    metrics = json.loads((report / "metrics.json").read_text())
    assert set(metrics) == set(CITYSCAPES_ROWS)
    assert all(set(v) == {k for _, k in ablation.METRIC_COLUMNS} for v in metrics.values())
    # the claims: paired differences per seed, their interval and the verdict it implies
    claims = json.loads((report / "claims.json").read_text())
    assert [c["key"] for c in claims] == [c.key for c in ablation.study_claims(CITYSCAPES_ROWS)]
    assert claims[-1]["key"] == "D2_over_D2gt" and claims[-1]["paper_delta"] is None
    for c in claims:
        better, worse = c["claim"].split(" over ")
        deltas = [100 * (measured[(better, s)]["pq"] - measured[(worse, s)]["pq"]) for s in TINY_SEEDS]
        assert [c["deltas"][str(s)] for s in TINY_SEEDS] == pytest.approx(deltas, abs=1e-3)
        iv = ablation.mean_interval(deltas)
        assert (c["delta"], c["delta_low"], c["delta_high"]) == (
            pytest.approx(iv.mean, abs=1e-3),
            pytest.approx(iv.low, abs=1e-3),
            pytest.approx(iv.high, abs=1e-3),
        )
        assert c["observed"] == ablation.observe(iv)
    md = (report / "table.md").read_text()
    assert "Paper, Table 1" in md and "61.4" in md and "Student-t" in md and "PQ all per seed" in md
    assert "panoptic_min_score" in md and all(c["observed"] in md for c in claims)
    # every row of every seed evaluates a variant bundle with the row's thresholds on the seed's weights
    models = tiny_study / "data/06_models/ablation_cityscapes"
    assert sorted(p.name for p in models.iterdir()) == sorted([*CITYSCAPES_MODELS, "variants"])
    for row in CITYSCAPES_ROWS:
        model = ablation.ROW_MODEL[row]
        for seed in TINY_SEEDS:
            variant, trained = models / "variants" / row / f"seed{seed}", models / model / f"seed{seed}"
            assert (variant / "model.pt").read_bytes() == (trained / "model.pt").read_bytes()
            config = json.loads((variant / "model_config.json").read_text())
            assert config["inference"] == ("heuristic" if _paper(row)["heu"] else "argmax")
            assert json.loads((trained / "model_config.json").read_text())["inference"] == "argmax"
    # the seed controls the training: two seeds, two sets of weights
    for model in CITYSCAPES_MODELS:
        a, b = (torch.load(models / model / f"seed{s}" / "model.pt", weights_only=True) for s in TINY_SEEDS)
        assert any(not torch.equal(a[k], b[k]) for k in a), model


def test_single_row_rerun_with_namespaces(tiny_study: Path, client: MlflowClient) -> None:
    """``--namespaces=C1`` evaluates row C1 from the saved model C (no training) under a new parent run:
    one child per seed and the aggregate."""
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
    got = sorted(
        (r.data.tags["ablation_role"], r.data.tags.get("row"), r.data.tags.get("seed")) for r in children
    )
    assert got == sorted([("row", "C1", None), *(("row_seed", "C1", str(s)) for s in TINY_SEEDS)])


def test_quick_one_seed_preset_and_missing_seed(tiny_study: Path) -> None:
    """``--params=ablation_cityscapes.seeds=1`` (the quick look) evaluates seed 0 only; a seed the saved model
    was not trained with is a clear error."""
    params = json.loads(json.dumps(TINY_PARAMS))
    params["ablation_cityscapes"]["seeds"] = 1
    run_kedro(tiny_study, ["ablation_cityscapes"], params, namespaces=["D1"])
    row = json.loads((tiny_study / "data/08_reporting/ablation_cityscapes/rows/D1.json").read_text())
    assert [s["seed"] for s in row["seeds"]] == [0] and row["intervals"]["pq"]["low"] is None
    params["ablation_cityscapes"]["seeds"] = [7]
    with pytest.raises(Exception, match=r"has no seed 7 \(seeds: \['0', '1'\]\)"):
        run_kedro(tiny_study, ["ablation_cityscapes"], params, namespaces=["D1"])


def test_affinity_table_pairs_argmax_p_with_argmax_psi_of_the_same_weights() -> None:
    """Rows evaluated with argmax(P) carry argmax(Psi)'s PQ of the same weights: the report pairs them per
    seed ("D2 without the affinity at test"); rows without those metrics (heuristic, no affinity) are left
    out."""

    def with_psi(row: str, pairs: dict[int, tuple[float, float]], cells: float) -> dict[str, Any]:
        res = _seeded(row, {s: p for s, (p, _) in pairs.items()})
        for entry in res["seeds"]:
            p, psi = pairs[entry["seed"]]
            entry["metrics"].update(
                {
                    "pq_th": p - 0.1,
                    "pq_without_affinity": psi,
                    "pq_th_without_affinity": psi - 0.12,
                    "affinity/cells_changed": cells,
                    "affinity/thing_cells_changed": 3 * cells,
                    "affinity/relative_change": 0.1,
                }
            )
        return res

    results = [
        _seeded("A", {0: 0.40, 1: 0.50, 2: 0.45}),
        with_psi("D2", {0: (0.42, 0.40), 1: (0.50, 0.47), 2: (0.45, 0.44)}, cells=0.02),
        _seeded("D1", {0: 0.35, 1: 0.31, 2: 0.30}),
    ]
    table = ablation.affinity_table(results).set_index("Model")
    assert list(table.index) == ["D2"]
    d2 = table.loc["D2"]
    iv = ablation.mean_interval([2.0, 3.0, 1.0])
    assert d2["ΔPQ"] == pytest.approx(iv.mean, abs=1e-3) and d2["ΔPQ low"] == pytest.approx(iv.low, abs=1e-3)
    assert d2["ΔPQ observed"] == ablation.observe(iv) == "within noise"
    th = ablation.mean_interval([4.0, 5.0, 3.0])
    assert d2["ΔPQ th"] == pytest.approx(th.mean, abs=1e-3) and d2["ΔPQ th observed"] == "holds"
    assert d2["PQ argmax(Psi)"] == pytest.approx(100 * (0.40 + 0.47 + 0.44) / 3, abs=1e-3)
    assert d2["cells changed %"] == pytest.approx(2.0) and d2["thing cells changed %"] == pytest.approx(6.0)
    md = ablation.report_markdown(results, ablation.claims_observed(results), title="t")
    assert "The affinity at test" in md and f"{th.mean:.2f} [{th.low:.2f}, {th.high:.2f}] holds" in md
    assert "The affinity at test" not in ablation.report_markdown(results[:1], [], title="t")
