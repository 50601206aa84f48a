"""kedro-viz: every catalog entry (and dataset factory) sits in one of Kedro's layers, and ``kedro viz build``
(no browser, no server) renders every registered pipeline of a copy of the project with those layers, the
factories' datasets included."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from kedro_project import ROOT, copy_project, project_catalog, resolved

from unipan_pipeline.pipeline_registry import register_pipelines

LAYERS = ("raw", "intermediate", "primary", "feature", "model_input", "models", "model_output", "reporting")
FOLDER_LAYER = dict(zip(("01", "02", "03", "04", "05", "06", "07", "08"), LAYERS, strict=True))
KEDRO = Path(sys.executable).parent / "kedro"


def _catalog() -> dict[str, dict]:
    """Every entry and dataset factory of conf/base, by name or pattern (``{namespace}.model``)."""
    entries: dict[str, dict] = {}
    for path in sorted((ROOT / "conf/base").glob("catalog*.yml")):
        entries.update(yaml.safe_load(path.read_text()) or {})
    return entries


def _pipeline_datasets() -> set[str]:
    return {ds for p in register_pipelines().values() for ds in p.datasets() if not ds.startswith("params:")}


def test_every_catalog_entry_has_the_layer_of_its_data_folder() -> None:
    entries = _catalog()
    assert len(entries) >= 20
    assert sum("{" in name for name in entries) >= 17  # the stages' datasets come from factories
    for name, entry in entries.items():
        layer = ((entry.get("metadata") or {}).get("kedro-viz") or {}).get("layer")
        assert layer in LAYERS, f"{name}: layer {layer!r}"
        folder = str(entry["filepath"]).split("/")[1][:2]  # data/08_reporting/... -> 08
        assert FOLDER_LAYER[folder] == layer, f"{name} lies in data/{folder}_* but is in layer {layer}"


def test_kedro_viz_builds_every_pipeline(tmp_path: Path) -> None:
    assert importlib.util.find_spec("kedro_viz"), (
        "kedro-viz missing: `pip install -e '.[viz]'` (make install)"
    )
    project = copy_project(tmp_path / "project")
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1"}
    out = subprocess.run(
        [str(KEDRO), "viz", "build"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    main = json.loads((project / "build/api/main").read_text())
    assert {p["id"] for p in main["pipelines"]} == set(register_pipelines())
    for name in register_pipelines():
        assert (project / "build/api/pipelines" / name).is_file(), name
    data: dict[str, str | None] = {}
    layers: set[str] = set()
    for name in register_pipelines():  # main holds the default pipeline; each pipeline has its own file
        view = json.loads((project / "build/api/pipelines" / name).read_text())
        data.update({n["name"]: n["layer"] for n in view["nodes"] if n["type"] == "data"})
        layers |= set(view["layers"])
    catalog = project_catalog()
    datasets = _pipeline_datasets()
    assert len(datasets) > 50 and datasets <= set(data)  # every dataset of every pipeline is drawn
    for name in datasets:
        assert data[name] == resolved(catalog, name)["layer"], name
    assert {"raw", "primary", "models", "model_output", "reporting"} <= layers
