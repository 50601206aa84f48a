"""MLflow tracking helpers, on throw-away SQLite stores in tmp dirs (never the project's mlflow.db)."""

from __future__ import annotations

import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient
from PIL import Image
from toy_model import ToyModelConfig, build_toy_model, toy_categories

from unipan_pipeline.tracking import current_tracker, use_tracker
from unipan_pipeline.tracking.fake import FakeTracker
from unipan_pipeline.tracking.models import log_model_pyfunc
from unipan_pipeline.tracking.params import flatten_params, render_param
from unipan_pipeline.tracking.registry import register_and_promote, registered_model_name
from unipan_pipeline.tracking.runs import MlflowLogger, child_run, study_run
from unipan_pipeline.tracking.store import configure_tracking, tracking_uri_for

PROJECT_DB = Path(__file__).resolve().parents[1] / "mlflow.db"


@pytest.fixture(scope="module")
def empty_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An initialised (migrated) SQLite store, made once: creating the tables costs ~1 s each time."""
    root = tmp_path_factory.mktemp("template")
    MlflowClient(tracking_uri=tracking_uri_for(root)).search_experiments()
    return root / "mlflow.db"


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, empty_db: Path):
    """Project-like root in tmp with its own sqlite store; restores MLflow's global URIs afterwards."""
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(var, raising=False)
    db_before = PROJECT_DB.stat().st_mtime if PROJECT_DB.exists() else None
    old = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    shutil.copyfile(empty_db, tmp_path / "mlflow.db")
    exp_id = configure_tracking(tmp_path, "unit-tests")
    yield tmp_path, exp_id
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(old[0])
    mlflow.set_registry_uri(old[1])
    db_after = PROJECT_DB.stat().st_mtime if PROJECT_DB.exists() else None
    assert db_after == db_before, "a test touched the project's mlflow.db"


def test_configure_tracking_layout(store) -> None:
    root, exp_id = store
    assert mlflow.get_tracking_uri() == tracking_uri_for(root) == f"sqlite:///{root.resolve()}/mlflow.db"
    exp = MlflowClient().get_experiment(exp_id)
    assert exp.artifact_location == (root.resolve() / "mlruns" / "unit-tests").as_uri()
    assert (root / "mlflow.db").is_file()
    # idempotent: same experiment on a second call
    assert configure_tracking(root, "unit-tests") == exp_id


