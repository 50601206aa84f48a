"""Bad input: clear exceptions naming file + problem, and earlier outputs left intact."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from builders import make_cityscapes_tree
from PIL import Image

from unipan_pipeline.data import store_write
from unipan_pipeline.data.cityscapes import ingest_cityscapes
from unipan_pipeline.data.coco import PANOPTICAPI_SAMPLE, ingest_coco
from unipan_pipeline.data.dataset import PanopticDataset
from unipan_pipeline.data.errors import (
    CorruptFileError,
    DataError,
    IncompleteDatasetError,
    MissingDataError,
    SegmentMismatchError,
    UnknownCategoryError,
)
from unipan_pipeline.data.store import MARKER, load_ingested

SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "panopticapi_sample"
needs_sample = pytest.mark.skipif(not SAMPLE.is_dir(), reason=f"panopticapi sample not found at {SAMPLE}")
IMAGE_A = "000000142238"  # file stem
IMAGE_ID = "142238"  # COCO image id (as a string)


@pytest.fixture
def coco(tmp_path: Path) -> Path:
    """A writable copy of the sample (in the test's temp folder) to break."""
    if not SAMPLE.is_dir():
        pytest.skip(f"panopticapi sample not found at {SAMPLE}")
    dst = tmp_path / "sample"
    for name in ("panoptic_examples.json", "panoptic_coco_categories.json"):
        dst.mkdir(exist_ok=True)
        shutil.copyfile(SAMPLE / name, dst / name)
    for folder in ("panoptic_examples", "input_images"):
        (dst / folder).mkdir()
        for f in (SAMPLE / folder).iterdir():
            shutil.copyfile(f, dst / folder / f.name)
    return dst


def _ingest(raw: Path, out: Path) -> dict:
    return ingest_coco(raw, out, ["val"], png_mode="copy", **PANOPTICAPI_SAMPLE)


def _edit_json(raw: Path, edit) -> None:
    path = raw / "panoptic_examples.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _assert_intact(out: Path, before: str) -> None:
    assert (out / MARKER).is_file()
    assert (out / "panoptic_val.json").read_text() == before
    assert len(PanopticDataset(out, "val")) == 2
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(".")) == []


# ------------------------------------------------------------------------------------------ missing data
def test_missing_coco_folder_says_where_to_put_it(tmp_path: Path) -> None:
    raw = tmp_path / "nowhere" / "coco"
    with pytest.raises(MissingDataError) as err:
        ingest_coco(raw, tmp_path / "out", ["val"])
    msg = str(err.value)
    assert str(raw) in msg
    assert "annotations/panoptic_{split}2017.json" in msg and "{split}2017/*.jpg" in msg
    assert not (tmp_path / "out").exists()


def test_missing_coco_json_names_the_file(tmp_path: Path) -> None:
    raw = tmp_path / "coco"
    (raw / "annotations" / "panoptic_val2017").mkdir(parents=True)
    (raw / "val2017").mkdir()
    with pytest.raises(FileNotFoundError, match=r"annotations/panoptic_val2017\.json does not exist"):
        ingest_coco(raw, tmp_path / "out", ["val"])


def test_missing_cityscapes_folder_says_where_to_put_it(tmp_path: Path) -> None:
    raw = tmp_path / "cityscapes"
    with pytest.raises(MissingDataError) as err:
        ingest_cityscapes(raw, tmp_path / "out", ["train"])
    msg = str(err.value)
    assert str(raw) in msg
    assert "leftImg8bit/{train,val}/<city>/" in msg and "gtFine_polygons.json" in msg
    raw.mkdir()
    (raw / "leftImg8bit").mkdir()
    with pytest.raises(MissingDataError, match=r"annotation folder .*gtFine/train does not exist"):
        ingest_cityscapes(raw, tmp_path / "out", ["train"])


def test_unfinished_output_is_never_trusted(tmp_path: Path) -> None:
    out = tmp_path / "coco"
    with pytest.raises(MissingDataError, match="does not exist: run"):
        load_ingested(out, "val")
    out.mkdir()
    (out / "panoptic_val.json").write_text("{}")
    with pytest.raises(IncompleteDatasetError, match=f"no {MARKER}"):
        PanopticDataset(out, "val")


