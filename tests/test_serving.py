"""The logged pyfunc model serves images: signature + input example + bundled code + pinned requirements;
``mlflow models serve --env-manager local`` answers an image sent as an array and as base64 PNG/JPEG
exactly like in-process prediction. Throw-away SQLite stores in tmp dirs (never the project's mlflow.db)."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
import torch
import yaml
from kedro_project import isolated_mlflow
from PIL import Image
from toy_model import ToyModelConfig, build_toy_model, toy_categories

from unipan_pipeline.tracking.models import log_model_pyfunc, model_requirements
from unipan_pipeline.tracking.pyfunc import load_image
from unipan_pipeline.tracking.registry import register_and_promote
from unipan_pipeline.tracking.store import configure_tracking

MLFLOW = Path(sys.executable).parent / "mlflow"
SERVE_TIMEOUT_S = 90


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A toy network logged through ``log_model_pyfunc`` and registered as ``unipan-toy@champion``."""
    root = tmp_path_factory.mktemp("serving")
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        os.environ.pop(var, None)
    with isolated_mlflow():
        configure_tracking(root, "serving-tests")
        torch.manual_seed(0)
        cats = toy_categories()
        cfg = ToyModelConfig(width=4)
        ckpt = root / "ckpt.pt"
        torch.save(build_toy_model(cfg, cats).state_dict(), ckpt)
        with mlflow.start_run() as run:
            info = log_model_pyfunc(
                ckpt,
                cfg.to_dict(),
                cats,
                model_factory="toy_model:build_toy_model",
                config_factory="toy_model:ToyModelConfig.from_dict",
                input_example_size=(16, 20),
            )
        register_and_promote(run.info.run_id, "unipan-toy", 0.5, model_uri=info.model_uri)
        local = Path(mlflow.artifacts.download_artifacts(info.model_uri, dst_path=str(root / "local")))
        yield {
            "root": root,
            "uri": mlflow.get_tracking_uri(),
            "info": info,
            "local": local,
            "pyfunc": mlflow.pyfunc.load_model(str(local)),
        }


def _image(seed: int = 3, size: tuple[int, int] = (18, 22)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(*size, 3), dtype=np.uint8)


def _encoded(image: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt)
    return buf.getvalue()


def _same(a: dict[str, Any], b: dict[str, Any]) -> None:
    np.testing.assert_array_equal(np.asarray(a["panoptic"]), np.asarray(b["panoptic"]))
    assert [(s["id"], s["category_id"], s["area"]) for s in a["segments_info"]] == [
        (s["id"], s["category_id"], s["area"]) for s in b["segments_info"]
    ]


def test_model_carries_signature_example_code_and_requirements(logged: dict[str, Any]) -> None:
    local: Path = logged["local"]
    meta = yaml.safe_load((local / "MLmodel").read_text())
    inputs = json.loads(meta["signature"]["inputs"])
    assert [(c["name"], c["required"]) for c in inputs] == [
        ("image", False),
        ("image_base64", False),
        ("path", False),
    ]
    assert inputs[1]["type"] == "binary"
    assert (local / "code" / "unipan_pipeline" / "categories.py").is_file()
    assert meta["flavors"]["python_function"]["code"] == "code"
    example = json.loads((local / "serving_input_example.json").read_text())
    assert np.asarray(example["dataframe_split"]["data"][0][0]).shape == (16, 20, 3)
    reqs = (local / "requirements.txt").read_text().split()
    names = {r.split("==")[0].split("[")[0].lower() for r in reqs}
    assert {"torch", "torchvision", "mlflow", "cityscapesscripts", "pycocotools", "numpy", "pillow"} <= names
    assert model_requirements() == [r for r in reqs if not r.startswith("-")]
    assert all("==" in r for r in model_requirements())


