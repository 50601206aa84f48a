"""Panoptic quality: agreement with panopticapi's pq_compute and cityscapesscripts, in-memory == files,
bad input."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cityscapesscripts.evaluation.evalPanopticSemanticLabeling import evaluatePanoptic
from cityscapesscripts.helpers.labels import labels
from official import official_pq_compute

from unipan_pipeline.evaluation import (
    CorruptPNGError,
    ImageMismatchError,
    MissingFileError,
    PQAccumulator,
    SegmentMismatchError,
    UnknownCategoryError,
    pq_compute_files,
    pq_matching,
    read_id_png,
    write_id_png,
)
from unipan_pipeline.evaluation.__main__ import main as cli_main
from unipan_pipeline.fileio.png import ID_MASK

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "panopticapi_sample"
needs_sample = pytest.mark.skipif(not SAMPLE.is_dir(), reason=f"panopticapi sample data absent: {SAMPLE}")


# ---------------------------------------------------------------------------------------------- helpers
def _quiet(fn: Any, *args: Any, **kwargs: Any) -> Any:
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


def _load_sample() -> tuple[list[dict], list[tuple[np.ndarray, list[dict]]]]:
    data = json.loads((SAMPLE / "panoptic_examples.json").read_text())
    images = []
    for ann in data["annotations"]:
        ids = read_id_png(SAMPLE / "panoptic_examples" / ann["file_name"]).astype(np.int64)
        images.append((ids, copy.deepcopy(ann["segments_info"])))
    return data["categories"], images


def _prune(ids: np.ndarray, segs: list[dict], recount: bool) -> list[dict]:
    """Drop segments absent from ``ids``; optionally recompute areas."""
    present, counts = np.unique(ids, return_counts=True)
    area = dict(zip(present.tolist(), counts.tolist(), strict=True))
    out = []
    for seg in segs:
        if seg["id"] in area:
            new = dict(seg)
            if recount:
                new["area"] = area[seg["id"]]
            out.append(new)
    return out


def _write_set(
    root: Path, name: str, categories: list[dict], cases: list[tuple[str, np.ndarray, list[dict]]]
) -> tuple[Path, Path]:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for image_id, ids, segs in cases:
        fname = f"{image_id}.png"
        write_id_png(folder / fname, ids)
        images.append(
            {
                "id": image_id,
                "file_name": fname.replace(".png", ".jpg"),
                "height": ids.shape[0],
                "width": ids.shape[1],
            }
        )
        anns.append({"image_id": image_id, "file_name": fname, "segments_info": segs})
    js = root / f"{name}.json"
    js.write_text(json.dumps({"images": images, "annotations": anns, "categories": categories}))
    return js, folder


def _new_id(used: set[int], rng: np.random.Generator) -> int:
    while True:
        v = int(rng.integers(1, 1 << 24))
        if v not in used:
            used.add(v)
            return v


def _build_cases(rng: np.random.Generator) -> tuple[list[dict], list, list]:
    """Many (gt, pred) perturbations of the two sample images; returns categories, gt cases, pred cases."""
    categories, images = _load_sample()
    cat_ids = [c["id"] for c in categories]
    thing_ids = [c["id"] for c in categories if c["isthing"] == 1]
    gt_cases: list = []
    pred_cases: list = []

    def add(
        tag: str,
        gt_ids: np.ndarray,
        gt_segs: list[dict],
        pr_ids: np.ndarray,
        pr_segs: list[dict],
        *,
        recount_gt: bool = False,
    ) -> None:
        iid = f"{tag}_{len(gt_cases)}"
        gt_cases.append((iid, gt_ids, _prune(gt_ids, gt_segs, recount_gt)))
        pred_cases.append((iid, pr_ids, _prune(pr_ids, pr_segs, True)))

    for base_ids, base_segs in images:
        used = {s["id"] for s in base_segs}
        noncrowd = [s for s in base_segs if s["iscrowd"] == 0]
        add("identity", base_ids, base_segs, base_ids.copy(), copy.deepcopy(base_segs))
        # dropped segments (-> void in the prediction)
        for frac in (0.2, 0.6):
            pr = base_ids.copy()
            drop = rng.choice(len(base_segs), size=max(1, int(frac * len(base_segs))), replace=False)
            for k in drop:
                pr[pr == base_segs[k]["id"]] = 0
            add("dropped", base_ids, base_segs, pr, copy.deepcopy(base_segs))
        # merged: pairs of same-category segments become one
        pr = base_ids.copy()
        by_cat: dict[int, list[dict]] = {}
        for s in base_segs:
            by_cat.setdefault(s["category_id"], []).append(s)
        for group in by_cat.values():
            for a, b in zip(group[::2], group[1::2], strict=False):
                pr[pr == b["id"]] = a["id"]
        add("merged", base_ids, base_segs, pr, copy.deepcopy(base_segs))
        # split: left / right halves of every segment become two segments
        pr = base_ids.copy()
        segs = copy.deepcopy(base_segs)
        for s in base_segs:
            ys, xs = np.nonzero(base_ids == s["id"])
            cut = np.median(xs)
            nid = _new_id(used, rng)
            pr[ys[xs > cut], xs[xs > cut]] = nid
            segs.append({"id": nid, "category_id": s["category_id"], "iscrowd": 0})
        add("split", base_ids, base_segs, pr, segs)
        # shifted
        for dy, dx in ((3, 5), (-12, 20), (40, -7)):
            add(
                "shifted",
                base_ids,
                base_segs,
                np.roll(base_ids, (dy, dx), axis=(0, 1)),
                copy.deepcopy(base_segs),
            )
        # relabelled
        segs = copy.deepcopy(base_segs)
        for k in rng.choice(len(segs), size=len(segs) // 3, replace=False):
            segs[k]["category_id"] = int(rng.choice(cat_ids))
        add("relabelled", base_ids, base_segs, base_ids.copy(), segs)
        # spurious segments (rectangles painted over the prediction)
        pr = base_ids.copy()
        segs = copy.deepcopy(base_segs)
        h, w = pr.shape
        for _ in range(6):
            y, x = int(rng.integers(0, h - 30)), int(rng.integers(0, w - 30))
            nid = _new_id(used, rng)
            pr[y : y + int(rng.integers(5, 80)), x : x + int(rng.integers(5, 80))] = nid
            segs.append({"id": nid, "category_id": int(rng.choice(cat_ids)), "iscrowd": 0})
        add("spurious", base_ids, base_segs, pr, segs)
        # void in the ground truth: stale json areas (pq_compute uses json areas) and recounted ones
        for recount in (False, True):
            gt = base_ids.copy()
            gt[: h // 3, : w // 2] = 0
            gt[rng.random(gt.shape) < 0.05] = 0
            pr = np.roll(base_ids, (2, 2), axis=(0, 1))
            segs = copy.deepcopy(base_segs)
            nid = _new_id(used, rng)
            pr[5:60, 5:100] = nid  # mostly on gt void -> not a false positive
            segs.append({"id": nid, "category_id": cat_ids[-1], "iscrowd": 0})
            add("void", gt, base_segs, pr, segs, recount_gt=recount)
        # crowd regions: mark some things as crowd; predictions on them of the same / another class
        gt_segs = copy.deepcopy(base_segs)
        things = [k for k, s in enumerate(gt_segs) if s["category_id"] in thing_ids]
        for k in things[::3]:
            gt_segs[k]["iscrowd"] = 1
        for variant in range(3):
            pr = np.roll(base_ids, (variant, -variant), axis=(0, 1))
            segs = copy.deepcopy(base_segs)
            for k in things[::3]:
                ys, xs = np.nonzero(base_ids == gt_segs[k]["id"])
                nid = _new_id(used, rng)
                sel = slice(None, None, variant + 1)
                pr[ys[sel], xs[sel]] = nid
                cat = gt_segs[k]["category_id"] if variant != 2 else int(rng.choice(thing_ids))
                segs.append({"id": nid, "category_id": cat, "iscrowd": 0})
            add("crowd", base_ids, gt_segs, pr, segs)
        # IoU exactly 0.5 (not a match) and just above (a match)
        for extra in (0, 1):
            s = next(s for s in noncrowd if s["area"] % 2 == 0 and s["area"] > 50)
            ys, xs = np.nonzero(base_ids == s["id"])
            assert len(ys) == s["area"]
            keep = s["area"] // 2 + extra
            pr = base_ids.copy()
            pr[ys[keep:], xs[keep:]] = 0
            add(f"iou_half{extra}", base_ids, base_segs, pr, copy.deepcopy(base_segs))
        # empty prediction
        add("empty", base_ids, base_segs, np.zeros_like(base_ids), [])
        # random combinations
        for _ in range(6):
            pr = np.roll(base_ids, tuple(rng.integers(-15, 15, size=2)), axis=(0, 1))
            segs = copy.deepcopy(base_segs)
            for k in rng.choice(len(segs), size=len(segs) // 4, replace=False):
                pr[pr == segs[k]["id"]] = 0
            for k in rng.choice(len(segs), size=len(segs) // 5, replace=False):
                segs[k]["category_id"] = int(rng.choice(cat_ids))
            nid = _new_id(used, rng)
            y, x = int(rng.integers(0, h - 50)), int(rng.integers(0, w - 50))
            pr[y : y + 50, x : x + 50] = nid
            segs.append({"id": nid, "category_id": int(rng.choice(cat_ids)), "iscrowd": 0})
            gt_segs = copy.deepcopy(base_segs)
            for k in rng.choice(len(gt_segs), size=2, replace=False):
                gt_segs[k]["iscrowd"] = 1
            add("random", base_ids, gt_segs, pr, segs)
    return categories, gt_cases, pred_cases


def _assert_close(ours: dict, ref: dict, tol: float = 1e-12) -> None:
    for group in ("All", "Things", "Stuff"):
        assert ours[group]["n"] == ref[group]["n"], group
        for key in ("pq", "sq", "rq"):
            assert abs(ours[group][key] - float(ref[group][key])) <= tol, (group, key)
    assert list(ours["per_class"]) == list(ref["per_class"])
    for cid, r in ref["per_class"].items():
        for key in ("pq", "sq", "rq"):
            assert abs(ours["per_class"][cid][key] - float(r[key])) <= tol, (cid, key)


# ---------------------------------------------------------------------------------------------- COCO
@pytest.fixture(scope="module")
def coco_cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if not SAMPLE.is_dir():
        pytest.skip(f"panopticapi sample data absent: {SAMPLE}")
    root = tmp_path_factory.mktemp("pq_coco")
    categories, gt_cases, pred_cases = _build_cases(np.random.default_rng(0))
    gt_json, gt_dir = _write_set(root, "gt", categories, gt_cases)
    pred_json, pred_dir = _write_set(root, "pred", categories, pred_cases)
    ref = official_pq_compute(str(gt_json), str(pred_json), str(gt_dir), str(pred_dir))
    return {
        "paths": (gt_json, pred_json, gt_dir, pred_dir),
        "ref": ref,
        "categories": categories,
        "gt": gt_cases,
        "pred": pred_cases,
    }


@needs_sample
def test_many_perturbations_agree_with_pq_compute(coco_cases: dict[str, Any]) -> None:
    assert len(coco_cases["gt"]) >= 40
    ours = pq_compute_files(*coco_cases["paths"], workers=2)
    _assert_close(ours, coco_cases["ref"])
    # the cases really exercise the protocol: some but not all classes are perfect
    pqs = [v["pq"] for v in ours["per_class"].values()]
    assert 0 < ours["All"]["pq"] < 1 and min(pqs) == 0 and max(pqs) > 0.5


@needs_sample
def test_each_case_alone_agrees_with_pq_compute(coco_cases: dict[str, Any], tmp_path: Path) -> None:
    """Every tag separately (one pq_compute call over a json per tag would be slow, so compare the per-image
    in-memory stats summed by tag against a second pq_compute on a subset of tags)."""
    tags = ("crowd", "iou_half0", "iou_half1", "void", "empty")
    gt = [c for c in coco_cases["gt"] if c[0].rsplit("_", 1)[0] in tags]
    pred = [c for c in coco_cases["pred"] if c[0].rsplit("_", 1)[0] in tags]
    gj, gd = _write_set(tmp_path, "gt", coco_cases["categories"], gt)
    pj, pd = _write_set(tmp_path, "pred", coco_cases["categories"], pred)
    ref = official_pq_compute(str(gj), str(pj), str(gd), str(pd))
    _assert_close(pq_compute_files(gj, pj, gd, pd, workers=1), ref)


@needs_sample
def test_iou_exactly_half_is_not_a_match(coco_cases: dict[str, Any]) -> None:
    cats = coco_cases["categories"]
    by_id = {c[0]: c for c in coco_cases["gt"]}
    preds = {c[0]: c for c in coco_cases["pred"]}
    for iid in by_id:
        if not iid.startswith("iou_half"):
            continue
        acc = PQAccumulator(cats)
        stats = acc.update(by_id[iid][1], by_id[iid][2], preds[iid][1], preds[iid][2], image_id=iid)
        n_gt = sum(1 for s in by_id[iid][2] if s["iscrowd"] == 0)
        expected_tp = n_gt if iid.startswith("iou_half1") else n_gt - 1
        assert len(stats.matched_cat) == expected_tp, iid
        if iid.startswith("iou_half0"):
            assert len(stats.fn_cat) == 1 and len(stats.fp_cat) == 1


@needs_sample
def test_in_memory_equals_files_bitwise_and_workers_do_not_matter(coco_cases: dict[str, Any]) -> None:
    one, acc1 = pq_compute_files(*coco_cases["paths"], workers=1, return_accumulator=True)
    two, acc2 = pq_compute_files(*coco_cases["paths"], workers=2, return_accumulator=True)
    mem = PQAccumulator(coco_cases["categories"])
    for (iid, gt_ids, gt_segs), (_, pr_ids, pr_segs) in zip(
        coco_cases["gt"], coco_cases["pred"], strict=True
    ):
        mem.update(gt_ids, gt_segs, pr_ids.astype(np.int32), pr_segs, image_id=iid)
    assert one == two == mem.compute()
    assert acc1.iou == acc2.iou == mem.iou
    assert (acc1.tp == mem.tp).all() and (acc1.fp == mem.fp).all() and (acc1.fn == mem.fn).all()


def test_in_memory_torch_and_big_ids() -> None:
    torch = pytest.importorskip("torch")
    cats = [{"id": 1, "name": "a", "isthing": 1}, {"id": 2, "name": "b", "isthing": 0}]
    gt = np.zeros((8, 8), dtype=np.int64)
    gt[:4] = 10**12  # ids beyond 2^24 go through the sorted-search path
    gt[4:] = 7
    pred = torch.zeros(8, 8, dtype=torch.int32)
    pred[:4] = 3
    pred[4:6] = 5
    acc = PQAccumulator(cats)
    acc.update(
        gt,
        [{"id": 10**12, "category_id": 1, "iscrowd": 0}, {"id": 7, "category_id": 2, "iscrowd": 0}],
        pred,
        [{"id": 3, "category_id": 1}, {"id": 5, "category_id": 2}],
    )
    res = acc.compute()
    assert res["Things"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 1}
    assert res["Stuff"]["n"] == 1 and res["Stuff"]["pq"] == 0.0  # IoU 16/32 = 0.5 exactly: FP + FN


def test_empty_group_is_nan_not_zero_division() -> None:
    cats = [{"id": 1, "name": "a", "isthing": 1}, {"id": 2, "name": "b", "isthing": 0}]
    ids = np.ones((4, 4), dtype=np.int32)
    acc = PQAccumulator(cats)
    acc.update(ids, [{"id": 1, "category_id": 1, "iscrowd": 0}], ids, [{"id": 1, "category_id": 1}])
    res = acc.compute()
    assert res["All"]["n"] == 1 and res["Things"]["pq"] == 1.0
    assert res["Stuff"]["n"] == 0 and all(math.isnan(res["Stuff"][k]) for k in ("pq", "sq", "rq"))
    assert res["per_class"][2] == {"pq": 0.0, "sq": 0.0, "rq": 0.0}


# ---------------------------------------------------------------------------------------------- Cityscapes
def _cityscapes_set(rng: np.random.Generator, n: int) -> tuple[list[dict], list, list]:
    """Cityscapes-style panoptic GT (as createPanopticImgs writes it: label ids, things id*1000+k, crowd =
    thing regions without instance id) and perturbed predictions."""
    evaluated = [lb for lb in labels if not lb.ignoreInEval]
    categories = [
        {
            "id": lb.id,
            "name": lb.name,
            "color": list(lb.color),
            "supercategory": lb.category,
            "isthing": 1 if lb.hasInstances else 0,
        }
        for lb in evaluated
    ]
    stuff = [lb.id for lb in evaluated if not lb.hasInstances]
    things = [lb.id for lb in evaluated if lb.hasInstances]
    gt_cases, pred_cases = [], []
    h, w = 48, 96
    for i in range(n):
        inst = np.full((h, w), int(rng.choice(stuff)), dtype=np.int64)
        inst[: h // 2] = int(rng.choice(stuff))
        inst[rng.random((h, w)) < 0.03] = 0  # unlabeled -> void (ignoreInEval)
        for k in range(int(rng.integers(2, 7))):
            cls = int(rng.choice(things))
            y, x = int(rng.integers(0, h - 8)), int(rng.integers(0, w - 8))
            inst[y : y + int(rng.integers(4, 20)), x : x + int(rng.integers(4, 30))] = (
                cls * 1000 + k if k % 4 else cls
            )  # every 4th: a crowd (group) region
        segs = []
        for sid in np.unique(inst).tolist():
            if sid == 0:
                continue
            cls = sid if sid < 1000 else sid // 1000
            segs.append(
                {
                    "id": sid,
                    "category_id": cls,
                    "area": int((inst == sid).sum()),
                    "iscrowd": 1 if sid < 1000 and cls in things else 0,
                }
            )
        pred = np.roll(inst, (int(rng.integers(-2, 3)), int(rng.integers(-3, 4))), axis=(0, 1))
        psegs = [{"id": s["id"], "category_id": s["category_id"]} for s in segs]
        if i % 3 == 0 and psegs:
            psegs[-1]["category_id"] = int(rng.choice(things))
        nid = 999_999
        pred[rng.integers(0, h - 6) :, : int(rng.integers(3, 12))] = nid
        psegs.append({"id": nid, "category_id": int(rng.choice(stuff + things))})
        iid = f"city{i}_000000_000019"
        gt_cases.append((iid, inst, segs))
        pred_cases.append((iid, pred, _prune(pred, psegs, True)))
    return categories, gt_cases, pred_cases


def test_agrees_with_cityscapes_evaluation(tmp_path: Path) -> None:
    categories, gt_cases, pred_cases = _cityscapes_set(np.random.default_rng(1), 24)
    gj, gd = _write_set(tmp_path, "cityscapes_panoptic_val", categories, gt_cases)
    pj, pd = _write_set(tmp_path, "pred", categories, pred_cases)
    ref = _quiet(evaluatePanoptic, str(gj), str(gd), str(pj), str(pd), str(tmp_path / "res.json"))
    ours = pq_compute_files(gj, pj, gd, pd, workers=2)
    _assert_close(ours, ref)
    mem = PQAccumulator(categories)
    for (iid, g, gs), (_, p, ps) in zip(gt_cases, pred_cases, strict=True):
        mem.update(g, gs, p, ps, image_id=iid)
    assert mem.compute() == ours
    assert 0 < ours["All"]["pq"] < 1 and ours["Things"]["n"] > 0 and ours["Stuff"]["n"] > 0


# ---------------------------------------------------------------------------------------------- bad input
def _tiny_set(tmp_path: Path) -> tuple[Path, Path, Path, Path, list[dict]]:
    cats = [{"id": 1, "name": "thing", "isthing": 1}, {"id": 2, "name": "stuff", "isthing": 0}]
    ids = np.zeros((6, 6), dtype=np.int64)
    ids[:3] = 5
    ids[3:] = 9
    segs = [
        {"id": 5, "category_id": 1, "iscrowd": 0, "area": 18},
        {"id": 9, "category_id": 2, "iscrowd": 0, "area": 18},
    ]
    gj, gd = _write_set(tmp_path, "gt", cats, [("img_a", ids, segs), ("img_b", ids, segs)])
    pj, pd = _write_set(tmp_path, "pred", cats, [("img_a", ids, segs), ("img_b", ids, segs)])
    return gj, pj, gd, pd, cats


def _edit_pred(pj: Path, fn: Any) -> None:
    data = json.loads(pj.read_text())
    fn(data)
    pj.write_text(json.dumps(data))


def test_bad_input_errors(tmp_path: Path) -> None:
    gj, pj, gd, pd, _ = _tiny_set(tmp_path)
    assert pq_compute_files(gj, pj, gd, pd, workers=1)["All"]["pq"] == 1.0

    (pd / "img_b.png").unlink()
    with pytest.raises(MissingFileError, match=r"img_b.*prediction PNG .*img_b\.png does not exist"):
        pq_compute_files(gj, pj, gd, pd, workers=1)
    with pytest.raises(ValueError, match="img_b"):  # also from a worker process
        pq_compute_files(gj, pj, gd, pd, workers=2)


def test_corrupt_png_is_named(tmp_path: Path) -> None:
    gj, pj, gd, pd, _ = _tiny_set(tmp_path)
    (pd / "img_b.png").write_bytes((pd / "img_b.png").read_bytes()[:40])
    pattern = r"image 'img_b': panoptic PNG .*pred/img_b\.png cannot be decoded"
    with pytest.raises(CorruptPNGError, match=pattern):
        pq_compute_files(gj, pj, gd, pd, workers=1)
    with pytest.raises(ValueError, match=pattern):  # also from a worker process
        pq_compute_files(gj, pj, gd, pd, workers=2)


@pytest.mark.parametrize(
    ("edit", "error", "pattern"),
    [
        (
            lambda d: d["annotations"][1]["segments_info"].append({"id": 77, "category_id": 1}),
            SegmentMismatchError,
            r"img_b.*\[77\] are in segments_info but not in the PNG",
        ),
        (
            lambda d: d["annotations"][0]["segments_info"].pop(0),
            SegmentMismatchError,
            r"img_a.*predicted segment ids \[5\] are in the PNG/id map but not in",
        ),
        (
            lambda d: d["annotations"][0]["segments_info"][1].update(category_id=42),
            UnknownCategoryError,
            r"img_a.*segment 9 has unknown category_id 42",
        ),
        (
            lambda d: d["annotations"].append(
                {"image_id": "img_c", "file_name": "img_a.png", "segments_info": []}
            ),
            ImageMismatchError,
            r"\['img_c'\] are not in the ground truth",
        ),
        (
            lambda d: d["annotations"].pop(1),
            ImageMismatchError,
            r"no prediction for the image with id 'img_b'",
        ),
        (
            lambda d: d["annotations"][0]["segments_info"].append({"id": 5, "category_id": 1}),
            SegmentMismatchError,
            r"img_a.*segment id 5 is listed twice",
        ),
    ],
)
def test_bad_prediction_json(tmp_path: Path, edit: Any, error: type, pattern: str) -> None:
    gj, pj, gd, pd, _ = _tiny_set(tmp_path)
    _edit_pred(pj, edit)
    with pytest.raises(error, match=pattern):
        pq_compute_files(gj, pj, gd, pd, workers=1)
    assert issubclass(error, ValueError)


def test_bad_ground_truth_and_in_memory(tmp_path: Path) -> None:
    gj, pj, gd, pd, cats = _tiny_set(tmp_path)
    _edit_pred(gj, lambda d: d["annotations"][1]["segments_info"][0].update(category_id=3))
    with pytest.raises(
        UnknownCategoryError, match=r"img_b.*ground-truth segment 5 has unknown category_id 3"
    ):
        pq_compute_files(gj, pj, gd, pd, workers=1)
    acc = PQAccumulator(cats)
    ids = np.full((4, 4), 5)
    with pytest.raises(
        SegmentMismatchError, match=r"image 'x'.*ground-truth segment ids \[5\] are in the PNG"
    ):
        acc.update(ids, [], ids, [{"id": 5, "category_id": 1}], image_id="x")
    with pytest.raises(ValueError, match=r"image 'y'.*4x4.*4x5"):
        acc.update(
            ids,
            [{"id": 5, "category_id": 1, "iscrowd": 0}],
            np.full((4, 5), 5),
            [{"id": 5, "category_id": 1}],
            image_id="y",
        )
    acc.update(ids, [{"id": 5, "category_id": 1, "iscrowd": 0}], ids, [{"id": 5, "category_id": 1}], "z")
    with pytest.raises(ImageMismatchError, match="'z' was evaluated twice"):
        acc.update(ids, [{"id": 5, "category_id": 1, "iscrowd": 0}], ids, [{"id": 5, "category_id": 1}], "z")


def test_update_from_model_outputs_and_targets() -> None:
    torch = pytest.importorskip("torch")
    from unipan_pipeline.categories import CategoryMap  # noqa: PLC0415
    from unipan_pipeline.evaluation import target_to_panoptic, update_from_model  # noqa: PLC0415

    cmap = CategoryMap.cityscapes()
    pan = torch.zeros(6, 8, dtype=torch.int64)
    pan[:3] = 1  # road (train id 0)
    pan[3:, :4] = 2  # car (train id 13)
    pan[3:, 4:] = 3  # crowd of cars
    target = {
        "panoptic": pan,
        "segment_classes": torch.tensor([0, 13, 13, 5]),
        "segment_iscrowd": torch.tensor([False, False, True, False]),
        "image_id": "frankfurt_1",
    }
    ids, segs = target_to_panoptic(target, cmap)
    assert [(s["id"], s["category_id"], s["iscrowd"], s["area"]) for s in segs] == [
        (1, 7, 0, 24),
        (2, 26, 0, 12),
        (3, 26, 1, 12),
    ]  # segment 4 has no pixel: dropped
    out_ids = torch.from_numpy(ids.astype(np.int32)).clone()
    out_ids[3:, 4:] = 9  # a car predicted on the crowd region: ignored, not a false positive
    output = {
        "panoptic": out_ids,
        "segments_info": [
            {"id": 1, "category_id": 7, "isthing": False, "score": 1.0, "area": 24},
            {"id": 2, "category_id": 26, "isthing": True, "score": 0.9, "area": 12},
            {"id": 9, "category_id": 26, "isthing": True, "score": 0.8, "area": 12},
        ],
    }
    acc = PQAccumulator(cmap)
    update_from_model(acc, [output], [target], cmap)
    res = acc.compute()
    assert res["All"] == {"pq": 1.0, "sq": 1.0, "rq": 1.0, "n": 2}
    assert res["per_class"][26] == {"pq": 1.0, "sq": 1.0, "rq": 1.0}


def test_agrees_with_cityscapes_on_generated_tree(tmp_path: Path) -> None:
    """Synthetic Cityscapes tree -> the official converter (createPanopticImgs) -> perturbed predictions ->
    cityscapesscripts' evaluatePanoptic vs ours."""
    from cityscapesscripts.preparation.createPanopticImgs import convert2panoptic  # noqa: PLC0415

    from unipan_pipeline.synthetic import generate_cityscapes_tree  # noqa: PLC0415

    generate_cityscapes_tree(tmp_path / "cs", splits={"val": 6}, height=64, width=128, seed=0, progress=False)
    (tmp_path / "pan").mkdir()
    _quiet(convert2panoptic, str(tmp_path / "cs" / "gtFine"), str(tmp_path / "pan"), False, ["val"])
    gt_json = tmp_path / "pan" / "cityscapes_panoptic_val.json"
    gt_dir = tmp_path / "pan" / "cityscapes_panoptic_val"
    gt = json.loads(gt_json.read_text())
    rng = np.random.default_rng(5)
    thing_ids = [c["id"] for c in gt["categories"] if c["isthing"]]
    preds = []
    for k, ann in enumerate(gt["annotations"]):
        ids = read_id_png(gt_dir / ann["file_name"]).astype(np.int64)
        pred = np.roll(ids, (k % 3, -(k % 4)), axis=(0, 1))
        segs = [{"id": s["id"], "category_id": s["category_id"]} for s in ann["segments_info"]]
        for s in segs[:: 4 + k % 3]:
            s["category_id"] = int(rng.choice(thing_ids))
        pred[rng.random(pred.shape) < 0.02] = 0
        preds.append((ann["image_id"], pred, _prune(pred, segs, recount=True)))
    pred_json, pred_dir = _write_set(tmp_path, "pred", gt["categories"], preds)
    ref = _quiet(
        evaluatePanoptic, str(gt_json), str(gt_dir), str(pred_json), str(pred_dir), str(tmp_path / "r.json")
    )
    ours = pq_compute_files(gt_json, pred_json, gt_dir, pred_dir, workers=2)
    _assert_close(ours, ref)
    assert 0 < ours["All"]["pq"] < 1 and ours["Things"]["n"] > 0


