"""DVC sees identical data as identical: generate + ingest on a tiny configuration in two fresh copies of the
project at different absolute paths give byte-identical outputs (no absolute paths, no wall times), and
``dvc exp run -S conf/base/parameters_demo.yml:demo.trainer.iterations=...`` runs in a copy (slow)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kedro_project import ROOT, TINY_MODEL, copy_project, run_kedro

TINY_DATA: dict[str, Any] = {
    "generate_synthetic": {
        "splits": {"train": 2, "val": 1},
        "height": 32,
        "width": 64,
        "workers": 1,
        "progress": False,
    },
}
OUTPUTS = (
    "data/01_raw/synthetic_cityscapes",
    "data/01_raw/synthetic_cityscapes_manifest.json",
    "data/03_primary/cityscapes",
    "data/03_primary/cityscapes_ingested.json",
)
DVC = Path(sys.executable).parent / "dvc"


def _md5s(project: Path) -> dict[str, str]:
    found = {}
    for out in OUTPUTS:
        path = project / out
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            found[f.relative_to(project).as_posix()] = hashlib.md5(f.read_bytes()).hexdigest()
    return found


def test_generate_and_ingest_hash_alike_in_two_checkouts(tmp_path: Path) -> None:
    os.environ["KEDRO_DISABLE_TELEMETRY"] = "1"
    hashes = []
    for where in ("first/checkout", "second/elsewhere/deeper"):
        project = copy_project(tmp_path / where)
        run_kedro(project, ["generate_synthetic", "ingest_cityscapes"], TINY_DATA)
        hashes.append(_md5s(project))
        text = "".join(
            (project / p).read_text() for p in OUTPUTS if p.endswith(".json") and (project / p).is_file()
        )
        assert str(tmp_path) not in text, "an absolute path of the checkout is in a tracked output"
        summary = json.loads((project / "data/03_primary/cityscapes_ingested.json").read_text())
        assert "seconds" not in summary and summary["source"] == "synthetic:data/01_raw/synthetic_cityscapes"
    assert len(hashes[0]) > 10 and hashes[0] == hashes[1]


def _git(project: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=project, check=True, capture_output=True, timeout=120)


@pytest.mark.slow
def test_dvc_exp_run_with_set_param(tmp_path: Path) -> None:
    """The README's ``dvc exp run -S`` in a git + DVC copy with tiny parameters in its conf/base."""
    assert DVC.exists(), f"{DVC} missing: dvc is a dependency of the project (pyproject.toml)"
    project = copy_project(tmp_path / "project")
    shutil.copy(ROOT / "dvc.yaml", project / "dvc.yaml")
    shutil.copytree(ROOT / "conf/dvc", project / "conf/dvc")
    for src in ("src/unipan_pipeline",):  # dvc.yaml's code deps must exist
        shutil.copytree(ROOT / src, project / src, ignore=shutil.ignore_patterns("__pycache__"))
    base = project / "conf/base"
    gen = yaml.safe_load((base / "parameters_generate_synthetic.yml").read_text())
    gen["generate_synthetic"].update(TINY_DATA["generate_synthetic"])
    (base / "parameters_generate_synthetic.yml").write_text(yaml.safe_dump(gen))
    demo = yaml.safe_load((base / "parameters_demo.yml").read_text())
    d = demo["demo"]
    d["augment"].update({"crop_size": None})
    d["model"].update(TINY_MODEL)
    d["trainer"].update(
        {
            "iterations": 1,
            "images_per_batch": 1,
            "num_workers": 0,
            "validate_every": 0,
            "warmup_iters": 1,
            "lr_steps": [],
            "progress_bar": False,
            "checkpoint_every": 1,
        }
    )
    d["validation"] = {"max_images": 0}
    d["evaluation"].update({"num_pictures": 0, "affinity_pictures": 0, "progress_bar": False})
    (base / "parameters_demo.yml").write_text(yaml.safe_dump(demo))
    _git(project, "init", "-q")
    _git(project, "config", "user.email", "t@example.com")
    _git(project, "config", "user.name", "test")
    subprocess.run([str(DVC), "init", "-q"], cwd=project, check=True, capture_output=True, timeout=120)
    _git(project, "add", "-A")
    _git(project, "commit", "-qm", "tiny")
    env = {
        **os.environ,
        "PATH": f"{DVC.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}",  # absolute: exp runs in a temp checkout
        "KEDRO_DISABLE_TELEMETRY": "1",
    }
    out = subprocess.run(
        [str(DVC), "exp", "run", "evaluate", "-S", "conf/base/parameters_demo.yml:demo.trainer.iterations=2"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-3000:])
    # the -S value reached the workspace's params file, the trained model and the experiment table
    params = yaml.safe_load((base / "parameters_demo.yml").read_text())
    assert params["demo"]["trainer"]["iterations"] == 2
    assert json.loads((project / "data/06_models/demo/model.json").read_text())["iterations"] == 2
    shown = subprocess.run(
        [str(DVC), "exp", "show", "--json"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert '"iterations": 2' in shown.stdout
    metrics = json.loads((project / "data/08_reporting/demo/metrics.json").read_text())
    assert "pq" in metrics
