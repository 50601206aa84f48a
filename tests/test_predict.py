"""Prediction on a folder of images with the model of the tiny default-pipeline run (``tiny_project``): the
Kedro ``predict`` pipeline with ``models:/unipan-cityscapes@champion``, a local bundle, the CLI, errors,
unreadable images (``on_error: skip | fail``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from kedro_project import isolated_mlflow, run_kedro
from PIL import Image

from unipan_pipeline.data import CorruptFileError
from unipan_pipeline.evaluation import read_id_png
from unipan_pipeline.experiment.__main__ import main as cli_main
from unipan_pipeline.experiment.predict import predict_folder, predict_from_params


@pytest.fixture(scope="module")
def images(tiny_project: Path) -> Path:
    folder = tiny_project / "data/01_raw/predict_in"
    folder.mkdir(exist_ok=True)
    src = sorted((tiny_project / "data/01_raw/synthetic_cityscapes/leftImg8bit/val").rglob("*.png"))[:2]
    assert len(src) == 2
    for p in src:
        shutil.copy(p, folder / p.name)
    # a JPEG of another size: outputs must come back at each input's own size
    Image.open(src[0]).convert("RGB").resize((96, 48)).save(folder / "small.jpg")
    return folder


def _check_output(out: Path, inputs: Path) -> dict:
    data = json.loads((out / "panoptic_predictions.json").read_text())
    assert len(data["images"]) == len(data["annotations"]) == 3 and len(data["categories"]) == 19
    cat_ids = {c["id"] for c in data["categories"]}
    for img, ann in zip(data["images"], data["annotations"], strict=True):
        ids = read_id_png(out / "panoptic" / ann["file_name"])
        with Image.open(inputs / img["file_name"]) as im:
            assert ids.shape == (im.height, im.width) == (img["height"], img["width"])
        listed = {s["id"] for s in ann["segments_info"]}
        assert set(np.unique(ids).tolist()) - {0} == listed
        assert all(s["category_id"] in cat_ids for s in ann["segments_info"])
        overlay = out / "overlays" / ann["file_name"]
        with Image.open(overlay) as im:
            assert im.size == (img["width"], img["height"]) and im.mode == "RGB"
    return data


def test_predict_pipeline_with_champion_alias(tiny_project: Path, images: Path) -> None:
    out = tiny_project / "data/07_model_output/predict"
    run_kedro(
        tiny_project,
        ["predict"],
        {
            "predict": {
                "input_dir": str(images),
                "model_uri": "models:/unipan-cityscapes@champion",
                "output_dir": str(out),
                "progress_bar": False,
            }
        },
    )
    _check_output(out, images)
    summary = json.loads((tiny_project / "data/07_model_output/predict_summary.json").read_text())
    assert summary["n_images"] == 3 and summary["model_uri"] == "models:/unipan-cityscapes@champion"


def test_predict_from_local_bundle_matches_and_cli(tiny_project: Path, images: Path, tmp_path: Path) -> None:
    a = predict_folder(
        images, str(tiny_project / "data/06_models/demo/model.json"), tmp_path / "a", progress_bar=False
    )
    data = _check_output(tmp_path / "a", images)
    assert a["n_images"] == 3
    assert (
        cli_main(
            [
                "predict",
                "--model",
                str(tiny_project / "data/06_models/demo"),
                "--input",
                str(images),
                "--output",
                str(tmp_path / "b"),
                "--no-overlays",
            ]
        )
        == 0
    )
    again = json.loads((tmp_path / "b" / "panoptic_predictions.json").read_text())
    assert again["annotations"] == data["annotations"]  # deterministic, same model
    assert not (tmp_path / "b" / "overlays").exists()


def test_predict_errors(tiny_project: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        predict_folder(tmp_path / "missing", str(tiny_project / "data/06_models/demo"), tmp_path / "o")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no image"):
        predict_folder(tmp_path / "empty", str(tiny_project / "data/06_models/demo"), tmp_path / "o")
    (tmp_path / "one").mkdir()
    Image.new("RGB", (16, 8)).save(tmp_path / "one" / "x.png")
    with pytest.raises(FileNotFoundError, match="not a complete model bundle"):
        predict_folder(tmp_path / "one", str(tmp_path / "nomodel"), tmp_path / "o")
    assert cli_main(["predict", "--model", "x", "--input", str(tmp_path / "missing"), "--output", "o"]) == 2


def test_logged_mlflow_model_predicts_like_the_local_bundle(
    tiny_project: Path,
    images: Path,
    tmp_path: Path,
) -> None:
    """A bare run id resolves to ``runs:/<id>/model``; the served pyfunc gives the bundle's predictions."""
    run_id = json.loads((tiny_project / "data/06_models/demo/model.json").read_text())["mlflow"]["run_id"]
    with isolated_mlflow(f"sqlite:///{tiny_project / 'mlflow.db'}"):
        predict_folder(images, run_id, tmp_path / "mlflow", overlays=False, progress_bar=False)
    predict_folder(images, str(tiny_project / "data/06_models/demo"), tmp_path / "local", progress_bar=False)
    served = json.loads((tmp_path / "mlflow" / "panoptic_predictions.json").read_text())
    local = json.loads((tmp_path / "local" / "panoptic_predictions.json").read_text())
    assert served["annotations"] == local["annotations"]
    for ann in local["annotations"]:
        a = read_id_png(tmp_path / "mlflow" / "panoptic" / ann["file_name"])
        b = read_id_png(tmp_path / "local" / "panoptic" / ann["file_name"])
        assert np.array_equal(a, b)


