"""Reports (tables, pictures), metrics.json and the command line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from unipan_pipeline.evaluation import PQAccumulator, write_id_png
from unipan_pipeline.evaluation.__main__ import main as cli_main
from unipan_pipeline.evaluation.metrics import METRIC_KEYS, collect_metrics, write_metrics_json
from unipan_pipeline.evaluation.reports import (
    TABLE_COLUMNS,
    plot_affinity,
    plot_panoptic_comparison,
    plot_pq_bars,
    write_per_class_table,
)

CATS = [
    {"id": 7, "name": "road", "isthing": 0, "color": [128, 64, 128]},
    {"id": 23, "name": "sky", "isthing": 0, "color": [70, 130, 180]},
    {"id": 26, "name": "car", "isthing": 1, "color": [0, 0, 142]},
    {"id": 24, "name": "person", "isthing": 1, "color": [220, 20, 60]},
]


def _scene() -> tuple[np.ndarray, list[dict], np.ndarray, list[dict]]:
    gt = np.full((40, 64), 23, dtype=np.int64)
    gt[20:] = 7
    gt[22:34, 5:25] = 26001
    gt[10:30, 40:46] = 24001
    gt_segs = [
        {"id": 23, "category_id": 23, "iscrowd": 0},
        {"id": 7, "category_id": 7, "iscrowd": 0},
        {"id": 26001, "category_id": 26, "iscrowd": 0},
        {"id": 24001, "category_id": 24, "iscrowd": 0},
    ]
    pred = gt.copy()
    pred[10:30, 40:46] = 7 * (np.arange(10, 30)[:, None] >= 20) + 23 * (np.arange(10, 30)[:, None] < 20)
    pred[0:6, 50:60] = 99  # spurious car
    pred_segs = [
        {"id": 23, "category_id": 23},
        {"id": 7, "category_id": 7},
        {"id": 26001, "category_id": 26},
        {"id": 99, "category_id": 26},
    ]
    return gt, gt_segs, pred, pred_segs


def test_tables_pictures_and_metrics(tmp_path: Path) -> None:
    gt, gt_segs, pred, pred_segs = _scene()
    acc = PQAccumulator(CATS)
    acc.update(gt, gt_segs, pred, pred_segs, image_id="a")
    res = acc.compute()
    stats = acc.class_stats()
    assert (stats[26]["tp"], stats[26]["fp"], stats[24]["fn"]) == (1, 1, 1)

    paths = write_per_class_table(res, stats, tmp_path)
    frame = pd.read_csv(paths[0])
    assert list(frame.columns) == TABLE_COLUMNS and len(frame) == 4
    car = frame.set_index("class").loc["car"]
    assert (car.TP, car.FP, car.FN, bool(car.isthing)) == (1, 1, 0, True)
    assert pytest.approx(1.0 / 1.5) == car.PQ and car.IoU == pytest.approx(1.0)
    md = paths[1].read_text()
    assert "| person | thing |" in md and "| All |" in md

    image = np.random.default_rng(0).integers(0, 255, (40, 64, 3)).astype(np.uint8)
    pics = plot_panoptic_comparison(image, pred, pred_segs, gt, gt_segs, categories=CATS, out_dir=tmp_path)
    pics += plot_pq_bars(res, CATS, tmp_path)
    heat = np.random.default_rng(1).random((10, 16))
    pics += plot_affinity(
        image,
        np.array([[5, 22, 25, 34]]),
        gt,
        gt_segs,
        heat,
        pred_ids=pred,
        pred_segments=pred_segs,
        pixel=(25, 10),
        categories=CATS,
        out_dir=tmp_path,
    )
    for p in pics:
        assert p.parent == tmp_path and p.suffix == ".png"
        with Image.open(p) as im:
            assert im.size[0] > 200 and im.size[1] > 100
    with pytest.raises(ValueError, match=r"\[h, w\]"):
        plot_affinity(
            image,
            np.zeros((0, 4)),
            gt,
            gt_segs,
            heat[None],
            pred_ids=pred,
            pred_segments=pred_segs,
            pixel=(1, 1),
            categories=CATS,
            out_dir=tmp_path,
        )

    out = write_metrics_json(
        tmp_path / "m" / "metrics.json",
        pq=res,
        semantic={"miou": 0.5},
        detection={"ap_box": 0.25, "ap_mask": None},
        extra={"n_images": 1},
    )
    data = json.loads(out.read_text())
    assert set(METRIC_KEYS) <= set(data) and data["n_images"] == 1
    assert data["pq"] == pytest.approx(res["All"]["pq"]) and data["pq_th"] == pytest.approx(
        res["Things"]["pq"]
    )
    assert data["miou"] == 0.5 and data["ap_box"] == 0.25 and data["ap_mask"] is None
    assert all(v is None or 0.0 <= v <= 1.0 for k, v in data.items() if k in METRIC_KEYS)
    assert not list(out.parent.glob(".*tmp"))


def test_metrics_nulls_and_percent_guard() -> None:
    empty_stuff = {
        "All": {"pq": 0.5, "sq": 0.8, "rq": 0.6, "n": 1},
        "Things": {"pq": 0.5, "sq": 0.8, "rq": 0.6, "n": 1},
        "Stuff": {"pq": math.nan, "sq": math.nan, "rq": math.nan, "n": 0},
    }
    m = collect_metrics(pq=empty_stuff, detection={"ap_box": -1.0})
    assert m["pq_st"] is None and m["pq_th"] == 0.5 and m["ap_box"] is None and m["miou"] is None
    with pytest.raises(ValueError, match="fraction"):
        collect_metrics(semantic=75.0)


def test_cli_writes_json_and_reports_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gt, gt_segs, pred, pred_segs = _scene()
    for name, ids, segs in (("gt", gt, gt_segs), ("pred", pred, pred_segs)):
        (tmp_path / name).mkdir()
        write_id_png(tmp_path / name / "a.png", ids)
        (tmp_path / f"{name}.json").write_text(
            json.dumps(
                {
                    "annotations": [{"image_id": "a", "file_name": "a.png", "segments_info": segs}],
                    "categories": CATS,
                }
            )
        )
    out = tmp_path / "res" / "pq.json"
    rc = cli_main(
        [
            "pq",
            "--gt-json",
            str(tmp_path / "gt.json"),
            "--gt-folder",
            str(tmp_path / "gt"),
            "--pred-json",
            str(tmp_path / "pred.json"),
            "--pred-folder",
            str(tmp_path / "pred"),
            "--output",
            str(out),
            "--workers",
            "1",
            "--per-class",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "All" in printed and "Things" in printed and "person" in printed
    data = json.loads(out.read_text())
    assert set(data) == {"All", "Things", "Stuff", "per_class"} and set(data["per_class"]) == {
        "7",
        "23",
        "26",
        "24",
    }
    acc = PQAccumulator(CATS)
    acc.update(gt, gt_segs, pred, pred_segs)
    assert data["All"]["pq"] == acc.compute()["All"]["pq"]
    rc = cli_main(["pq", "--gt-json", str(tmp_path / "gt.json"), "--pred-json", str(tmp_path / "nope.json")])
    assert rc == 2 and "nope.json does not exist" in capsys.readouterr().err