# ---------------------------------------------------------------------------------------------- compat
_COMPAT_CATS = [
    {"id": 1, "name": "person", "isthing": 1},
    {"id": 2, "name": "car", "isthing": 1},
    {"id": 3, "name": "road", "isthing": 0},
]


def _compat_set() -> tuple[list, list]:
    """Three 24x32 images: road, people and cars (one crowd car region), void rows, imperfect predictions
    (shifted, plus a spurious person)."""
    rng = np.random.default_rng(11)
    gt_cases, pred_cases = [], []
    for k in range(3):
        gt = np.full((24, 32), 1, dtype=np.int64)  # road, id 1
        segs = [{"id": 1, "category_id": 3, "iscrowd": 0}]
        for j in range(4):
            sid = 10 + j
            y, x = int(rng.integers(2, 16)), int(rng.integers(0, 24))
            gt[y : y + 7, x : x + 7] = sid
            segs.append({"id": sid, "category_id": 1 + j % 2, "iscrowd": int(j == 3)})
        gt[:2] = 0  # void
        pred = np.roll(gt, (1, k), axis=(0, 1))
        pred[pred == 0] = 1
        psegs = [{"id": s["id"], "category_id": s["category_id"]} for s in segs]
        pred[20:, :5] = 50  # a spurious person
        psegs.append({"id": 50, "category_id": 1})
        gt_cases.append((f"img{k}", gt, _prune(gt, segs, recount=True)))
        pred_cases.append((f"img{k}", pred, _prune(pred, psegs, recount=True)))
    return gt_cases, pred_cases


