"""Pipeline structure: the registry (every pipeline name of the command line), the stages composed per data
set, the default (demo) pipeline's wiring and namespacing, parameters that resolve in conf/base, every
dataset resolving through the catalog (its factories) to its file, the paper's values in the Cityscapes and
COCO configurations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from kedro.config import OmegaConfigLoader
from kedro.framework.project import configure_project
from kedro.io import DataCatalog
from kedro.pipeline import Pipeline
from kedro_project import project_catalog, resolved

from unipan_pipeline import ablation
from unipan_pipeline.data import TransformConfig
from unipan_pipeline.experiment.common import check_keys
from unipan_pipeline.experiment.evaluate import EVAL_KEYS, EVAL_REQUIRED
from unipan_pipeline.experiment.predict import PREDICT_KEYS
from unipan_pipeline.experiment.train import TrainParams
from unipan_pipeline.model import ModelConfig
from unipan_pipeline.params import from_params
from unipan_pipeline.pipeline_registry import register_pipelines
from unipan_pipeline.pipelines import ingest
from unipan_pipeline.training import TrainerConfig

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = {
    "__default__",
    "demo",
    "demo_train",
    "demo_evaluate",
    "generate_synthetic",
    "ingest_cityscapes",
    "ingest_coco",
    "train_cityscapes",
    "evaluate_cityscapes",
    "train_coco",
    "evaluate_coco",
    "ablation_cityscapes",
    "ablation_coco",
    "robustness_cityscapes",
    "predict",
}
"""Every pipeline name users type (``kedro run --pipelines=...``, DVC, the README)."""


def _ablation_paths(dataset: str, models: list[str], rows: list[str]) -> dict[str, str]:
    models_dir, report = f"data/06_models/ablation_{dataset}", f"data/08_reporting/ablation_{dataset}"
    return {
        **{f"ablation_{dataset}_model_{m}": f"{models_dir}/{m}/model.json" for m in models},
        **{f"ablation_{dataset}_row_{r}": f"{report}/rows/{r}.json" for r in rows},
        f"ablation_{dataset}_table": f"{report}/table.csv",
        f"ablation_{dataset}_paper_table": f"{report}/paper_table1.csv",
        f"ablation_{dataset}_table_md": f"{report}/table.md",
        f"ablation_{dataset}_metrics": f"{report}/metrics.json",
        f"ablation_{dataset}_claims": f"{report}/claims.json",
        f"ablation_{dataset}_table_seeds": f"{report}/table_seeds.csv",
        f"ablation_{dataset}_table_intervals": f"{report}/table_intervals.csv",
    }


PATHS: dict[str, str] = {
    "synthetic_cityscapes_manifest": "data/01_raw/synthetic_cityscapes_manifest.json",
    "cityscapes_ingested": "data/03_primary/cityscapes_ingested.json",
    "coco_ingested": "data/03_primary/coco_ingested.json",
    "cityscapes.model": "data/06_models/cityscapes/model.json",
    "cityscapes.train_curve": "data/08_reporting/cityscapes/train_curve.csv",
    "cityscapes.val_curve": "data/08_reporting/cityscapes/val_curve.csv",
    "cityscapes.evaluation": "data/08_reporting/cityscapes/evaluation.json",
    "cityscapes.registration": "data/08_reporting/cityscapes/registration.json",
    "robustness_cityscapes_table": "data/08_reporting/robustness_cityscapes/table.csv",
    "robustness_cityscapes_table_md": "data/08_reporting/robustness_cityscapes/table.md",
    "robustness_cityscapes_summary": "data/08_reporting/robustness_cityscapes/summary.json",
    "coco.model": "data/06_models/coco/model.json",
    "coco.train_curve": "data/08_reporting/coco/train_curve.csv",
    "coco.val_curve": "data/08_reporting/coco/val_curve.csv",
    "coco.evaluation": "data/08_reporting/coco/evaluation.json",
    "coco.registration": "data/08_reporting/coco/registration.json",
    "demo.model": "data/06_models/demo/model.json",
    "demo.train_curve": "data/08_reporting/demo/train_curve.csv",
    "demo.val_curve": "data/08_reporting/demo/val_curve.csv",
    "demo.evaluation": "data/08_reporting/demo/evaluation.json",
    "demo.registration": "data/08_reporting/demo/registration.json",
    "predict_summary": "data/07_model_output/predict_summary.json",
    **_ablation_paths("cityscapes", ["A", "B", "C", "D", "Dgt"], [*ablation.ROWS, "D2gt"]),
    **_ablation_paths("coco", ["A", "B", "C", "D"], list(ablation.ROWS)),
}
"""Every dataset of every registered pipeline -> its file, as before the stages were composed per data set
(dvc.yaml's outs, the README and users' data depend on these paths)."""
DATASET_TYPE = {"json": "JSONDataset", "csv": "CSVDataset", "md": "TextDataset"}
LAYER_OF_FOLDER = {"01": "raw", "03": "primary", "06": "models", "07": "model_output", "08": "reporting"}


@pytest.fixture(scope="module")
def pipelines() -> dict[str, Pipeline]:
    configure_project("unipan_pipeline")
    return register_pipelines()


@pytest.fixture(scope="module")
def conf() -> OmegaConfigLoader:
    return OmegaConfigLoader(str(ROOT / "conf"), base_env="base", default_run_env="local")


@pytest.fixture(scope="module")
def parameters(conf: OmegaConfigLoader) -> dict[str, Any]:
    return conf["parameters"]


def _lookup(params: dict[str, Any], dotted: str) -> Any:
    node: Any = params
    for part in dotted.split("."):
        assert isinstance(node, dict) and part in node, f"parameter {dotted!r} is not in conf/base"
        node = node[part]
    return node


@pytest.fixture(scope="module")
def catalog() -> DataCatalog:
    return project_catalog()


def test_registry_lists_every_pipeline(pipelines: dict[str, Pipeline]) -> None:
    assert set(pipelines) == EXPECTED
    assert pipelines["__default__"] is pipelines["demo"]
    # every stage package of pipelines/ is used by a registered pipeline
    stages = {
        p.name for p in (ROOT / "src/unipan_pipeline/pipelines").iterdir() if (p / "__init__.py").is_file()
    }
    used = {n.func.__module__.split(".")[2] for pipe in pipelines.values() for n in pipe.nodes}
    assert (
        stages
        == used
        == {
            "generate_synthetic",
            "ingest",
            "train",
            "evaluate",
            "ablation",
            "robustness",
            "predict",
        }
    )


@pytest.mark.parametrize("dataset", ["cityscapes", "coco"])
def test_each_stage_is_one_pipeline_in_the_namespace_of_its_data_set(
    dataset: str, pipelines: dict[str, Pipeline]
) -> None:
    """``train_coco`` is the ``train`` stage in the namespace ``coco`` with ``params:train_coco``, ..."""
    ingested = f"{dataset}_ingested"
    assert pipelines[f"ingest_{dataset}"].inputs() == {f"params:ingest_{dataset}"}
    assert pipelines[f"ingest_{dataset}"].outputs() == {ingested}
    train = pipelines[f"train_{dataset}"]
    assert [n.name for n in train.nodes] == [f"{dataset}.train_model"]
    assert train.inputs() == {ingested, f"params:train_{dataset}"}
    assert train.outputs() == {f"{dataset}.model", f"{dataset}.train_curve", f"{dataset}.val_curve"}
    evaluate = pipelines[f"evaluate_{dataset}"]
    assert [n.name for n in evaluate.nodes] == [f"{dataset}.evaluate_model", f"{dataset}.register_model"]
    assert evaluate.inputs() == {f"{dataset}.model", f"params:evaluate_{dataset}"}
    assert evaluate.outputs() == {f"{dataset}.registration"}
    assert {n.namespace for p in (train, evaluate) for n in p.nodes} == {dataset}
    assert pipelines[f"ablation_{dataset}"].inputs() == {ingested, f"params:ablation_{dataset}"}
    # one function per stage, whatever the data set
    assert train.nodes[0].func is pipelines["demo_train"].nodes[0].func
    assert [n.func for n in evaluate.nodes] == [n.func for n in pipelines["demo_evaluate"].nodes]


def test_robustness_and_ingestion_stages(pipelines: dict[str, Pipeline]) -> None:
    """Once per data set, not namespaced: nodes and datasets keep the names of their pipeline."""
    robustness = pipelines["robustness_cityscapes"]
    assert robustness.inputs() == {"params:robustness_cityscapes"}
    assert [n.name for n in robustness.nodes] == ["measure_robustness_cityscapes"]
    for dataset in ("cityscapes", "coco"):
        assert [n.name for n in pipelines[f"ingest_{dataset}"].nodes] == [f"ingest_{dataset}"]
    coco, cityscapes = pipelines["ingest_coco"].nodes[0], pipelines["ingest_cityscapes"].nodes[0]
    assert coco.func is not cityscapes.func  # the two converters
    with pytest.raises(ValueError, match="no ingestion for data set 'kitti'"):
        ingest.create_pipeline("kitti")
    with pytest.raises(ValueError, match="generator writes Cityscapes"):
        ingest.create_pipeline("coco", after_generation=True)


def test_default_pipeline_wiring(pipelines: dict[str, Pipeline]) -> None:
    default = pipelines["__default__"]
    nodes = {n.name: n for n in default.nodes}
    assert [n.name for n in default.nodes] == [
        "generate_street_scenes",
        "ingest_cityscapes",
        "demo.train_model",
        "demo.evaluate_model",
        "demo.register_model",
    ]
    assert nodes["ingest_cityscapes"].inputs == ["synthetic_cityscapes_manifest", "params:ingest_cityscapes"]
    assert nodes["demo.train_model"].inputs == ["cityscapes_ingested", "params:demo"]
    assert nodes["demo.train_model"].outputs == ["demo.model", "demo.train_curve", "demo.val_curve"]
    assert nodes["demo.evaluate_model"].inputs == ["demo.model", "params:demo.evaluation"]
    assert nodes["demo.register_model"].inputs == ["demo.model", "demo.evaluation", "params:demo.evaluation"]
    free = {i for i in default.inputs() if not i.startswith("params:")}
    assert free == set(), f"the default pipeline must not need external data, needs {free}"
    # the demo steps are the stages of train_cityscapes / evaluate_cityscapes with the demo's parameters
    assert len(pipelines["demo_train"].nodes) == len(pipelines["train_cityscapes"].nodes)
    assert pipelines["demo_train"].inputs() == {"cityscapes_ingested", "params:demo"}
    assert pipelines["train_cityscapes"].inputs() == {"cityscapes_ingested", "params:train_cityscapes"}
    assert pipelines["demo_evaluate"].inputs() == {"demo.model", "params:demo.evaluation"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_params_resolve_and_datasets_are_in_the_catalog(
    name: str, pipelines: dict[str, Pipeline], parameters: dict[str, Any], catalog: DataCatalog
) -> None:
    """Every dataset of every pipeline resolves through conf/base/catalog.yml (an entry or a factory) to a
    file - nothing a pipeline writes stays in memory - and to the path it always had."""
    pipe = pipelines[name]
    for ds in pipe.datasets():
        if ds.startswith("params:"):
            _lookup(parameters, ds[len("params:") :])
            continue
        entry = resolved(catalog, ds)
        assert entry is not None, f"{name}: {ds!r} matches no entry or factory of conf/base/catalog.yml"
        assert ds in PATHS, f"{name}: {ds!r} is new; add its path to PATHS"
        assert entry["filepath"] == PATHS[ds], f"{name}: {ds} resolves to {entry['filepath']}"
        assert entry["type"] == DATASET_TYPE[PATHS[ds].rsplit(".", 1)[1]], (ds, entry)
        assert entry["layer"] == LAYER_OF_FOLDER[PATHS[ds].split("/")[1][:2]], (ds, entry)


def test_paths_cover_every_dataset_of_the_registry(pipelines: dict[str, Pipeline]) -> None:
    used = {ds for p in pipelines.values() for ds in p.datasets() if not ds.startswith("params:")}
    assert used == set(PATHS)
    assert len(set(PATHS.values())) == len(PATHS), "two datasets share a file"


@pytest.mark.parametrize("ns", ["train_cityscapes", "train_coco", "demo"])
def test_training_namespaces_parse(ns: str, parameters: dict[str, Any]) -> None:
    p = parameters[ns]
    spec = from_params(TrainParams, p, f"params:{ns}")
    model, trainer = spec.model, spec.trainer
    assert model == ModelConfig.from_dict(p["model"]) and trainer == TrainerConfig.from_dict(p["trainer"])
    TransformConfig.from_params(p["augment"], train=True)
    TransformConfig.from_params(p["augment_eval"], train=False)
    assert trainer.checkpoint_dir == f"{p['output_dir']}/checkpoints"
    assert p["output_dir"].startswith("data/06_models/")
    assert trainer.num_processes == 1 and model.use_affinity and model.train_end_to_end
    if ns == "demo":
        check_keys(p["evaluation"], "demo.evaluation", required=EVAL_REQUIRED, optional=EVAL_KEYS)


def test_paper_configurations(parameters: dict[str, Any]) -> None:
    """Sec. 4 of the paper (and Panoptic FPN's schedules it follows)."""
    for ns in ("train_cityscapes", "train_coco"):
        model = ModelConfig.from_dict(parameters[ns]["model"])
        assert (model.backbone_depth, model.pretrained, model.norm) == (50, "imagenet", "frozen_bn")
        assert model.semantic_head == "deformable"  # UPSNet's head with GroupNorm (sec. 3.2)
        assert TrainerConfig.from_dict(parameters[ns]["trainer"]).optimizer == "sgd"
    cs = parameters["train_cityscapes"]
    t = TrainerConfig.from_dict(cs["trainer"])
    m = ModelConfig.from_dict(cs["model"])
    a = TransformConfig.from_params(cs["augment"], train=True)
    assert (t.images_per_batch, t.iterations, t.lr, t.lr_steps, t.gamma) == (
        32,
        65000,
        0.01,
        [40000, 55000],
        0.1,
    )
    assert (m.loss_weight_det, m.loss_weight_sem, m.loss_weight_pan) == (0.25, 1.0, 1.0)
    assert a.scale_range == (0.5, 2.0) and a.crop_size == (512, 1024)
    co = parameters["train_coco"]
    t = TrainerConfig.from_dict(co["trainer"])
    m = ModelConfig.from_dict(co["model"])
    a = TransformConfig.from_params(co["augment"], train=True)
    assert (t.images_per_batch, t.iterations, t.lr, t.lr_steps) == (16, 200000, 0.02, [150000, 190000])
    assert (m.loss_weight_det, m.loss_weight_sem, m.loss_weight_pan) == (1.0, 0.2, 0.1)
    assert a.min_size_range == (640, 800) and a.max_size == 1333


def test_evaluation_and_predict_namespaces(parameters: dict[str, Any]) -> None:
    for ns in ("evaluate_cityscapes", "evaluate_coco"):
        check_keys(parameters[ns], ns, required=EVAL_REQUIRED, optional=EVAL_KEYS)
        assert parameters[ns]["register"]["alias"] == "champion"
    check_keys(
        parameters["predict"],
        "predict",
        required={"input_dir", "model_uri", "output_dir"},
        optional=PREDICT_KEYS,
    )
    assert parameters["predict"]["model_uri"] == "models:/unipan-cityscapes@champion"


def test_mlflow_conf(conf: OmegaConfigLoader) -> None:
    cfg = yaml.safe_load((ROOT / "conf" / "base" / "mlflow.yml").read_text())
    assert cfg["server"]["mlflow_tracking_uri"] == "sqlite:///mlflow.db"
    # MLflow default (./mlruns/<id> of the project root); a relative path makes kedro-mlflow log a rewrite
    assert cfg["tracking"]["experiment"]["create_experiment_kwargs"]["artifact_location"] is None
    disabled = set(cfg["tracking"]["disable_tracking"]["pipelines"])
    assert {"train_cityscapes", "train_coco", "demo_train", "__default__"}.isdisjoint(disabled)
    assert {"evaluate_cityscapes", "demo_evaluate", "predict"} <= disabled
