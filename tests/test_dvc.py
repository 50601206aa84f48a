"""dvc.yaml: parses (``dvc dag``), stages call registered Kedro pipelines, params point at existing keys of
conf/base files, deps exist or are produced upstream, code deps are exactly the package folders the stage's
pipeline imports, outputs never include MLflow's store, each parameter group invalidates only its own
stage."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kedro.framework.project import configure_project
from kedro_project import project_catalog, resolved

from unipan_pipeline.pipeline_registry import register_pipelines

ROOT = Path(__file__).resolve().parents[1]
DVC = Path(sys.executable).parent / "dvc"


@pytest.fixture(scope="module")
def dvc() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())


def _paths(entries: list[Any]) -> list[str]:
    return [next(iter(e)) if isinstance(e, dict) else e for e in entries or []]


PACKAGE = ROOT / "src" / "unipan_pipeline"


def _module_file(name: str) -> Path | None:
    rel = Path(*name.split("."))
    for candidate in (ROOT / "src" / rel.with_suffix(".py"), ROOT / "src" / rel / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _project_imports(name: str) -> set[str]:
    """The ``unipan_pipeline`` modules that module ``name`` imports anywhere (also inside functions)."""
    path = _module_file(name)
    assert path is not None, name
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            found |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return {m for m in found if m.startswith("unipan_pipeline.") and _module_file(m) is not None}


def _code_deps(modules: set[str]) -> set[str]:
    """The package folders (``src/unipan_pipeline/<sub>``, ``pipelines/<name>``) and top-level modules that
    ``modules`` import, transitively: what a stage running them depends on."""
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:k]) for k in range(2, len(parts))]  # the packages' __init__ run too
        todo += sorted(_project_imports(name))
    deps = set()
    for name in seen:
        parts = name.split(".")
        if parts[1] == "pipelines":
            if len(parts) > 2:
                deps.add(f"src/unipan_pipeline/pipelines/{parts[2]}")
        elif (PACKAGE / parts[1]).is_dir():
            deps.add(f"src/unipan_pipeline/{parts[1]}")
        else:
            deps.add(f"src/unipan_pipeline/{parts[1]}.py")
    return deps


def _lookup(data: dict[str, Any], dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        assert isinstance(node, dict) and part in node, f"{dotted!r} not found"
        node = node[part]
    return node


def test_stages_run_registered_pipelines(dvc: dict[str, Any]) -> None:
    configure_project("unipan_pipeline")
    registered = register_pipelines()
    stages = dvc["stages"]
    assert list(stages) == ["generate", "ingest", "train", "evaluate", "ablation"]
    covered: list[str] = []
    for name, stage in stages.items():
        # telemetry off: kedro-telemetry would otherwise write a project id into pyproject.toml
        # --env=dvc: the tracked conf/dvc/, never the git-ignored conf/local/ that DVC cannot see
        m = re.fullmatch(r"KEDRO_DISABLE_TELEMETRY=1 kedro run --env=dvc --pipelines=(\w+)", stage["cmd"])
        assert m and m.group(1) in registered, stage["cmd"]
        if name != "ablation":
            covered += [n.name for n in registered[m.group(1)].nodes]
    assert stages["ablation"]["cmd"] == (
        "KEDRO_DISABLE_TELEMETRY=1 kedro run --env=dvc --pipelines=ablation_cityscapes"
    )
    # the stages up to `evaluate` are exactly the default pipeline
    assert sorted(covered) == sorted(n.name for n in registered["__default__"].nodes)


def test_params_point_at_existing_keys(dvc: dict[str, Any]) -> None:
    for name, stage in dvc["stages"].items():
        assert stage.get("params"), f"stage {name} declares no params"
        for entry in stage["params"]:
            ((file, keys),) = entry.items()
            assert file.startswith("conf/base/parameters_"), file
            data = yaml.safe_load((ROOT / file).read_text())
            for key in keys:
                _lookup(data, key)


def test_train_and_evaluate_params_are_disjoint(dvc: dict[str, Any]) -> None:
    """Changing demo.evaluation reruns evaluate only; the training keys cover the whole demo namespace."""
    train = {k for e in dvc["stages"]["train"]["params"] for k in next(iter(e.values()))}
    evaluate = {k for e in dvc["stages"]["evaluate"]["params"] for k in next(iter(e.values()))}
    assert train.isdisjoint(evaluate)
    demo = yaml.safe_load((ROOT / "conf/base/parameters_demo.yml").read_text())["demo"]
    assert {f"demo.{k}" for k in demo} == train | evaluate


def test_code_deps_follow_the_package(dvc: dict[str, Any]) -> None:
    """Each stage depends on exactly the package folders its pipeline's nodes import (transitively): a new
    import (e.g. in-training validation using ``evaluation/``) must appear in dvc.yaml, or this fails."""
    configure_project("unipan_pipeline")
    registered = register_pipelines()
    for name, stage in dvc["stages"].items():
        pipeline = re.search(r"--pipelines=(\w+)", stage["cmd"]).group(1)
        modules = {getattr(n.func, "func", n.func).__module__ for n in registered[pipeline].nodes}
        declared = {d for d in _paths(stage["deps"]) if d.startswith("src/")}
        needed = _code_deps(modules)
        assert declared == needed, f"stage {name}: src deps should be {sorted(needed)}"
    assert "src/unipan_pipeline/evaluation" in _paths(dvc["stages"]["train"]["deps"])


def test_deps_outs_metrics_plots(dvc: dict[str, Any]) -> None:
    produced: set[str] = set()
    for name, stage in dvc["stages"].items():
        for dep in _paths(stage["deps"]):
            assert (ROOT / dep).exists() or dep in produced, (
                f"{name}: dep {dep} neither exists nor is produced"
            )
        outs = (
            _paths(stage.get("outs", [])) + _paths(stage.get("metrics", [])) + _paths(stage.get("plots", []))
        )
        for out in outs:
            assert not out.startswith(("mlruns", "mlflow.db")), out
            assert out.startswith("data/"), out
        produced |= set(outs)
    metrics = dvc["stages"]["evaluate"]["metrics"]
    assert metrics == [{"data/08_reporting/demo/metrics.json": {"cache": False}}]
    plots = ["data/08_reporting/demo/train_curve.csv", "data/08_reporting/demo/val_curve.csv"]
    assert set(plots) <= set(_paths(dvc["stages"]["train"]["outs"]))  # produced by train, plotted on top
    assert "data/06_models/demo" in _paths(dvc["stages"]["train"]["outs"])
    # outputs match the catalog / parameters the pipelines write to
    demo = yaml.safe_load((ROOT / "conf/base/parameters_demo.yml").read_text())["demo"]
    assert demo["output_dir"] == "data/06_models/demo"
    assert demo["evaluation"]["metrics_path"] == "data/08_reporting/demo/metrics.json"
    assert demo["evaluation"]["predictions_dir"] in _paths(dvc["stages"]["evaluate"]["outs"])
    assert demo["evaluation"]["report_dir"] in _paths(dvc["stages"]["evaluate"]["outs"])
    catalog = project_catalog()
    assert [resolved(catalog, f"demo.{curve}")["filepath"] for curve in ("train_curve", "val_curve")] == plots


@pytest.mark.skipif(not DVC.exists(), reason="dvc is not installed in this environment")
def test_dvc_dag_parses() -> None:
    out = subprocess.run(
        [str(DVC), "dag", "--md"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    names = dict(re.findall(r'(node\d+)\["(\w+)"\]', out.stdout))
    edges = {(names[a], names[b]) for a, b in re.findall(r"(node\d+)-->(node\d+)", out.stdout)}
    assert edges == {
        ("generate", "ingest"),
        ("ingest", "train"),
        ("train", "evaluate"),
        ("ingest", "evaluate"),
        ("ingest", "ablation"),
    }


def test_each_plot_is_defined_once(dvc: dict[str, Any]) -> None:
    stage_plots = [p for stage in dvc["stages"].values() for p in _paths(stage.get("plots", []))]
    top = [f for entry in dvc.get("plots", []) for spec in entry.values() for f in spec["y"]]
    assert len(stage_plots) == len(set(stage_plots))
    assert not set(stage_plots) & set(top), "a file is plotted both in a stage and in the top-level plots"
    assert {"data/08_reporting/demo/train_curve.csv", "data/08_reporting/demo/val_curve.csv"} <= set(top)


def test_dvc_environment_is_tracked_and_holds_no_undeclared_config() -> None:
    assert (ROOT / "conf/dvc").is_dir()
    assert not list((ROOT / "conf/dvc").glob("**/*.yml")) + list((ROOT / "conf/dvc").glob("**/*.yaml"))
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "conf/dvc/README.md"],
        cwd=ROOT,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert ignored.returncode == 1, "conf/dvc must be tracked by git"


def test_readme_documents_dvc_exp_run_with_a_declared_param(dvc: dict[str, Any]) -> None:
    readme = (ROOT / "README.md").read_text()
    m = re.search(r"dvc exp run -S (conf/base/parameters_demo\.yml):(demo\.trainer\.iterations)=\d+", readme)
    assert m, "README lacks the dvc exp run line"
    _lookup(yaml.safe_load((ROOT / m.group(1)).read_text()), m.group(2))
    declared = {k for e in dvc["stages"]["train"]["params"] for k in next(iter(e.values()))}
    assert "demo.trainer" in declared