def _pq(root: Path, gt_cases: list, pred_cases: list, **kwargs: Any) -> dict:
    gj, gd = _write_set(root, "gt", _COMPAT_CATS, gt_cases)
    pj, pd = _write_set(root, "pred", _COMPAT_CATS, pred_cases)
    return pq_compute_files(gj, pj, gd, pd, workers=1, **kwargs)


def _check_compat_case(tmp_path: Path, gt_cases: list, pred_cases: list, strict_error: str) -> dict:
    """Strict (API and command line) raises ``strict_error``; compat (API, 1 and 2 workers, command line)
    gives ``pq_compute``'s numbers. Returns ours."""
    gj, gd = _write_set(tmp_path, "gt", _COMPAT_CATS, gt_cases)
    pj, pd = _write_set(tmp_path, "pred", _COMPAT_CATS, pred_cases)
    with pytest.raises(ValueError, match=strict_error):
        pq_compute_files(gj, pj, gd, pd, workers=1)
    ref = official_pq_compute(gj, pj, gd, pd)
    ours = pq_compute_files(gj, pj, gd, pd, workers=1, compat="panopticapi")
    _assert_close(ours, ref)
    assert pq_compute_files(gj, pj, gd, pd, workers=2, compat="panopticapi") == ours
    argv = ["pq", "--gt-json", str(gj), "--pred-json", str(pj), "--workers", "1"]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert _quiet(cli_main, argv) == 2
    assert re.search(strict_error, err.getvalue())
    out = tmp_path / "res.json"
    assert _quiet(cli_main, [*argv, "--compat", "panopticapi", "--output", str(out)]) == 0
    assert json.loads(out.read_text())["All"] == ours["All"]
    return ours


