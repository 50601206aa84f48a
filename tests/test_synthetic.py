"""Tests of the procedural street-scene generator (Cityscapes layout)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from cityscapesscripts.helpers.annotation import Annotation
from cityscapesscripts.helpers.labels import id2label, labels, name2label
from cityscapesscripts.preparation.createPanopticImgs import convert2panoptic
from cityscapesscripts.preparation.json2instanceImg import createInstanceImage
from cityscapesscripts.preparation.json2labelImg import json2labelImg
from official import official_pq_compute
from PIL import Image, ImageDraw

from unipan_pipeline.pipelines.generate_synthetic import create_pipeline
from unipan_pipeline.pipelines.generate_synthetic.nodes import generate_street_scenes
from unipan_pipeline.synthetic import MANIFEST_NAME, SceneConfig, generate_cityscapes_tree, render_image
from unipan_pipeline.synthetic.paint import base_colour
from unipan_pipeline.synthetic.scene import SceneObject

REPO = Path(__file__).resolve().parents[1]
H, W = 128, 256
THINGS = {lab.name for lab in labels if lab.hasInstances and not lab.ignoreInEval}
STUFF = {lab.name for lab in labels if not lab.hasInstances and not lab.ignoreInEval}


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MANIFEST_NAME
    }


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("synthetic") / "cityscapes"
    manifest = generate_cityscapes_tree(
        root, {"train": 4, "val": 2}, height=H, width=W, seed=3, progress=False
    )
    return root, manifest


def test_layout_and_encodings(tree: tuple[Path, dict]) -> None:
    root, manifest = tree
    assert (
        manifest["complete"] and manifest["height"] == H and manifest["width"] == W and manifest["seed"] == 3
    )
    assert {k: v["images"] for k, v in manifest["splits"].items()} == {"train": 4, "val": 2}
    assert set(manifest["cities"]) == {"alderbrook", "marwick"}
    images = sorted((root / "leftImg8bit").rglob("*_leftImg8bit.png"))
    assert len(images) == 6
    for img_path in images:
        split, city = img_path.parts[-3], img_path.parts[-2]
        stem = img_path.name[: -len("_leftImg8bit.png")]
        assert stem.startswith(city + "_") and len(stem.split("_")[1]) == 6 and len(stem.split("_")[2]) == 6
        rgb = Image.open(img_path)
        assert rgb.mode == "RGB" and rgb.size == (W, H)
        gt = root / "gtFine" / split / city / stem
        lab = np.array(Image.open(f"{gt}_gtFine_labelIds.png"))
        inst = np.array(Image.open(f"{gt}_gtFine_instanceIds.png")).astype(np.int64)
        col = np.array(Image.open(f"{gt}_gtFine_color.png"))
        assert lab.dtype == np.uint8 and lab.shape == (H, W)
        assert col.shape == (H, W, 4) and (col[..., 3] == 255).all()
        assert set(np.unique(lab).tolist()) <= {lab_.id for lab_ in labels if lab_.id >= 0}
        # instance ids: id*1000+k for thing instances, the plain label id for stuff and crowd regions
        is_inst = inst >= 1000
        assert (inst[is_inst] // 1000 == lab[is_inst]).all()
        assert (inst[~is_inst] == lab[~is_inst]).all()
        assert all(id2label[int(i) // 1000].hasInstances for i in np.unique(inst[is_inst]))
        for lid in np.unique(lab).tolist():
            assert (col[lab == lid][:, :3] == id2label[lid].color).all()
        doc = json.loads(Path(f"{gt}_gtFine_polygons.json").read_text())
        assert doc["imgHeight"] == H and doc["imgWidth"] == W
        for obj in doc["objects"]:
            name = obj["label"]
            assert name in name2label or (name.endswith("group") and name[:-5] in name2label)
            assert len(obj["polygon"]) >= 3
            xs, ys = zip(*obj["polygon"], strict=True)
            assert min(xs) >= 0 and max(xs) < W and min(ys) >= 0 and max(ys) < H


def test_polygons_rasterised_by_cityscapesscripts_equal_pngs(tree: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = tree
    jsons = sorted((root / "gtFine").rglob("*_gtFine_polygons.json"))
    assert jsons
    for k, js in enumerate(jsons):
        out = tmp_path / f"{k}_labelIds.png"
        json2labelImg(str(js), str(out), "ids")
        ours = np.array(Image.open(str(js).replace("polygons.json", "labelIds.png")))
        np.testing.assert_array_equal(ours, np.array(Image.open(out)), err_msg=str(js))
        # json2instanceImg() itself cannot save with Pillow >= 13 ("cannot write mode I as PNG"): compare the
        # image its createInstanceImage() draws, before saving.
        annotation = Annotation()
        annotation.fromJsonFile(str(js))
        theirs = np.array(createInstanceImage(annotation, "ids")).astype(np.int64)
        ours = np.array(Image.open(str(js).replace("polygons.json", "instanceIds.png"))).astype(np.int64)
        np.testing.assert_array_equal(ours, theirs, err_msg=str(js))
        out = tmp_path / f"{k}_color.png"
        json2labelImg(str(js), str(out), "color")
        np.testing.assert_array_equal(
            np.array(Image.open(str(js).replace("polygons.json", "color.png"))), np.array(Image.open(out))
        )


def test_convert2panoptic_and_self_pq(tree: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = tree
    convert2panoptic(str(root / "gtFine"), str(tmp_path), useTrainId=False, setNames=["train", "val"])
    for split in ("train", "val"):
        doc = json.loads((tmp_path / f"cityscapes_panoptic_{split}.json").read_text())
        assert len(doc["images"]) == len(doc["annotations"]) == (4 if split == "train" else 2)
        for ann in doc["annotations"]:
            stem = ann["image_id"]
            city = stem.split("_")[0]
            inst = np.array(
                Image.open(root / "gtFine" / split / city / f"{stem}_gtFine_instanceIds.png")
            ).astype(np.int64)
            ours = {int(i) for i in np.unique(inst) if i >= 1000}
            segs = {s["id"]: s for s in ann["segments_info"]}
            theirs = {
                i for i, s in segs.items() if s["iscrowd"] == 0 and id2label[s["category_id"]].hasInstances
            }
            assert ours == theirs
            crowd = {int(i) for i in np.unique(inst) if i < 1000 and id2label[int(i)].hasInstances}
            assert crowd == {i for i, s in segs.items() if s["iscrowd"] == 1}
            png = np.array(Image.open(tmp_path / f"cityscapes_panoptic_{split}" / ann["file_name"])).astype(
                np.int64
            )
            pan = png[..., 0] + 256 * png[..., 1] + 256 * 256 * png[..., 2]
            for sid, s in segs.items():
                assert (pan == sid).sum() == s["area"] == (inst == sid).sum()
        gt_json = str(tmp_path / f"cityscapes_panoptic_{split}.json")
        folder = str(tmp_path / f"cityscapes_panoptic_{split}")
        result = official_pq_compute(gt_json, gt_json, folder, folder)
        assert result["All"]["pq"] == pytest.approx(1.0)
        assert result["Things"]["n"] > 0 and result["Stuff"]["n"] > 0


def test_deterministic_and_independent_of_count(tmp_path: Path) -> None:
    kw = {"height": 64, "width": 128, "progress": False}
    ma = generate_cityscapes_tree(tmp_path / "a", {"train": 3}, seed=7, **kw)
    mb = generate_cityscapes_tree(tmp_path / "b", {"train": 3}, seed=7, workers=2, **kw)  # 2 processes
    generate_cityscapes_tree(tmp_path / "c", {"train": 3}, seed=8, **kw)
    generate_cityscapes_tree(tmp_path / "d", {"train": 5}, seed=7, **kw)
    a, b, c, d = (_files(tmp_path / x) for x in "abcd")
    assert len(a) == 15 and a == b
    assert {k: v for k, v in ma.items() if k != "root"} == {k: v for k, v in mb.items() if k != "root"}
    assert a.keys() == c.keys() and all(a[k] != c[k] for k in a if k.endswith("leftImg8bit.png"))
    assert len(d) == 25 and {k: d[k] for k in a} == a


def _demo_scene() -> SceneConfig:
    params = yaml.safe_load((REPO / "conf/base/parameters_generate_synthetic.yml").read_text())
    return SceneConfig.from_mapping(params["generate_synthetic"]["scene"])


@pytest.mark.parametrize("preset", ["default", "demo"])
def test_hard_cases_in_default_statistics(preset: str) -> None:
    """Both the default scenes and the demo preset of conf/ keep all 19 classes and the hard cases."""
    cfg = SceneConfig() if preset == "default" else _demo_scene()
    totals = {"adjacent": 0, "occluded": 0, "border": 0, "small": 0}
    stats_totals = dict.fromkeys(("adjacent_pairs", "occluded", "border", "small"), 0)
    present: set[str] = set()
    h, w = 128, 256
    for i in range(40):
        img = render_image(0, "train", i, h, w, cfg=cfg)
        present |= {id2label[int(v)].name for v in np.unique(img.label_ids)}
        inst = img.instance_ids
        for key, v in img.stats["hard_cases"].items():
            stats_totals[key] += v
        # independent checks, straight from the maps and polygons
        for a, b in ((inst[:, :-1], inst[:, 1:]), (inst[:-1], inst[1:])):
            totals["adjacent"] += int(((a != b) & (a >= 1000) & (b >= 1000) & (a // 1000 == b // 1000)).any())
        counters: dict[str, int] = {}
        for name, poly in img.objects:
            lab = name2label.get(name)
            if lab is None or not lab.hasInstances:
                continue
            ident = lab.id * 1000 + counters.get(name, 0)
            counters[name] = counters.get(name, 0) + 1
            alone = Image.new("L", (w, h), 0)
            ImageDraw.Draw(alone).polygon(poly, fill=1)
            full = int(np.asarray(alone).sum())
            seen = int((inst == ident).sum())
            totals["occluded"] += int(0 < seen < full)
            totals["small"] += int(0 < seen < 0.001 * h * w)
        edge = np.concatenate([inst[0], inst[-1], inst[:, 0], inst[:, -1]])
        totals["border"] += int((edge >= 1000).any())
    assert all(v > 0 for v in totals.values()), totals
    assert all(v > 0 for v in stats_totals.values()), stats_totals
    assert stats_totals["adjacent_pairs"] >= 10 and stats_totals["occluded"] >= 10
    assert present >= THINGS, THINGS - present
    assert present >= STUFF, STUFF - present


def _thing_stats(cfg: SceneConfig, n: int = 12) -> tuple[int, float]:
    """Number of thing polygons and their median rasterised area over ``n`` images."""
    areas = []
    for i in range(n):
        img = render_image(5, "train", i, H, W, cfg=cfg)
        for name, poly in img.objects:
            lab = name2label.get(name)
            if lab is not None and lab.hasInstances and not name.endswith("group"):
                mask = Image.new("L", (W, H), 0)
                ImageDraw.Draw(mask).polygon(poly, fill=1)
                areas.append(int(np.asarray(mask).sum()))
    return len(areas), float(np.median(areas))


def test_zoom_and_max_depth() -> None:
    count, area = _thing_stats(SceneConfig())
    zoom_count, zoom_area = _thing_stats(SceneConfig(zoom=2.0))
    near_count, _ = _thing_stats(SceneConfig(max_depth=12.0))
    assert zoom_area > 2.0 * area, (area, zoom_area)  # twice the focal length: ~4x the area in view
    assert near_count < 0.7 * count, (count, near_count)
    assert zoom_count > 0 and near_count > 0


def test_class_tint_pulls_base_colours_to_label_colours() -> None:
    car = SceneObject("car", [(0, 0), (4, 0), (4, 4)], (222, 222, 222))
    label = np.asarray(name2label["car"].color, dtype=np.float32)
    np.testing.assert_allclose(base_colour(car, 0.0), [222, 222, 222])
    np.testing.assert_allclose(base_colour(car, 1.0), label)
    np.testing.assert_allclose(base_colour(car, 0.25), 0.75 * np.float32(222) + 0.25 * label, rtol=1e-6)
    # the rendered picture follows: the grey road turns to the purple of its label colour (128, 64, 128)
    plain = {"noise_level": 0.0, "texture_strength": 0.0, "blur": 0.0, "colour_jitter": 0.0}
    purple = []
    for tint in (0.0, 1.0):
        img = render_image(2, "val", 0, H, W, cfg=SceneConfig(class_tint=tint, **plain))
        r, g, b = img.rgb[img.label_ids == name2label["road"].id].astype(np.float32).mean(axis=0)
        purple.append(min(r - g, b - g))
    assert purple[0] < 15 and purple[1] > 40, purple
    with pytest.raises(ValueError, match="class_tint"):
        SceneConfig.from_mapping({"class_tint": 1.5})


def test_reuse_and_refusal(tmp_path: Path) -> None:
    kw = {"height": 64, "width": 128, "progress": False}
    root = tmp_path / "t"
    m1 = generate_cityscapes_tree(root, {"train": 2}, **kw)
    png = next(root.rglob("*_leftImg8bit.png"))
    stamp = png.stat().st_mtime_ns
    assert generate_cityscapes_tree(root, {"train": 2}, **kw) == m1
    assert png.stat().st_mtime_ns == stamp  # reused, not rewritten
    os.remove(png)
    generate_cityscapes_tree(root, {"train": 2}, **kw)
    assert png.is_file()
    generate_cityscapes_tree(root, {"train": 1}, **kw)  # fewer images: the stale one must disappear
    assert len(list(root.rglob("*_leftImg8bit.png"))) == 1
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "x.txt").write_text("x")
    with pytest.raises(FileExistsError, match="foreign"):
        generate_cityscapes_tree(foreign, {"train": 1}, **kw)
    with pytest.raises(ValueError, match="unknown scene parameter"):
        generate_cityscapes_tree(tmp_path / "u", {"train": 1}, scene={"cars": 3}, **kw)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        generate_cityscapes_tree(tmp_path / "u", {"train": 1}, scene={"bus_prob": 2.0}, **kw)
    with pytest.raises(ValueError, match="unknown scene parameter"):
        generate_cityscapes_tree(tmp_path / "u", {"train": 1}, max_instances=3, **kw)
    easy = generate_cityscapes_tree(tmp_path / "e", {"train": 1}, noise_level=0.0, crowd_prob=0.0, **kw)
    assert easy["params"]["scene"]["noise_level"] == 0.0 and easy["params"]["scene"]["crowd_prob"] == 0.0


def test_kedro_pipeline_and_parameters(tmp_path: Path) -> None:
    pipe = create_pipeline()
    (node,) = pipe.nodes
    assert node.inputs == ["params:generate_synthetic"] and node.outputs == ["synthetic_cityscapes_manifest"]
    params = yaml.safe_load((REPO / "conf/base/parameters_generate_synthetic.yml").read_text())[
        "generate_synthetic"
    ]
    assert params["output_dir"] == "data/01_raw/synthetic_cityscapes"
    # the yml lists every knob (the demo preset departs from the defaults on purpose)
    assert set(params["scene"]) == set(SceneConfig().to_dict())
    SceneConfig.from_mapping(params["scene"]).validate()
    catalog = yaml.safe_load((REPO / "conf/base/catalog.yml").read_text())
    assert catalog["synthetic_cityscapes_manifest"]["type"] == "json.JSONDataset"
    small = {
        **params,
        "output_dir": str(tmp_path / "k"),
        "splits": {"val": 1},
        "height": 64,
        "width": 128,
        "progress": False,
    }
    manifest = generate_street_scenes(small)
    assert manifest["splits"]["val"]["images"] == 1
    assert json.loads((tmp_path / "k" / MANIFEST_NAME).read_text()) == manifest
