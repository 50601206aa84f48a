"""Cityscapes ingestion on a tiny hand-made Cityscapes-layout tree (and on the synthetic generator's tree)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from builders import H, W, make_cityscapes_tree
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner
from PIL import Image

from unipan_pipeline.categories import IGNORE_INDEX, CategoryMap
from unipan_pipeline.data.cityscapes import ingest_cityscapes
from unipan_pipeline.data.dataset import PanopticDataset
from unipan_pipeline.data.store import MARKER, read_panoptic_png
from unipan_pipeline.data.transforms import PanopticTransform, TransformConfig
from unipan_pipeline.pipelines.ingest import create_pipeline
from unipan_pipeline.pipelines.ingest.nodes import resolve_source

try:
    from unipan_pipeline.synthetic import generate_cityscapes_tree
except ImportError:  # the generator is written in parallel; the end-to-end test runs once it exists
    generate_cityscapes_tree = None


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """The test machine's cores are shared: intra-op threads only add contention on these tiny tensors."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_cityscapes_tree(tmp_path_factory.mktemp("raw") / "cityscapes")


@pytest.fixture(scope="module")
def ingested(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("primary") / "cityscapes"
    ingest_cityscapes(tree, out, ["train", "val"])
    return out


def check_against_raw(raw: Path, out: Path, split: str) -> None:
    """Every ingested PNG/json agrees with the raw labelIds / instanceIds of its frame."""
    cats = CategoryMap.cityscapes()
    data = json.loads((out / f"panoptic_{split}.json").read_text())
    anns = {a["image_id"]: a for a in data["annotations"]}
    for img in data["images"]:
        prefix = img["id"]
        city = prefix.split("_", 1)[0]
        assert (out / img["image_path"]).resolve() == (
            raw / "leftImg8bit" / split / city / img["file_name"]
        ).resolve()
        label_ids = np.asarray(Image.open(raw / "gtFine" / split / city / f"{prefix}_gtFine_labelIds.png"))
        inst_ids = np.asarray(Image.open(raw / "gtFine" / split / city / f"{prefix}_gtFine_instanceIds.png"))
        pan = read_panoptic_png(out / f"panoptic_{split}" / anns[prefix]["file_name"])
        evaluated = np.isin(label_ids, [c.id for c in cats.categories])
        assert (pan[~evaluated] == 0).all()
        assert (pan[evaluated] == inst_ids[evaluated]).all()
        segs = {s["id"]: s for s in anns[prefix]["segments_info"]}
        assert set(segs) == set(np.unique(pan[pan > 0]).tolist())
        for sid, seg in segs.items():
            mask = pan == sid
            assert seg["area"] == mask.sum()
            assert (label_ids[mask] == seg["category_id"]).all()
            ys, xs = np.nonzero(mask)
            assert seg["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert seg["iscrowd"] == int(sid < 1000 and cats.by_dataset_id(seg["category_id"]).isthing)


def test_ingest_matches_label_and_instance_ids(tree: Path, ingested: Path) -> None:
    assert (ingested / MARKER).is_file()
    assert CategoryMap.load(ingested / "categories.json") == CategoryMap.cityscapes()
    for split in ("train", "val"):
        check_against_raw(tree, ingested, split)


def test_index_counts(ingested: Path) -> None:
    index = pd.read_parquet(ingested / "index_train.parquet").set_index("image_id")
    row = index.loc["aachen_000000_000019"]
    # road, sky, building | car, car, person | cargroup (crowd); ego vehicle is void
    assert (row.num_stuff, row.num_things, row.num_crowd, row.num_segments) == (3, 3, 1, 7)
    assert row["instances:car"] == 2 and row["instances:person"] == 1
    assert row["pixels:person"] == 4 * 12
    assert row.void_pixels == 2 * W
    row = index.loc["bremen_000001_000019"]
    assert (row.num_stuff, row.num_things, row.num_crowd) == (2, 2, 0)
    stats = pd.read_parquet(ingested / "class_stats_train.parquet").set_index("name")
    assert stats.loc["car", "instances"] == 2 and stats.loc["car", "crowd_segments"] == 1
    assert stats.loc["road", "images"] == 2
    assert stats["pixels"].sum() == 2 * H * W - 2 * W
    val = pd.read_parquet(ingested / "index_val.parquet")
    assert len(val) == 1 and val.iloc[0].num_segments == 2


def test_polygons_only_tree_gives_same_result(tree: Path, ingested: Path, tmp_path: Path) -> None:
    """Without instanceIds they are rendered from the polygons by cityscapesscripts (raw tree untouched)."""
    raw = tmp_path / "raw"
    make_cityscapes_tree(raw)
    for p in raw.glob("gtFine/*/*/*_instanceIds.png"):
        p.unlink()
    out = tmp_path / "out"
    ingest_cityscapes(raw, out, ["train"])
    assert not list(raw.glob("gtFine/*/*/*_instanceIds.png"))
    a = json.loads((out / "panoptic_train.json").read_text())
    b = json.loads((ingested / "panoptic_train.json").read_text())
    assert a["annotations"] == b["annotations"]
    for ann in a["annotations"]:
        name = ann["file_name"]
        assert np.array_equal(
            read_panoptic_png(out / "panoptic_train" / name),
            read_panoptic_png(ingested / "panoptic_train" / name),
        )


def test_dataset_on_cityscapes(ingested: Path) -> None:
    cats = CategoryMap.cityscapes()
    ds = PanopticDataset(ingested, "train")
    image, t = ds[0]
    assert t["image_id"] == "aachen_000000_000019" and tuple(image.shape) == (3, H, W)
    # segments in id order: person 24000, then cars 26000, 26001
    person, car = cats.detector_label(cats.train_id(24)), cats.detector_label(cats.train_id(26))
    assert t["labels"].tolist() == [person, car, car]
    assert torch.equal(t["boxes"][0], torch.tensor([22.0, 8.0, 26.0, 20.0]))
    assert (t["semantic"][22:] == IGNORE_INDEX).all()
    assert int(t["segment_iscrowd"].sum()) == 1
    crowd_k = int(torch.nonzero(t["segment_iscrowd"])[0]) + 1
    assert (t["semantic"][t["panoptic"] == crowd_k] == cats.train_id(26)).all()  # crowd keeps its class
    aug = PanopticDataset(
        ingested,
        "train",
        transforms=PanopticTransform(TransformConfig(train=True, scale_range=(0.5, 2.0), crop_size=(16, 32))),
    )
    torch.manual_seed(0)
    for _ in range(5):
        image, t = aug[1]
        assert tuple(image.shape) == (3, 16, 32)
        assert t["masks"].shape[1:] == (16, 32) and t["boxes"].shape[1] == 4


@pytest.mark.skipif(generate_cityscapes_tree is None, reason="unipan_pipeline.synthetic not written yet")
def test_generator_to_ingestion_to_dataset(tmp_path: Path) -> None:
    generate = generate_cityscapes_tree
    raw = tmp_path / "synthetic_cityscapes"
    generate(raw, splits={"train": 2, "val": 1}, height=64, width=128, seed=0)
    out = tmp_path / "cityscapes"
    summary = ingest_cityscapes(raw, out, ["train", "val"], source="synthetic")
    assert summary["splits"]["train"]["images"] == 2 and summary["splits"]["val"]["images"] == 1
    for split in ("train", "val"):
        check_against_raw(raw, out, split)
    # the generator's polygons and instanceIds agree: rendering instanceIds from polygons gives the same data
    polys_only = tmp_path / "polygons_only"
    shutil.copytree(raw, polys_only, ignore=shutil.ignore_patterns("*_instanceIds.png"))
    ingest_cityscapes(polys_only, tmp_path / "from_polygons", ["train"])
    a = json.loads((out / "panoptic_train.json").read_text())["annotations"]
    assert json.loads((tmp_path / "from_polygons" / "panoptic_train.json").read_text())["annotations"] == a
    crop = TransformConfig(train=True, scale_range=(0.5, 2.0), crop_size=(32, 64))
    ds = PanopticDataset(out, "train", transforms=PanopticTransform(crop))
    image, t = ds[0]
    assert tuple(image.shape) == (3, 32, 64) and t["semantic"].shape == (32, 64)


def test_kedro_pipeline_source_selection(tree: Path, tmp_path: Path) -> None:
    params = {
        "source": "auto",
        "real_root": str(tmp_path / "no_real_cityscapes"),
        "synthetic_root": str(tree),
        "out_root": str(tmp_path / "cityscapes"),
        "splits": ["train", "val"],
    }
    assert resolve_source(params) == ("synthetic", tree)
    assert resolve_source({**params, "real_root": str(tree)}) == ("real", tree)  # gtFine/ exists there
    with pytest.raises(ValueError, match="auto, synthetic or real"):
        resolve_source({**params, "source": "kitti"})
    # the registered pipeline needs parameters only (a real tree on a fresh clone has no manifest) ...
    assert create_pipeline("cityscapes").inputs() == {"params:ingest_cityscapes"}
    summary = (
        SequentialRunner()
        .run(create_pipeline("cityscapes"), DataCatalog({"params:ingest_cityscapes": MemoryDataset(params)}))[
            "cityscapes_ingested"
        ]
        .load()
    )
    assert summary["source"].startswith("synthetic")
    assert summary["splits"]["train"]["images"] == 2 and summary["splits"]["val"]["images"] == 1
    check_against_raw(tree, tmp_path / "cityscapes", "train")
    # ... and the demo's variant waits for the generator's manifest
    catalog = DataCatalog(
        {
            "synthetic_cityscapes_manifest": MemoryDataset({"root": str(tree)}),
            "params:ingest_cityscapes": MemoryDataset({**params, "out_root": str(tmp_path / "after")}),
        }
    )
    after = create_pipeline("cityscapes", after_generation=True)
    assert "synthetic_cityscapes_manifest" in after.inputs()
    summary = SequentialRunner().run(after, catalog)["cityscapes_ingested"].load()
    assert summary["splits"]["val"]["images"] == 1