def test_compat_predicted_image_not_in_ground_truth(tmp_path: Path) -> None:
    gt_cases, pred_cases = _compat_set()
    ids = gt_cases[0][1].copy()
    extra = ("img_extra", ids, _prune(ids, [{"id": 10, "category_id": 2}], recount=False))
    ours = _check_compat_case(
        tmp_path, gt_cases, [*pred_cases, extra], r"\['img_extra'\] are not in the ground truth"
    )
    # ignored (even its PNG, here inconsistent with its json): the numbers without the extra image
    assert _pq(tmp_path / "plain", gt_cases, pred_cases) == ours
    assert 0 < ours["All"]["pq"] < 1


def test_compat_ground_truth_segment_without_pixels(tmp_path: Path) -> None:
    gt_cases, pred_cases = _compat_set()
    base = _pq(tmp_path / "plain", gt_cases, pred_cases)
    iid, ids, segs = gt_cases[1]
    crowd_car = next(s for s in segs if s["iscrowd"] == 1)
    assert crowd_car["category_id"] == 2
    # the crowd car region has a car predicted on it: ignored with the real crowd region ...
    pred_ids = pred_cases[1][1].copy()
    pred_ids[ids == crowd_car["id"]] = 60
    pred_cases[1] = (iid, pred_ids, _prune(pred_ids, [*pred_cases[1][2], {"id": 60, "category_id": 2}], True))
    with_crowd = _pq(tmp_path / "crowd", gt_cases, pred_cases)
    # ... but not once a pixel-less crowd car segment listed last is the crowd region (pq_compute's rule);
    # and a pixel-less person is a false negative; json areas of pixel-less segments are not read (0 here)
    segs = [
        *segs,
        {"id": 90, "category_id": 1, "iscrowd": 0, "area": 12},
        {"id": 91, "category_id": 2, "iscrowd": 1, "area": 0},
    ]
    gt_cases[1] = (iid, ids, segs)
    ours = _check_compat_case(
        tmp_path, gt_cases, pred_cases, r"img1.*ground-truth segment 91 has json area 0 <= 0"
    )
    segs[-1]["area"] = 30  # strict, without the area problem: the pixel-less segments themselves
    with pytest.raises(SegmentMismatchError, match=r"segment ids \[90, 91\] are in segments_info but not"):
        _pq(tmp_path / "strict", gt_cases, pred_cases)
    assert ours["per_class"][1]["pq"] < base["per_class"][1]["pq"]  # the extra false negative
    assert ours["per_class"][2]["pq"] < with_crowd["per_class"][2]["pq"]  # the car is now a false positive