@pytest.fixture
def with_bad_images(images: Path, tmp_path: Path) -> Path:
    """The three good images plus a truncated PNG and a text file named .jpg, sorted among them."""
    folder = tmp_path / "mixed"
    shutil.copytree(images, folder)
    good = sorted(folder.glob("*.png"))[0]
    (folder / "aaa_truncated.png").write_bytes(good.read_bytes()[:400])
    (folder / "zzz_text.jpg").write_text("this is not an image")
    return folder


def test_predict_pipeline_skips_unreadable_images(
    tiny_project: Path,
    with_bad_images: Path,
    images: Path,
) -> None:
    out = tiny_project / "data/07_model_output/predict_mixed"
    run_kedro(
        tiny_project,
        ["predict"],
        {
            "predict": {
                "input_dir": str(with_bad_images),
                "model_uri": str(tiny_project / "data/06_models/demo"),
                "output_dir": str(out),
                "progress_bar": False,
            }
        },
    )
    data = _check_output(out, images)  # the three good images, nothing for the bad ones
    assert {a["file_name"] for a in data["annotations"]} == {f"{p.stem}.png" for p in images.iterdir()}
    assert not (out / "panoptic" / "aaa_truncated.png").exists()
    summary = json.loads((tiny_project / "data/07_model_output/predict_summary.json").read_text())
    assert summary["on_error"] == "skip" and summary["n_images"] == 3 and summary["n_failed"] == 2
    assert [f["file"] for f in summary["failed"]] == ["aaa_truncated.png", "zzz_text.jpg"]
    assert all("cannot be decoded" in f["error"] for f in summary["failed"])


def test_predict_on_error_fail_raises_after_writing_the_good_ones(
    tiny_project: Path,
    with_bad_images: Path,
    images: Path,
    tmp_path: Path,
) -> None:
    params = {
        "input_dir": str(with_bad_images),
        "model_uri": str(tiny_project / "data/06_models/demo"),
        "output_dir": str(tmp_path / "out"),
        "progress_bar": False,
        "on_error": "fail",
    }
    with pytest.raises(
        CorruptFileError, match=r"2 of 5 images could not be read .*aaa_truncated\.png: .*zzz_text\.jpg: "
    ):
        predict_from_params(params)
    _check_output(tmp_path / "out", images)
    # the command line: same, exit status 2 with the list
    argv = ["predict", "--model", params["model_uri"], "--input", params["input_dir"]]
    assert cli_main([*argv, "--output", str(tmp_path / "cli"), "--on-error", "fail", "--no-overlays"]) == 2
    assert len(json.loads((tmp_path / "cli" / "panoptic_predictions.json").read_text())["images"]) == 3
    assert cli_main([*argv, "--output", str(tmp_path / "cli2"), "--no-overlays"]) == 0
    # nothing readable at all: an error in both modes, no output folder
    (tmp_path / "bad_only").mkdir()
    shutil.copy(with_bad_images / "zzz_text.jpg", tmp_path / "bad_only")
    with pytest.raises(CorruptFileError, match=r"none of its 1 images could be read: zzz_text\.jpg"):
        predict_folder(tmp_path / "bad_only", params["model_uri"], tmp_path / "none", progress_bar=False)
    assert not (tmp_path / "none").exists()


def test_predict_bad_on_error_value(tmp_path: Path) -> None:
    params = {
        "input_dir": str(tmp_path),
        "model_uri": "x",
        "output_dir": str(tmp_path / "o"),
        "on_error": "ignore",
    }
    with pytest.raises(
        ValueError, match=r"params:predict\.on_error must be one of \['skip', 'fail'\], got 'ignore'"
    ):
        predict_from_params(params)
    with pytest.raises(ValueError, match=r"on_error must be one of \['skip', 'fail'\], got True"):
        predict_folder(tmp_path, "x", tmp_path / "o", on_error=True)  # type: ignore[arg-type]
    assert not (tmp_path / "o").exists()
