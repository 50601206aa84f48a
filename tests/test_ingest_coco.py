"""COCO panoptic ingestion on panopticapi's real sample (two COCO val2017 images)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from official import official_pq_compute
from PIL import Image

from unipan_pipeline.categories import CategoryMap
from unipan_pipeline.data.coco import PANOPTICAPI_SAMPLE, ingest_coco, ingest_panopticapi_sample
from unipan_pipeline.data.store import MARKER, load_ingested
from unipan_pipeline.pipelines.ingest import create_pipeline

SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "panopticapi_sample"
pytestmark = pytest.mark.skipif(not SAMPLE.is_dir(), reason=f"panopticapi sample not found at {SAMPLE}")


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("coco") / "coco"
    ingest_panopticapi_sample(SAMPLE, out)
    return out


def _source() -> dict:
    return json.loads((SAMPLE / "panoptic_examples.json").read_text())


def _png_stats(png: Path) -> dict[int, tuple[int, list[int]]]:
    """Area and bbox of every segment, computed here independently with per-id masks."""
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(np.uint32)
    ids = rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]
    out = {}
    for sid in np.unique(ids):
        if sid == 0:
            continue
        ys, xs = np.nonzero(ids == sid)
        out[int(sid)] = (
            len(xs),
            [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)],
        )
    return out


def test_layout_and_marker(ingested: Path) -> None:
    names = ("categories.json", "panoptic_val.json", "index_val.parquet", "class_stats_val.parquet", MARKER)
    for name in names:
        assert (ingested / name).is_file(), name
    pngs = sorted(p.name for p in (ingested / "panoptic_val").iterdir())
    assert pngs == ["000000142238.png", "000000439180.png"]
    # no temporary folders left next to the output
    assert [p.name for p in ingested.parent.iterdir()] == ["coco"]


def test_segments_areas_bboxes_agree_with_json_and_png(ingested: Path) -> None:
    src = _source()
    out = json.loads((ingested / "panoptic_val.json").read_text())
    src_anns = {str(a["image_id"]): a for a in src["annotations"]}
    assert {im["id"] for im in out["images"]} == set(src_anns)
    for ann in out["annotations"]:
        stats = _png_stats(ingested / "panoptic_val" / ann["file_name"])
        src_segs = {s["id"]: s for s in src_anns[ann["image_id"]]["segments_info"]}
        assert {s["id"] for s in ann["segments_info"]} == set(src_segs) == set(stats)
        for seg in ann["segments_info"]:
            ref = src_segs[seg["id"]]
            assert seg["category_id"] == ref["category_id"]
            assert seg["iscrowd"] == ref["iscrowd"]
            assert seg["area"] == ref["area"] == stats[seg["id"]][0]
            assert seg["bbox"] == ref["bbox"] == stats[seg["id"]][1]


def test_images_and_categories(ingested: Path) -> None:
    data = load_ingested(ingested, "val")
    for i, im in enumerate(data.images):
        path = data.image_path(i)
        assert path.resolve() == (SAMPLE / "input_images" / im["file_name"]).resolve()
        with Image.open(path) as pil:
            assert pil.size == (im["width"], im["height"])
        assert isinstance(im["id"], str)
    ref = CategoryMap.from_coco(json.loads((SAMPLE / "panoptic_coco_categories.json").read_text()))
    assert data.categories == ref
    assert (data.categories.num_stuff, data.categories.num_things) == (53, 80)
    out = json.loads((ingested / "panoptic_val.json").read_text())
    assert out["categories"] == ref.to_coco()


def test_index_and_class_stats(ingested: Path) -> None:
    src = _source()
    cats = CategoryMap.from_coco(src["categories"])
    index = pd.read_parquet(ingested / "index_val.parquet").set_index("image_id")
    stats = pd.read_parquet(ingested / "class_stats_val.parquet")
    total_pixels = 0
    for img, ann in zip(src["images"], src["annotations"], strict=True):
        row = index.loc[str(img["id"])]
        segs = ann["segments_info"]
        assert (row.height, row.width) == (img["height"], img["width"])
        assert row.num_segments == len(segs)
        assert row.num_crowd == sum(s["iscrowd"] for s in segs)
        things = [s for s in segs if cats.by_dataset_id(s["category_id"]).isthing and not s["iscrowd"]]
        assert row.num_things == len(things)
        assert row.num_stuff == len(segs) - len(things) - row.num_crowd
        assert row.void_pixels == img["height"] * img["width"] - sum(s["area"] for s in segs)
        person = sum(s["area"] for s in segs if s["category_id"] == 1)
        assert row["pixels:person"] == person
        assert row["instances:person"] == sum(1 for s in things if s["category_id"] == 1)
        total_pixels += sum(s["area"] for s in segs)
    assert stats["pixels"].sum() == total_pixels
    assert len(stats) == cats.num_classes
    assert stats.set_index("name").loc["person", "images"] == 2


def test_pq_compute_reads_the_ingested_form(ingested: Path) -> None:
    gt_json = ingested / "panoptic_val.json"
    folder = str(ingested / "panoptic_val")
    res = official_pq_compute(str(gt_json), str(gt_json), folder, folder)
    assert res["All"]["pq"] == pytest.approx(1.0)


def test_reingest_replaces_output_and_paths_are_parameters(tmp_path: Path) -> None:
    out = tmp_path / "coco"
    first = ingest_coco(SAMPLE, out, ["val"], **PANOPTICAPI_SAMPLE)
    second = ingest_coco(SAMPLE, out, ["minival"], png_mode="copy", **PANOPTICAPI_SAMPLE)
    assert first["splits"]["val"]["images"] == second["splits"]["minival"]["images"] == 2
    assert (out / "panoptic_minival.json").is_file()
    assert not (out / "panoptic_val.json").exists()  # the folder is replaced as a whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["coco"]


def test_kedro_pipeline_on_sample(tmp_path: Path) -> None:
    params = {
        "raw_root": str(SAMPLE),
        "out_root": str(tmp_path / "coco"),
        "splits": "val",
        **PANOPTICAPI_SAMPLE,
    }
    catalog = DataCatalog({"params:ingest_coco": MemoryDataset(params)})
    outputs = SequentialRunner().run(create_pipeline("coco"), catalog)
    summary = outputs["coco_ingested"].load()
    assert summary["splits"] == {"val": {"images": 2, "segments": 50, "things": 40, "crowd": 3}}
    assert len(load_ingested(tmp_path / "coco", "val").images) == 2


def test_parallel_workers_give_identical_output(ingested: Path, tmp_path: Path) -> None:
    out = tmp_path / "coco"
    ingest_coco(SAMPLE, out, ["val"], workers=2, **PANOPTICAPI_SAMPLE)
    serial = json.loads((ingested / "panoptic_val.json").read_text())
    parallel = json.loads((out / "panoptic_val.json").read_text())
    assert parallel["annotations"] == serial["annotations"]
    assert [im["id"] for im in parallel["images"]] == [im["id"] for im in serial["images"]]
    pd.testing.assert_frame_equal(
        pd.read_parquet(out / "index_val.parquet").drop(columns="image_path"),
        pd.read_parquet(ingested / "index_val.parquet").drop(columns="image_path"),
    )
