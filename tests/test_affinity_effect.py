"""The affinity's effect at evaluation (P against Psi): cell shares, relative change, PQ of argmax(Psi)."""

from __future__ import annotations

import pytest
import torch
from builders import make_panoptic_sample, tiny_config

from unipan_pipeline.categories import CategoryMap
from unipan_pipeline.evaluation import PQAccumulator, target_to_panoptic
from unipan_pipeline.evaluation.affinity_effect import AffinityEffect
from unipan_pipeline.evaluation.metrics import collect_metrics
from unipan_pipeline.experiment.evaluate import affinity_metrics
from unipan_pipeline.experiment.train import prediction_at_size
from unipan_pipeline.model import build_model

torch.set_num_threads(1)


def test_cell_shares_and_relative_change_by_hand() -> None:
    # 2 stuff channels + 1 detection; image 8x10 -> valid grid 2x3 of the padded 3x4 grid
    psi = torch.zeros(3, 3, 4)
    psi[0] = 1.0  # stuff 0 wins everywhere in Psi
    p = psi.clone()
    p[2, 0, 0] = 2.0  # the detection takes (0, 0) ...
    p[2, 0, 1] = 3.0  # ... and (0, 1)
    p[1, 1, 2] = 5.0  # stuff 1 takes (1, 2)
    p[2, 2, 3] = 9.0  # padding: outside the valid grid, ignored
    effect = AffinityEffect(num_stuff=2)
    effect.update(psi, p, (8, 10))
    got = effect.compute()
    assert got["affinity/cells_changed"] == pytest.approx(3 / 6)
    assert got["affinity/thing_cells_changed"] == pytest.approx(2 / 2)  # both thing cells of P changed
    assert got["affinity/relative_change"] == pytest.approx((2 + 3 + 5) / 6)  # sum |P - Psi| / sum |Psi|
    effect.update(psi, psi, (8, 10))  # a second image without change
    got = effect.compute()
    assert got["affinity/cells_changed"] == pytest.approx(3 / 12)
    assert got["affinity/relative_change"] == pytest.approx(10 / 12)
    empty = AffinityEffect(num_stuff=2).compute()
    assert set(empty.values()) == {None}
    with pytest.raises(ValueError, match="differ in shape"):
        effect.update(psi, psi[:2], (8, 10))


def test_tiny_model_effect_and_pq_without_affinity(tiny_categories: CategoryMap) -> None:
    """On a tiny model: the untrained affinity changes cells; with phi0 = 0 (P = Psi) nothing changes and
    argmax(Psi)'s PQ equals argmax(P)'s."""
    image, target = make_panoptic_sample(64, 96, [(8, 10, 40, 50, 3), (30, 20, 70, 60, 4)], seed=1)
    gt_ids, gt_segments = target_to_panoptic(target, tiny_categories)
    torch.manual_seed(0)
    model = build_model(tiny_config(), tiny_categories).eval()
    model.return_potentials = True

    def measure() -> tuple[dict, dict]:
        effect = AffinityEffect(tiny_categories.num_stuff)
        pq_p, pq_psi = PQAccumulator(tiny_categories), PQAccumulator(tiny_categories)
        out = model([image])[0]
        effect.update(out["potential"], out["panoptic_logits"], tuple(image.shape[-2:]))
        ids, segs = prediction_at_size(out, gt_ids.shape)
        pq_p.update(gt_ids, gt_segments, ids, segs, image_id="a")
        psi = {"panoptic": out["potential_panoptic"], "segments_info": out["potential_segments_info"]}
        ids, segs = prediction_at_size(psi, gt_ids.shape)
        pq_psi.update(gt_ids, gt_segments, ids, segs, image_id="a")
        return affinity_metrics(effect, pq_psi), collect_metrics(pq_p.compute())

    with torch.no_grad():
        untrained, _ = measure()
        assert untrained["affinity/relative_change"] > 0
        assert set(untrained) == {
            "affinity/cells_changed",
            "affinity/thing_cells_changed",
            "affinity/relative_change",
            "pq_without_affinity",
            "pq_th_without_affinity",
            "pq_st_without_affinity",
        }
        model.affinity.phi0[0].weight.zero_()
        model.affinity.phi0[0].bias.zero_()
        same, pq_p = measure()
    assert same["affinity/cells_changed"] == 0 and same["affinity/relative_change"] == 0
    assert same["pq_without_affinity"] == pytest.approx(pq_p["pq"])
    assert same["pq_th_without_affinity"] == pytest.approx(pq_p["pq_th"])