def test_pyfunc_accepts_array_int64_base64_and_path(logged: dict[str, Any], tmp_path: Path) -> None:
    """The cheap in-process twin of the served test: every input form gives the unwrapped model's answer."""
    model = logged["pyfunc"]
    image = _image()
    ref = model.unwrap_python_model().predict(None, image)
    assert ref["panoptic"].shape == image.shape[:2]
    png, jpeg = _encoded(image, "PNG"), _encoded(image, "JPEG")
    path = tmp_path / "img.png"
    path.write_bytes(png)
    by_form = {
        "uint8": pd.DataFrame({"image": [image]}),
        "int64 lists": pd.DataFrame({"image": [image.astype(np.int64).tolist()]}),
        "png bytes": pd.DataFrame({"image_base64": [png]}),
        "path": pd.DataFrame({"path": [str(path)]}),
    }
    for form, frame in by_form.items():
        (out,) = model.predict(frame)
        _same(out, ref), form
    # base64 text (what a JSON client sends) and a data URI also decode; JPEG is lossy: same shape only
    unwrapped = model.unwrap_python_model()
    _same(unwrapped.predict(None, base64.b64encode(png).decode()), ref)
    _same(unwrapped.predict(None, "data:image/png;base64," + base64.b64encode(png).decode()), ref)
    assert load_image(base64.b64encode(jpeg)).shape == image.shape
    # several rows, mixed forms -> one result per row, in order
    mixed = pd.DataFrame({"image": [image, None], "image_base64": [None, png]})
    assert len(model.predict(mixed)) == 2
    with pytest.raises(ValueError, match=r"0\.\.255"):
        load_image(np.full((4, 4, 3), 300, dtype=np.int64))
    with pytest.raises(ValueError, match="neither an encoded image"):
        load_image(b"not an image at all")
    with pytest.raises(ValueError, match="sets none of the columns"):
        unwrapped.predict(None, pd.DataFrame({"image": [None]}))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_mlflow_models_serve_answers_array_and_base64(logged: dict[str, Any], tmp_path: Path) -> None:
    """``mlflow models serve -m models:/unipan-toy@champion --env-manager local`` on 127.0.0.1."""
    assert MLFLOW.exists(), f"{MLFLOW} missing: mlflow is a dependency of the project (pyproject.toml)"
    port = _free_port()
    pythonpath = [str(Path(__file__).parent), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": logged["uri"],
        "MLFLOW_REGISTRY_URI": logged["uri"],
        "PATH": f"{MLFLOW.parent}{os.pathsep}{os.environ.get('PATH', '')}",  # mlflow execs `uvicorn`
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        # the toy network's module (tests/toy_model.py) is a test fixture, not part of the logged package
        "PYTHONPATH": os.pathsep.join(pythonpath),
    }
    log = (tmp_path / "serve.log").open("w")
    cmd = [str(MLFLOW), "models", "serve", "-m", "models:/unipan-toy@champion", "--env-manager", "local"]
    proc = subprocess.Popen(
        [*cmd, "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the workers are stopped with it
    )
    base = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    try:
        deadline = time.monotonic() + SERVE_TIMEOUT_S
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                if requests.get(f"{base}/ping", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "server did not start in time"
            time.sleep(0.5)
        image = _image(seed=7, size=(20, 24))
        ref = logged["pyfunc"].unwrap_python_model().predict(None, image)
        png64 = base64.b64encode(_encoded(image, "PNG")).decode()
        bodies = {
            "array": {"inputs": [{"image": image.tolist()}]},
            "base64": {"inputs": [{"image_base64": png64}]},
            "records": {"dataframe_records": [{"image_base64": png64}, {"image_base64": png64}]},
        }
        answers = {}
        for form, body in bodies.items():
            t0 = time.perf_counter()
            r = requests.post(f"{base}/invocations", json=body, timeout=30)
            answers[form] = (r, time.perf_counter() - t0)
            assert r.status_code == 200, (form, r.text[:500])
            for out in r.json()["predictions"]:
                _same(out, ref)
        assert len(answers["records"][0].json()["predictions"]) == 2
        bad = requests.post(f"{base}/invocations", json={"inputs": [{"image": [[[999, 0, 0]]]}]}, timeout=30)
        assert bad.status_code == 400 and "0..255" in bad.text
        timing = {form: round(dt, 3) for form, (_, dt) in answers.items()}
        print(f"served in {time.monotonic() - started:.1f} s after start; request seconds {timing}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()
