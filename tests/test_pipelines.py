"""Pipeline structure: the registry, the default (demo) pipeline's wiring and namespacing, parameters that
resolve in conf/base, catalog entries for every persisted dataset, the paper's values in the Cityscapes and
COCO configurations."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from kedro.config import OmegaConfigLoader
from kedro.framework.project import configure_project
from kedro.pipeline import Pipeline

from unipan_pipeline.data import TransformConfig
from unipan_pipeline.experiment.common import check_keys
from unipan_pipeline.experiment.evaluate import EVAL_KEYS, EVAL_REQUIRED
from unipan_pipeline.experiment.predict import PREDICT_KEYS
from unipan_pipeline.experiment.train import TrainParams
from unipan_pipeline.model import ModelConfig
from unipan_pipeline.params import from_params
from unipan_pipeline.pipeline_registry import register_pipelines
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
    "predict",
}


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


def test_registry_lists_every_pipeline(pipelines: dict[str, Pipeline]) -> None:
    assert set(pipelines) >= EXPECTED  # other helpers add pipelines (ablations); these must be there
    folders = {
        p.name for p in (ROOT / "src/unipan_pipeline/pipelines").iterdir() if (p / "__init__.py").is_file()
    }
    assert folders <= set(pipelines), f"pipeline folders not registered: {folders - set(pipelines)}"
    assert pipelines["__default__"] is pipelines["demo"]


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
    assert nodes["demo.train_model"].inputs == ["cityscapes_ingested", "params:demo"]
    assert nodes["demo.train_model"].outputs == [
        "demo.cityscapes_model",
        "demo.cityscapes_train_curve",
        "demo.cityscapes_val_curve",
    ]
    assert nodes["demo.evaluate_model"].inputs == ["demo.cityscapes_model", "params:demo.evaluation"]
    assert nodes["demo.register_model"].inputs == [
        "demo.cityscapes_model",
        "demo.cityscapes_evaluation",
        "params:demo.evaluation",
    ]
    free = {i for i in default.inputs() if not i.startswith("params:")}
    assert free == set(), f"the default pipeline must not need external data, needs {free}"
    # the demo steps are exactly the Cityscapes pipelines with remapped parameters
    assert len(pipelines["demo_train"].nodes) == len(pipelines["train_cityscapes"].nodes)
    assert pipelines["demo_train"].inputs() == {"cityscapes_ingested", "params:demo"}
    assert pipelines["train_cityscapes"].inputs() == {"cityscapes_ingested", "params:train_cityscapes"}
    assert pipelines["demo_evaluate"].inputs() == {"demo.cityscapes_model", "params:demo.evaluation"}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_params_resolve_and_datasets_are_in_the_catalog(
    name: str, pipelines: dict[str, Pipeline], parameters: dict[str, Any], conf: OmegaConfigLoader
) -> None:
    catalog = conf["catalog"]
    pipe = pipelines[name]
    for ds in pipe.datasets():
        if ds.startswith("params:"):
            _lookup(parameters, ds[len("params:") :])
        else:
            assert ds in catalog, f"{name}: dataset {ds!r} has no entry in conf/base/catalog*.yml"


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