def test_flatten_and_truncate() -> None:
    flat = flatten_params({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": "x", "f": {}})
    assert flat == {"a.b": 1, "a.c.d": [1, 2], "e": "x", "f": "{}"}
    assert render_param([1, 2]) == "[1, 2]"
    long = render_param("y" * 1000, max_length=50)
    assert len(long) == 50 and long.endswith("...")
    assert len(render_param("z" * 10_000, max_length=10_000)) == 6000  # MLflow's own limit


def test_logger_params_metrics_and_rank(store, monkeypatch: pytest.MonkeyPatch) -> None:
    with mlflow.start_run() as run:
        logger = MlflowLogger(max_param_length=20)
        sent = logger.log_params({"trainer": {"lr": 0.01, "lr_steps": [40000, 55000]}, "note": "n" * 100})
        assert sent["trainer.lr_steps"] == "[40000, 55000]"
        for step in (1, 2, 3):
            logger.log_metrics({"train/loss": 1.0 / step}, step=step)
        # non-zero ranks are silent
        monkeypatch.setenv("RANK", "1")
        monkeypatch.setenv("WORLD_SIZE", "2")
        logger.log_metrics({"train/loss": 99.0}, step=4)
        assert logger.log_params({"other": 1}) == {}
        monkeypatch.delenv("RANK")
        monkeypatch.delenv("WORLD_SIZE")
        # pickles without its client (handed to DDP workers) and still logs into the same run
        clone = pickle.loads(pickle.dumps(logger))
        clone.log_metrics({"train/loss": 0.1}, step=5)
    client = MlflowClient()
    data = client.get_run(run.info.run_id).data
    assert data.params["trainer.lr"] == "0.01"
    assert data.params["note"] == "n" * 17 + "..."
    assert "other" not in data.params
    hist = client.get_metric_history(run.info.run_id, "train/loss")
    assert sorted((m.step, round(m.value, 6)) for m in hist) == [(1, 1.0), (2, 0.5), (3, 0.333333), (5, 0.1)]


def test_logger_requires_run(store) -> None:
    with pytest.raises(RuntimeError, match="no active MLflow run"):
        MlflowLogger()


def _fake_model_run(pq: float) -> str:
    with mlflow.start_run() as run:
        mlflow.log_metric("pq", pq)
        mlflow.pyfunc.log_model(name="model", python_model=_Constant(), pip_requirements=["mlflow"])
    return run.info.run_id


class _Constant(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        return model_input


def test_register_and_promote_moves_champion_only_on_better_pq(store) -> None:
    name = registered_model_name("toy")
    assert name == "unipan-toy"
    client = MlflowClient()

    first = register_and_promote(_fake_model_run(0.40), name, 0.40)
    assert first is not None and first.promoted and first.previous_champion is None
    assert client.get_model_version_by_alias(name, "champion").version == first.version

    better = register_and_promote(_fake_model_run(0.55), name, 0.55)
    assert better is not None and better.promoted
    assert better.previous_champion == first.version and better.previous_value == pytest.approx(0.40)
    assert client.get_model_version_by_alias(name, "champion").version == better.version

    worse = register_and_promote(_fake_model_run(0.50), name, 0.50)
    assert worse is not None and not worse.promoted
    champion = client.get_model_version_by_alias(name, "champion")
    assert champion.version == better.version
    assert float(champion.tags["pq"]) == pytest.approx(0.55)
    # the worse model is still registered, with its score
    assert float(client.get_model_version(name, worse.version).tags["pq"]) == pytest.approx(0.50)
    assert len(client.search_model_versions(f"name = '{name}'")) == 3

    with pytest.raises(ValueError, match="not a finite number"):
        register_and_promote("whatever", name, float("nan"))


def test_pyfunc_roundtrip_with_factory_path(store, tmp_path: Path) -> None:
    torch.manual_seed(0)
    cats = toy_categories()
    model_cfg = ToyModelConfig(width=4)
    model = build_toy_model(model_cfg, cats).eval()
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"format": 1, "iteration": 3, "model": model.state_dict()}, ckpt)

    with mlflow.start_run() as run:
        info = log_model_pyfunc(
            ckpt,
            model_cfg.to_dict(),
            cats,
            model_factory="toy_model:build_toy_model",
            config_factory="toy_model:ToyModelConfig.from_dict",
            registered_model_name="unipan-toy",
        )
    loaded = mlflow.pyfunc.load_model(info.model_uri)

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(12, 10, 3), dtype=np.uint8)
    (out,) = loaded.predict(pd.DataFrame({"image": [image]}))  # the logged signature: one row per image
    assert out["panoptic"].shape == (12, 10) and out["panoptic"].dtype == np.int32

    # same answer as running the model directly on the normalised image
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    x = (torch.from_numpy(image).permute(2, 0, 1).float() / 255.0 - mean) / std
    with torch.no_grad():
        ref = model([x])[0]
    np.testing.assert_array_equal(out["panoptic"], ref["panoptic"].numpy())
    assert [s["category_id"] for s in out["segments_info"]] == [
        s["category_id"] for s in ref["segments_info"]
    ]
    ids = set(np.unique(out["panoptic"]).tolist()) - {0}
    assert ids == {s["id"] for s in out["segments_info"]}
    assert all(s["category_id"] in cats for s in out["segments_info"])

    # a path works too; the unwrapped model takes plain arrays / paths, and a list gives a list
    path = tmp_path / "img.png"
    Image.fromarray(image).save(path)
    (by_path,) = loaded.predict(pd.DataFrame({"path": [str(path)]}))
    np.testing.assert_array_equal(by_path["panoptic"], out["panoptic"])
    unwrapped = loaded.unwrap_python_model()
    np.testing.assert_array_equal(unwrapped.predict(None, str(path))["panoptic"], out["panoptic"])
    assert len(unwrapped.predict(None, [image, str(path)])) == 2
    with pytest.raises(FileNotFoundError, match=r"missing\.png"):
        unwrapped.predict(None, str(tmp_path / "missing.png"))

    # registered under unipan-toy, and loadable through the registry
    assert MlflowClient().get_registered_model("unipan-toy").name == "unipan-toy"
    assert run.info.run_id


