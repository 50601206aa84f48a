"""Fig. 1's experiment: box perturbation, PQ of argmax(P) / argmax(Psi) / heuristic merger under it, and the
``robustness_cityscapes`` pipeline on the tiny demo model (``tiny_project`` of ``test_experiment.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from builders import make_panoptic_sample, tiny_config
from kedro_project import run_kedro
from mlflow.tracking import MlflowClient

from unipan_pipeline.categories import CategoryMap
from unipan_pipeline.evaluation import PQAccumulator, target_to_panoptic
from unipan_pipeline.evaluation.metrics import collect_metrics
from unipan_pipeline.experiment.robustness import METHODS, perturb_boxes, pq_under_box_perturbation
from unipan_pipeline.experiment.train import prediction_at_size
from unipan_pipeline.model import build_model

torch.set_num_threads(1)

BOXES = torch.tensor([[0.0, 0.0, 40.0, 30.0], [10.0, 5.0, 60.0, 45.0], [50.0, 20.0, 64.0, 48.0]])
SIZE = (48, 64)


def _area(b: torch.Tensor) -> torch.Tensor:
    return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])


def test_zero_perturbation_is_the_identity() -> None:
    out = perturb_boxes(BOXES, 0.0, SIZE, torch.Generator().manual_seed(0))
    assert torch.equal(out, BOXES) and out is not BOXES
    assert perturb_boxes(BOXES[:0], 0.3, SIZE, torch.Generator()).shape == (0, 4)


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.3])
def test_perturbed_boxes_stay_inside_shrink_and_move(fraction: float) -> None:
    g = torch.Generator().manual_seed(3)
    boxes = torch.rand(200, 2, generator=g) * torch.tensor([40.0, 30.0])
    boxes = torch.cat([boxes, boxes + 2 + torch.rand(200, 2, generator=g) * 20], 1)  # inside 64x48
    out = perturb_boxes(boxes, fraction, SIZE, torch.Generator().manual_seed(0))
    assert out.shape == boxes.shape and out.dtype == boxes.dtype
    assert (out[:, 0] >= 0).all() and (out[:, 1] >= 0).all()
    assert (out[:, 2] <= SIZE[1]).all() and (out[:, 3] <= SIZE[0]).all()
    assert (out[:, 2] > out[:, 0]).all() and (out[:, 3] > out[:, 1]).all()
    # shrunk: at most (1 - f)^2 of the area (clipping only removes more); the size before clipping
    assert (_area(out) <= (1 - fraction) ** 2 * _area(boxes) + 1e-4).all()
    inside = (out[:, 0] > 0) & (out[:, 1] > 0) & (out[:, 2] < SIZE[1]) & (out[:, 3] < SIZE[0])
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    torch.testing.assert_close((out[:, 2] - out[:, 0])[inside], ((1 - fraction) * w)[inside])
    # the centre moves by up to the fraction of the size, in random directions (not all the same way)
    centre = lambda b: torch.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2], 1)  # noqa: E731
    shift = (centre(out) - centre(boxes))[inside] / torch.stack([w, h], 1)[inside]
    assert (shift.norm(dim=1) <= fraction + 1e-5).all() and shift.norm(dim=1).max() > fraction / 2
    assert (shift[:, 0] > 0).any() and (shift[:, 0] < 0).any() and (shift[:, 1] > 0).any()
    # reproducible with the same seed
    assert torch.equal(out, perturb_boxes(boxes, fraction, SIZE, torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError, match="fraction"):
        perturb_boxes(boxes, 1.0, SIZE, g)


def test_pq_under_box_perturbation_on_a_tiny_model(tiny_categories: CategoryMap) -> None:
    """The node's computation on an in-memory tiny model: at 0 % argmax(P) and the merger give the PQ of the
    model's own outputs; every row has the three methods; the model is left as it was."""
    samples = []
    for seed, inst in ((1, [(8, 10, 40, 50, 3), (30, 20, 70, 60, 4)]), (2, [(5, 30, 40, 60, 4)])):
        image, target = make_panoptic_sample(64, 96, inst, seed=seed)
        samples.append((image, *target_to_panoptic(target, tiny_categories)))
    torch.manual_seed(0)
    model = build_model(tiny_config(heuristic_score_thresh=0.0, heuristic_stuff_area=0), tiny_categories)
    rows = pq_under_box_perturbation(model, lambda: iter(samples), [0.0, 0.3], seed=0)
    assert [r["fraction"] for r in rows] == [0.0, 0.3]
    for row in rows:
        for method in METHODS:
            assert row[f"pq_th_{method}"] is None or 0.0 <= row[f"pq_th_{method}"] <= 1.0
    assert model.box_perturbation is None and model.training and not model.return_potentials

    def reference(**changes: object) -> dict:
        ref = build_model(
            tiny_config(heuristic_score_thresh=0.0, heuristic_stuff_area=0, **changes), tiny_categories
        )
        ref.load_state_dict(model.state_dict())
        ref.eval()
        acc = PQAccumulator(tiny_categories)
        with torch.no_grad():
            for i, (image, gt_ids, gt_segments) in enumerate(samples):
                ids, segs = prediction_at_size(ref([image])[0], gt_ids.shape)
                acc.update(gt_ids, gt_segments, ids, segs, image_id=str(i))
        return collect_metrics(acc.compute())

    assert rows[0]["pq_argmax_p"] == pytest.approx(reference()["pq"])
    assert rows[0]["pq_heuristic"] == pytest.approx(reference(inference="heuristic")["pq"])
    with pytest.raises(ValueError, match="affinity head and masks"):
        pq_under_box_perturbation(build_model(tiny_config(use_affinity=False), tiny_categories), list, [0.0])


def test_robustness_pipeline_on_the_demo_model(tiny_project: Path) -> None:
    params = {"robustness_cityscapes": {"max_images": 2, "progress_bar": False}}
    run_kedro(tiny_project, ["robustness_cityscapes"], params)
    report = tiny_project / "data/08_reporting/robustness_cityscapes"
    table = pd.read_csv(report / "table.csv")
    assert list(table["perturbation %"]) == [0.0, 10.0, 20.0, 30.0]
    assert {"PQ th argmax(P)", "PQ th argmax(Psi)", "PQ th heuristic merger"} <= set(table.columns)
    md = (report / "table.md").read_text()
    assert "perturbation %" in md and "PQ th argmax(Psi)" in md and md.count("\n|") == 2 + len(table)
    assert (report / "pq_things_vs_box_perturbation.png").stat().st_size > 1000
    summary = json.loads((report / "summary.json").read_text())
    assert summary["n_images"] == 2 and summary["model_manifest"] == "data/06_models/demo/model.json"
    # with no perturbation, argmax(P) is the evaluation's PQ of the same model on the same images
    evaluation = json.loads((tiny_project / "data/08_reporting/demo/metrics.json").read_text())
    assert summary["table"][0]["pq_argmax_p"] == pytest.approx(evaluation["pq"])
    assert summary["table"][0]["pq_argmax_psi"] == pytest.approx(evaluation["pq_without_affinity"])
    client = MlflowClient(tracking_uri=f"sqlite:///{tiny_project / 'mlflow.db'}")
    run = client.get_run(summary["mlflow_run_id"])
    history = client.get_metric_history(run.info.run_id, "robustness/pq_argmax_p")
    assert [m.step for m in history] == [0, 10, 20, 30]
    arts = {a.path for a in client.list_artifacts(run.info.run_id, "robustness")}
    assert {
        "robustness/table.csv",
        "robustness/table.md",
        "robustness/pq_things_vs_box_perturbation.png",
    } <= arts
