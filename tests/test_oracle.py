"""Oracle ceilings: ground truth through the heuristic path (PQ 1) and the stride-4 argmax path (PQ < 1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from builders import make_panoptic_sample

from unipan_pipeline.categories import CategoryMap
from unipan_pipeline.data.cityscapes import ingest_cityscapes
from unipan_pipeline.evaluation import PQAccumulator, target_to_panoptic
from unipan_pipeline.evaluation.metrics import collect_metrics
from unipan_pipeline.experiment.oracle import main, oracle_ceilings, oracle_panoptic
from unipan_pipeline.synthetic.tree import generate_cityscapes_tree

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def generated_val(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three generated 64x128 street scenes, ingested."""
    root = tmp_path_factory.mktemp("oracle")
    generate_cityscapes_tree(root / "raw", {"val": 3}, 64, 128, seed=5, progress=False)
    ingest_cityscapes(root / "raw", root / "ingested", ["val"])
    return root / "ingested"


def test_generated_images_heuristic_is_exact_argmax_is_not(generated_val: Path) -> None:
    got = oracle_ceilings(generated_val, "val")
    assert got["heuristic"]["pq"] == pytest.approx(1.0)
    assert got["heuristic"]["pq_th"] == pytest.approx(1.0) and got["heuristic"]["pq_st"] == pytest.approx(1.0)
    argmax = got["argmax"]
    assert argmax["pq"] is not None and 0.3 < argmax["pq"] < 1.0  # the stride-4 grid blurs the boundaries
    assert argmax["sq"] < 1.0
    assert got == oracle_ceilings(generated_val, "val")  # deterministic


def test_argmax_oracle_by_hand(tiny_categories: CategoryMap) -> None:
    """Cell-aligned instances in pure stuff cells. Variant B (s V M = 1 inside, as the stuff's 1 outside)
    keeps them but for one pixel at each corner (bilinear: (1-t)(1-s) < 1/2 there); variant C
    (s (V + M) = 2 inside) makes them grow by the bilinear upsampling; a 2-px-thin one loses pixels.
    (The stuff bands end at rows 21 and 42: the instances keep off those cells.)"""
    _, aligned = make_panoptic_sample(64, 96, [(8, 28, 40, 36, 3), (48, 48, 88, 56, 4)], seed=0)
    gt_ids, gt_segments = target_to_panoptic(aligned, tiny_categories)
    pan, segs = oracle_panoptic(aligned, tiny_categories, "argmax", potential_variant="B")
    inst = [s for s in segs if s["isthing"]]
    assert sorted(s["area"] for s in inst) == [32 * 8 - 4, 40 * 8 - 4]
    acc = PQAccumulator(tiny_categories)
    acc.update(gt_ids, gt_segments, pan.numpy(), segs, image_id="a")
    # both matched (RQ 1), each prediction inside its GT: PQ th = mean IoU
    assert collect_metrics(acc.compute())["pq_th"] == pytest.approx((252 / 256 + 316 / 320) / 2)
    _, segs_c = oracle_panoptic(aligned, tiny_categories, "argmax", potential_variant="C")
    grown = sorted(s["area"] for s in segs_c if s["isthing"])
    assert grown[0] > 32 * 8 and grown[1] > 40 * 8
    _, thin = make_panoptic_sample(64, 96, [(8, 12, 40, 48, 3), (50, 10, 52, 60, 4)], seed=0)
    pan, segs = oracle_panoptic(thin, tiny_categories, "argmax")
    person = [s for s in segs if s["isthing"] and s["category_id"] == 57]
    assert not person or person[0]["area"] != 2 * 50
    _, h_segs = oracle_panoptic(thin, tiny_categories, "heuristic")
    assert [s["area"] for s in h_segs if s["category_id"] == 57] == [2 * 50]
    with pytest.raises(ValueError, match="path"):
        oracle_panoptic(thin, tiny_categories, "median")  # type: ignore[arg-type]


def test_command_line_prints_the_ceilings(generated_val: Path, capsys: pytest.CaptureFixture[str]) -> None:
    got = main([str(generated_val), "--split", "val", "--stuff-area", "64"])
    printed = json.loads(capsys.readouterr().out)
    assert printed == got
    # the stuff-area limit acts on the merger only
    assert got["argmax"] == oracle_ceilings(generated_val, "val")["argmax"]
    assert got["heuristic"] == oracle_ceilings(generated_val, "val", stuff_area_limit=64)["heuristic"]