def test_pyfunc_with_eval_transform_returns_input_size(store, tmp_path: Path) -> None:
    pytest.importorskip("unipan_pipeline.data.transforms", reason="data transforms module not present")
    torch.manual_seed(0)
    cats = toy_categories()
    model = build_toy_model(ToyModelConfig(width=4), cats)
    ckpt = tmp_path / "sd.pt"
    torch.save(model.state_dict(), ckpt)  # a bare state_dict is accepted too
    with mlflow.start_run():
        info = log_model_pyfunc(
            ckpt,
            {"width": 4},
            cats.to_dict(),
            model_factory="toy_model:build_toy_model",
            config_factory="toy_model:ToyModelConfig.from_dict",
            eval_transform={"base_scale": 0.5},
        )
        with pytest.raises(ValueError, match="unknown augmentation parameter"):
            log_model_pyfunc(
                ckpt,
                {"width": 4},
                cats,
                model_factory="toy_model:build_toy_model",
                config_factory="toy_model:ToyModelConfig.from_dict",
                eval_transform={"base_scal": 0.5},
            )
    loaded = mlflow.pyfunc.load_model(info.model_uri)
    image = np.random.default_rng(1).integers(0, 256, size=(16, 20, 3), dtype=np.uint8)
    (out,) = loaded.predict(pd.DataFrame({"image": [image]}))
    assert out["panoptic"].shape == (16, 20)  # model ran at 8x10, output mapped back
    areas = {s["id"]: s["area"] for s in out["segments_info"]}
    ids, counts = np.unique(out["panoptic"], return_counts=True)
    assert {int(i): int(c) for i, c in zip(ids, counts, strict=True) if i != 0} == areas


def test_pyfunc_bad_factory_path_fails_early(store, tmp_path: Path) -> None:
    ckpt = tmp_path / "c.pt"
    torch.save({}, ckpt)
    with mlflow.start_run(), pytest.raises(ImportError, match="no_such_module"):
        log_model_pyfunc(
            ckpt,
            {},
            toy_categories(),
            model_factory="no_such_module:build",
            config_factory="toy_model:ToyModelConfig.from_dict",
        )