def test_compat_ground_truth_png_id_not_in_json(tmp_path: Path) -> None:
    gt_cases, pred_cases = _compat_set()
    base = _pq(tmp_path / "plain", gt_cases, pred_cases)
    iid, ids, segs = gt_cases[2]
    ids = ids.copy()
    ids[14:20, 20:30] = 77  # under road and maybe things of the prediction, not listed in the json
    ids[0:2, 0:6] = 78  # and over void, where the prediction has road
    gt_cases[2] = (iid, ids, _prune(ids, segs, recount=True))
    ours = _check_compat_case(
        tmp_path, gt_cases, pred_cases, r"ground-truth segment ids \[77, 78\] are in the PNG/id map but not"
    )
    assert ours["All"]["pq"] != base["All"]["pq"]


def test_compat_value_is_checked(tmp_path: Path) -> None:
    gt_cases, pred_cases = _compat_set()
    with pytest.raises(ValueError, match=r"compat must be None \(strict\) or one of \['panopticapi'\]"):
        _pq(tmp_path, gt_cases, pred_cases, compat="cityscapes")
    with pytest.raises(ValueError, match="compat must be"):
        PQAccumulator(_COMPAT_CATS, compat="yes")
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit):
        cli_main(["pq", "--gt-json", "g.json", "--pred-json", "p.json", "--compat", "pycoco"])
    assert "invalid choice: 'pycoco'" in err.getvalue()
    # in memory: the same tolerance (cases b and c) through the accumulator
    iid, ids, segs = gt_cases[0]
    strict, compat = PQAccumulator(_COMPAT_CATS), PQAccumulator(_COMPAT_CATS, compat="panopticapi")
    extra = [*segs, {"id": 95, "category_id": 1, "iscrowd": 0}]
    with pytest.raises(SegmentMismatchError, match=r"\[95\] are in segments_info"):
        strict.update(ids, extra, pred_cases[0][1], pred_cases[0][2], image_id=iid)
    stats = compat.update(ids, extra, pred_cases[0][1], pred_cases[0][2], image_id=iid)
    assert 0 in stats.fn_cat.tolist()  # the person (category index 0) without pixels: a false negative