# ------------------------------------------------------------------------------------------ corrupt files
@needs_sample
def test_truncated_image_is_named(coco: Path, tmp_path: Path) -> None:
    jpg = coco / "input_images" / f"{IMAGE_A}.jpg"
    jpg.write_bytes(jpg.read_bytes()[:5000])
    with pytest.raises(CorruptFileError, match=rf"image .*{IMAGE_A}\.jpg cannot be decoded"):
        _ingest(coco, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@needs_sample
def test_corrupt_png_is_named(coco: Path, tmp_path: Path) -> None:
    png = coco / "panoptic_examples" / f"{IMAGE_A}.png"
    png.write_bytes(png.read_bytes()[:300])
    with pytest.raises(CorruptFileError, match=rf"panoptic PNG .*{IMAGE_A}\.png cannot be decoded"):
        _ingest(coco, tmp_path / "out")


@needs_sample
def test_invalid_json_is_named(coco: Path, tmp_path: Path) -> None:
    (coco / "panoptic_examples.json").write_text('{"images": [')
    with pytest.raises(CorruptFileError, match=r"panoptic_examples\.json is not valid JSON"):
        _ingest(coco, tmp_path / "out")


@needs_sample
def test_image_truncated_after_ingestion_fails_at_load(coco: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _ingest(coco, out)
    jpg = coco / "input_images" / f"{IMAGE_A}.jpg"
    jpg.write_bytes(jpg.read_bytes()[:5000])
    ds = PanopticDataset(out, "val")
    with pytest.raises(CorruptFileError, match=rf"{IMAGE_A}\.jpg cannot be decoded"):
        ds[0]


# ------------------------------------------------------------------------------------------ inconsistent json
@needs_sample
def test_segment_in_json_but_not_in_png(coco: Path, tmp_path: Path) -> None:
    def add(data: dict) -> None:
        data["annotations"][0]["segments_info"].append({"id": 4242, "category_id": 1, "iscrowd": 0})

    _edit_json(coco, add)
    with pytest.raises(
        SegmentMismatchError, match=rf"{IMAGE_A}\.png: image '{IMAGE_ID}', segment 4242 is listed in the json"
    ):
        _ingest(coco, tmp_path / "out")


@needs_sample
def test_segment_in_png_but_not_in_json(coco: Path, tmp_path: Path) -> None:
    dropped = {}

    def drop(data: dict) -> None:
        dropped["id"] = data["annotations"][0]["segments_info"].pop(0)["id"]

    _edit_json(coco, drop)
    with pytest.raises(SegmentMismatchError) as err:
        _ingest(coco, tmp_path / "out")
    assert f"image '{IMAGE_ID}'" in str(err.value) and str(dropped["id"]) in str(err.value)
    assert f"{IMAGE_A}.png" in str(err.value) and "not listed in the json" in str(err.value)


@needs_sample
def test_unknown_category_is_reported(coco: Path, tmp_path: Path) -> None:
    seg = {}

    def bad_cat(data: dict) -> None:
        seg.update(data["annotations"][0]["segments_info"][1])
        data["annotations"][0]["segments_info"][1]["category_id"] = 999

    _edit_json(coco, bad_cat)
    with pytest.raises(UnknownCategoryError) as err:
        _ingest(coco, tmp_path / "out")
    assert isinstance(err.value, ValueError)
    assert f"image '{IMAGE_ID}', segment {seg['id']} has unknown category id 999" in str(err.value)


@needs_sample
def test_wrong_area_raises_when_strict(coco: Path, tmp_path: Path) -> None:
    def wrong(data: dict) -> None:
        data["annotations"][0]["segments_info"][0]["area"] += 1

    _edit_json(coco, wrong)
    with pytest.raises(DataError, match="disagree with the PNG"):
        ingest_coco(coco, tmp_path / "out", ["val"], fix_stats=False, **PANOPTICAPI_SAMPLE)
    _ingest(coco, tmp_path / "out")  # default: fixed from the PNG, with a warning
    fixed = json.loads((tmp_path / "out" / "panoptic_val.json").read_text())
    src = json.loads((SAMPLE / "panoptic_examples.json").read_text())
    assert (
        fixed["annotations"][0]["segments_info"][0]["area"]
        == src["annotations"][0]["segments_info"][0]["area"]
    )


# ------------------------------------------------------------------------------------------ interruption
@needs_sample
def test_interrupted_ingestion_keeps_earlier_output(
    coco: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    _ingest(coco, out)
    before = (out / "panoptic_val.json").read_text()
    calls = {"n": 0}
    real = store_write.validate_segments

    def crash_on_second(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated interruption")
        return real(*args, **kwargs)

    monkeypatch.setattr(store_write, "validate_segments", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        _ingest(coco, out)
    assert calls["n"] == 2
    _assert_intact(out, before)


@needs_sample
def test_bad_new_input_keeps_earlier_output(coco: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _ingest(coco, out)
    before = (out / "panoptic_val.json").read_text()
    png = coco / "panoptic_examples" / "000000439180.png"  # second image: first one already written
    png.write_bytes(b"not a png")
    with pytest.raises(CorruptFileError):
        _ingest(coco, out)
    _assert_intact(out, before)


@needs_sample
def test_stale_partial_output_is_cleaned_not_trusted(coco: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    stale = tmp_path / ".out.tmp-deadbeef"  # what a killed run leaves behind
    (stale / "panoptic_val").mkdir(parents=True)
    (stale / "panoptic_val.json").write_text("{}")
    with pytest.raises(MissingDataError):
        PanopticDataset(out, "val")
    _ingest(coco, out)
    assert not stale.exists()
    assert len(PanopticDataset(out, "val")) == 2
    aside = tmp_path / ".out.old-cafe"  # a run killed between its two renames
    aside.mkdir()
    _ingest(coco, out)
    assert not aside.exists() and (out / MARKER).is_file()


# ------------------------------------------------------------------------------------------ Cityscapes
def test_cityscapes_bad_inputs(tmp_path: Path) -> None:
    raw = make_cityscapes_tree(tmp_path / "raw")
    out = tmp_path / "out"
    ingest_cityscapes(raw, out, ["train"])
    before = (out / "panoptic_train.json").read_text()
    gt = raw / "gtFine" / "train" / "aachen"
    inst = gt / "aachen_000000_000019_gtFine_instanceIds.png"
    good = inst.read_bytes()

    # unknown label id painted in instanceIds
    arr = np.asarray(Image.open(inst)).copy()
    arr[0, 0] = 99
    Image.fromarray(arr).save(inst)
    with pytest.raises(
        UnknownCategoryError, match=r"aachen_000000_000019_gtFine_instanceIds\.png: segment 99"
    ):
        ingest_cityscapes(raw, out, ["train"])

    # truncated instanceIds
    inst.write_bytes(good[:60])
    with pytest.raises(
        CorruptFileError, match=r"instanceIds PNG .*aachen_000000_000019_gtFine_instanceIds\.png"
    ):
        ingest_cityscapes(raw, out, ["train"])
    inst.write_bytes(good)

    # truncated camera image
    img = raw / "leftImg8bit" / "train" / "bremen" / "bremen_000001_000019_leftImg8bit.png"
    good_img = img.read_bytes()
    img.write_bytes(good_img[:100])
    with pytest.raises(CorruptFileError, match=r"bremen_000001_000019_leftImg8bit\.png cannot be decoded"):
        ingest_cityscapes(raw, out, ["train"])
    img.unlink()
    with pytest.raises(MissingDataError, match=r"bremen_000001_000019_leftImg8bit\.png does not exist"):
        ingest_cityscapes(raw, out, ["train"])
    img.write_bytes(good_img)

    # polygons with an unknown label, instanceIds to be rendered
    inst.unlink()
    poly = gt / "aachen_000000_000019_gtFine_polygons.json"
    data = json.loads(poly.read_text())
    data["objects"][1]["label"] = "unicorn"
    poly.write_text(json.dumps(data))
    with pytest.raises(UnknownCategoryError, match=r"aachen_000000_000019_gtFine_polygons\.json: .*unicorn"):
        ingest_cityscapes(raw, out, ["train"])
    poly.write_text("{broken")
    with pytest.raises(CorruptFileError, match=r"polygon file .*aachen_000000_000019_gtFine_polygons\.json"):
        ingest_cityscapes(raw, out, ["train"])

    # after all these failures the earlier output is intact and nothing half-written is around
    assert (out / "panoptic_train.json").read_text() == before and (out / MARKER).is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert not list(raw.glob("gtFine/*/*/*_instanceIds.png.*"))


@needs_sample
def test_error_in_worker_process_is_reported(coco: Path, tmp_path: Path) -> None:
    png = coco / "panoptic_examples" / "000000439180.png"
    png.write_bytes(b"not a png")
    with pytest.raises(CorruptFileError, match=r"000000439180\.png cannot be decoded"):
        ingest_coco(coco, tmp_path / "out", ["val"], workers=2, **PANOPTICAPI_SAMPLE)
    assert list(tmp_path.iterdir()) == [coco]


def test_coco_image_without_annotation_is_named(
    coco: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def drop(data: dict) -> None:
        data["annotations"] = [a for a in data["annotations"] if str(a["image_id"]) != IMAGE_ID]

    _edit_json(coco, drop)
    with pytest.raises(DataError, match=rf"image '{IMAGE_ID}' \({IMAGE_A}\.jpg\) has no annotation"):
        _ingest(coco, tmp_path / "out")
    with caplog.at_level("WARNING", logger="unipan_pipeline.data.coco"):
        summary = ingest_coco(
            coco, tmp_path / "out", ["val"], png_mode="copy", unannotated_images="warn", **PANOPTICAPI_SAMPLE
        )
    assert summary["splits"]["val"]["images"] == 1
    assert any(f"{IMAGE_ID} ({IMAGE_A}.jpg)" in r.getMessage() for r in caplog.records)