def test_training_and_model_packages_do_not_import_mlflow() -> None:
    """``training/`` and ``model/`` are plain PyTorch: importing all of their modules leaves MLflow out (the
    two aliases in training/ that keep old imports and old pickled models working are left out)."""
    code = (
        "import importlib, pkgutil, sys\n"
        "import unipan_pipeline.model as m, unipan_pipeline.training as t, unipan_pipeline.tracking\n"
        "import unipan_pipeline.tracking.tracker, unipan_pipeline.tracking.fake\n"
        "aliases = {'unipan_pipeline.training.tracking', 'unipan_pipeline.training.pyfunc'}\n"
        "for pkg in (m, t):\n"
        "    for info in pkgutil.iter_modules(pkg.__path__, pkg.__name__ + '.'):\n"
        "        if info.name not in aliases:\n"
        "            importlib.import_module(info.name)\n"
        "print(sorted(k for k in sys.modules if k.split('.')[0] == 'mlflow'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]"


def test_fake_tracker_records_like_the_mlflow_logger(tmp_path: Path) -> None:
    tracker = FakeTracker()
    with use_tracker(tracker):
        assert current_tracker() is tracker
        with current_tracker().start_run("r") as run:
            sent = run.log_params({"trainer": {"lr": 0.01, "lr_steps": [40000, 55000]}, "f": {}})
            run.log_params({"trainer": {"lr": 0.5}})  # a logged key keeps its first value, as in MLflow
            run.log_metrics({"train/loss": 1.0}, step=1)
            run.log_metrics({"train/loss": 0.5}, step=2)
            (tmp_path / "a.json").write_text("{}")
            run.log_artifact(tmp_path / "a.json", "bundle")
            run.log_artifact(tmp_path / "missing.json", "bundle")
            with pytest.raises(FileNotFoundError, match="missing"):
                run.log_model(tmp_path / "missing.pt", {}, None, eval_transform=None)
    assert not isinstance(current_tracker(), FakeTracker)
    assert sent == {"trainer.lr": "0.01", "trainer.lr_steps": "[40000, 55000]", "f": "{}"}
    assert run.params["trainer.lr"] == "0.01" and run.history("train/loss") == [(1, 1.0), (2, 0.5)]
    assert run.artifacts == ["bundle/a.json"] and tracker.open_run("nope") is None
    first = tracker.register(
        run.run_id, "m", 0.4, alias="champion", model_uri=None, version_tags={}, description=""
    )
    worse = tracker.register(
        run.run_id, "m", 0.3, alias="champion", model_uri=None, version_tags={}, description=""
    )
    better = tracker.register(
        run.run_id, "m", 0.5, alias="champion", model_uri=None, version_tags={}, description=""
    )
    assert first is not None and first.promoted and first.previous_champion is None
    assert worse is not None and not worse.promoted and worse.previous_value == pytest.approx(0.4)
    assert better is not None and better.promoted and better.previous_champion == 1
    assert tracker.aliases[("m", "champion")] == 3


def test_fake_tracker_study_runs_nest_like_mlflow() -> None:
    tracker = FakeTracker()
    parent = tracker.study_run("ablation_toy", {"ablation_role": "study"})
    assert tracker.study_run("again", {"ablation_study": "toy"}) is parent  # the active run
    with tracker.child_run(parent, "train A seed0", {"ablation_role": "model"}) as child:
        assert tracker.study_run("ignored", {}) is child
        with tracker.start_run("ablation_toy-A") as run:  # the glue logs into the active child
            assert run is child and run.name == "ablation_toy-A"
    assert tracker.active == [parent] and tracker.children(parent) == [child]
    assert child.parent_run_id() == parent.run_id and parent.parent_run_id() is None
    assert parent.tags == {"ablation_role": "study", "ablation_study": "toy"}
    parent.log_text("a,b\n", "ablation/table.csv")
    parent.log_dict({"A": {"pq": 0.5}}, "ablation/metrics.json")
    assert parent.artifacts == ["ablation/table.csv", "ablation/metrics.json"]
    assert parent.texts["ablation/table.csv"] == "a,b\n" and parent.dicts["ablation/metrics.json"]["A"]


def test_study_parent_and_child_runs(store, monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = store
    monkeypatch.chdir(root)
    parent = study_run("ablation_toy", {"ablation_role": "study"})
    assert mlflow.active_run().info.run_id == parent.run_id  # left open for the children
    with child_run(parent, "A", {"ablation_role": "row"}) as child:
        assert mlflow.active_run().info.run_id == child.run_id
        assert study_run("ignored", {"ablation_study": "toy"}).run_id == child.run_id  # the active run
    assert child.parent_run_id() == parent.run_id and parent.parent_run_id() is None
    parent.log_text("a,b\n", "ablation/table.csv")
    parent.log_dict({"A": {"pq": 0.5}}, "ablation/metrics.json")
    client = MlflowClient()
    assert sorted(a.path for a in client.list_artifacts(parent.run_id, "ablation")) == [
        "ablation/metrics.json",
        "ablation/table.csv",
    ]
    assert client.get_run(parent.run_id).data.tags["ablation_role"] == "study"
    assert client.get_run(child.run_id).data.tags["ablation_role"] == "row"
    mlflow.end_run()