def test_command_line_process_is_light_and_agrees(tmp_path: Path) -> None:
    """``python -m unipan_pipeline.evaluation pq`` as its own process (forked workers): the API's numbers,
    and no torch / kedro / pycocotools / matplotlib imported on the way."""
    gt_cases, pred_cases = _compat_set()
    gj, gd = _write_set(tmp_path, "gt", _COMPAT_CATS, gt_cases)
    pj, pd = _write_set(tmp_path, "pred", _COMPAT_CATS, pred_cases)
    out = tmp_path / "res.json"
    args = ["pq", "--gt-json", str(gj), "--pred-json", str(pj), "--workers", "2", "--output", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "unipan_pipeline.evaluation", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    ours = pq_compute_files(gj, pj, gd, pd, workers=1)
    assert json.loads(out.read_text())["All"] == ours["All"]
    probe = (
        "import sys, contextlib, io\n"
        "from unipan_pipeline.evaluation.__main__ import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    assert main({args!r}) == 0\n"
        "heavy = ('torch', 'kedro', 'pycocotools', 'matplotlib', 'mlflow')\n"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


@pytest.mark.parametrize("block", [1, 5, 64, 1 << 18])
def test_joint_runs_by_blocks_equal_a_plain_run_length_encoding(
    block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``joint_runs`` compares the maps block by block; any block size gives the run-length encoding of the
    pairs, a run that crosses a block seam included, and masks the values when asked."""
    monkeypatch.setattr(pq_matching, "_RUN_BLOCK", block)
    rng = np.random.default_rng(block)
    gt = np.repeat(rng.integers(0, 4, size=(37, 9)), 3, axis=1).astype(np.uint32)  # runs of 3..many
    pred = np.repeat(rng.integers(0, 3, size=(37, 27 // 9)), 9, axis=1).astype(np.uint32)
    gt[5:9] = (7 << 24) | 2  # a changing alpha byte: masked values
    flat = np.stack([gt.reshape(-1), pred.reshape(-1)], axis=1)
    starts = [0] + [i for i in range(1, len(flat)) if (flat[i] != flat[i - 1]).any()]
    lengths = np.diff([*starts, len(flat)])
    g_run, p_run, got_lengths = pq_matching.joint_runs(gt, pred, value_mask=ID_MASK)
    np.testing.assert_array_equal(got_lengths, lengths)
    np.testing.assert_array_equal(g_run, flat[starts, 0] & 0xFFFFFF)
    np.testing.assert_array_equal(p_run, flat[starts, 1])
    assert got_lengths.sum() == gt.size
