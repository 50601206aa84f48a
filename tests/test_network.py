"""PanopticNetwork: forward/backward in every ablation configuration, eval output contract, D = 0, config."""

from __future__ import annotations

import math

import pytest
import torch
from builders import conf_model_config, make_panoptic_sample, params_without_grad, tiny_config
from torchvision.models.detection.roi_heads import paste_masks_in_image

from unipan_pipeline.categories import CategoryMap
from unipan_pipeline.model import (
    ModelConfig,
    PanopticNetwork,
    build_model,
    panoptic_from_index_map,
    paste_masks,
)

torch.set_num_threads(1)

DET_KEYS = {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"}


def _model(categories: CategoryMap, **kw: object) -> PanopticNetwork:
    torch.manual_seed(0)
    return build_model(tiny_config(**kw), categories)


# (use_masks, use_affinity, train_end_to_end): rows A, B, C, D of Table 1, plus e2e without affinity
COMBINATIONS = [
    (False, False, False),
    (False, True, True),
    (True, False, False),
    (True, True, True),
    (True, False, True),
]


@pytest.mark.parametrize(("use_masks", "use_affinity", "e2e"), COMBINATIONS)
def test_train_step_losses_and_gradients(
    tiny_categories: CategoryMap, synthetic_batch: tuple, use_masks: bool, use_affinity: bool, e2e: bool
) -> None:
    images, targets = synthetic_batch
    model = _model(tiny_categories, use_masks=use_masks, use_affinity=use_affinity, train_end_to_end=e2e)
    model.train()
    losses = model(images, targets)
    expected = DET_KEYS | {"loss_semantic"} | ({"loss_mask"} if use_masks else set())
    expected |= {"loss_panoptic"} if e2e else set()
    assert set(losses) == expected
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    missing = params_without_grad(model)
    # Legitimately without gradient: the affinity branch when not trained end to end (no loss reaches P).
    allowed = {n for n, _ in model.named_parameters() if n.startswith(("affinity.", "affinity_extractor."))}
    assert missing == (allowed if (use_affinity and not e2e) else set())
    assert model.affinity is None if not use_affinity else model.affinity is not None


def test_frozen_backbone_layers_get_no_gradient(tiny_categories: CategoryMap, synthetic_batch: tuple) -> None:
    images, targets = synthetic_batch
    model = _model(tiny_categories, norm="frozen_bn", trainable_layers=3)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith(("backbone.body.conv1", "backbone.body.layer1")) for n in frozen)
    model.train()
    sum(model(images, targets).values()).backward()
    assert all(p.grad is None for n, p in model.named_parameters() if n in frozen)
    assert params_without_grad(model) == set()


def test_panoptic_loss_reaches_mask_head_and_affinity(
    tiny_categories: CategoryMap, synthetic_batch: tuple
) -> None:
    images, targets = synthetic_batch
    model = _model(tiny_categories)
    model.train()
    model(images, targets)["loss_panoptic"].backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any(n.startswith("detector.roi_heads.mask_predictor") for n in grads)
    assert any(n.startswith("affinity.phi0") for n in grads) and any(
        n.startswith("affinity.phi1") for n in grads
    )
    assert any(n.startswith("semantic_head") for n in grads)
    # boxes/scores are constants for the panoptic head: no gradient into the box predictor
    assert not any(n.startswith("detector.roi_heads.box_predictor") for n in grads)


def test_loss_weights_are_applied(tiny_categories: CategoryMap, synthetic_batch: tuple) -> None:
    images, targets = synthetic_batch
    base = _model(tiny_categories, loss_weight_det=1.0, loss_weight_sem=1.0, loss_weight_pan=1.0)
    weighted = _model(tiny_categories, loss_weight_det=0.25, loss_weight_sem=2.0, loss_weight_pan=0.5)
    weighted.load_state_dict(base.state_dict())
    for m in (base, weighted):  # training mode, BN statistics frozen: both models compute the same losses
        m.train()
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.eval()
    torch.manual_seed(1)
    a = base(images, targets)
    torch.manual_seed(1)
    b = weighted(images, targets)
    assert torch.allclose(b["loss_semantic"], 2.0 * a["loss_semantic"])
    assert torch.allclose(b["loss_objectness"], 0.25 * a["loss_objectness"])
    assert torch.allclose(b["loss_panoptic"], 0.5 * a["loss_panoptic"], rtol=1e-4)


def _check_eval_output(out: dict, size: tuple[int, int], categories: CategoryMap, use_masks: bool) -> None:
    h, w = size
    assert out["panoptic"].shape == (h, w) and out["panoptic"].dtype == torch.int32
    assert out["semantic"].shape == (h, w) and out["semantic"].dtype == torch.int64
    assert int(out["semantic"].max()) < categories.num_classes
    d = out["boxes"].shape[0]
    assert out["boxes"].shape == (d, 4) and out["scores"].shape == (d,) and out["labels"].shape == (d,)
    if d:
        assert int(out["labels"].min()) >= 1 and int(out["labels"].max()) <= categories.num_things
    if use_masks:
        assert out["masks"].shape == (d, 1, h, w) and out["masks"].dtype == torch.float32
    else:
        assert "masks" not in out
    ids = [s["id"] for s in out["segments_info"]]
    assert ids == list(range(1, len(ids) + 1))
    present = set(torch.unique(out["panoptic"]).tolist()) - {0}
    assert present == set(ids)
    for seg in out["segments_info"]:
        assert set(seg) == {"id", "category_id", "isthing", "score", "area"}
        assert seg["category_id"] in categories  # DATASET id
        assert categories.by_dataset_id(seg["category_id"]).isthing == seg["isthing"]
        assert seg["area"] == int((out["panoptic"] == seg["id"]).sum()) > 0
        if not seg["isthing"]:
            assert seg["score"] == 1.0


@pytest.mark.parametrize(
    ("use_masks", "use_affinity", "inference"),
    [
        (False, False, "argmax"),
        (False, True, "argmax"),
        (True, True, "argmax"),
        (True, True, "heuristic"),
    ],
)
def test_eval_outputs_follow_contract(
    tiny_categories: CategoryMap, synthetic_batch: tuple, use_masks: bool, use_affinity: bool, inference: str
) -> None:
    images, _ = synthetic_batch
    model = _model(
        tiny_categories,
        use_masks=use_masks,
        use_affinity=use_affinity,
        inference=inference,
        heuristic_score_thresh=0.0,
        heuristic_stuff_area=0,
    )
    model.eval()
    model.return_masks = True
    outputs = model(images)
    assert len(outputs) == 2
    for out, img in zip(outputs, images, strict=True):
        _check_eval_output(out, tuple(img.shape[-2:]), tiny_categories, use_masks)
    model.return_masks = False  # the default: no full-resolution masks, the same panoptic output
    for out, again in zip(outputs, model(images), strict=True):
        assert "masks" not in again
        assert (
            torch.equal(out["panoptic"], again["panoptic"]) and out["segments_info"] == again["segments_info"]
        )
    # an untrained model with score threshold 0 has detections; argmax gives things some pixels somewhere
    assert outputs[0]["boxes"].shape[0] > 0


def test_zero_detections(tiny_categories: CategoryMap, synthetic_batch: tuple) -> None:
    images, targets = synthetic_batch
    model = _model(tiny_categories, box_score_thresh=0.99)
    model.eval()
    model.return_masks = True
    outputs = model(images)
    for out, img in zip(outputs, images, strict=True):
        assert out["boxes"].shape == (0, 4) and out["masks"].shape == (0, 1, *img.shape[-2:])
        _check_eval_output(out, tuple(img.shape[-2:]), tiny_categories, True)
        assert out["segments_info"] and not any(s["isthing"] for s in out["segments_info"])
    model.train()
    losses = model(images, targets)
    assert torch.isfinite(losses["loss_panoptic"])
    sum(losses.values()).backward()


def test_training_on_image_without_instances(tiny_categories: CategoryMap) -> None:
    """Training on a batch whose targets hold no thing instance (empty boxes) works."""
    image, target = make_panoptic_sample(48, 64, [], seed=3)
    model = _model(tiny_categories)
    model.train()
    losses = model([image], [target])
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()


def test_paste_masks_matches_torchvision() -> None:
    ramp = torch.linspace(0, torch.pi, 28).sin()
    masks = torch.stack(
        [ramp[:, None] * ramp[None, :], ramp[:, None].expand(28, 28), ramp[None, :].expand(28, 28)]
    )
    boxes = torch.tensor([[4.0, 6.0, 30.0, 20.0], [0.0, 0.0, 63.0, 47.0], [40.0, 10.0, 52.0, 40.0]])
    ours = paste_masks(masks, boxes, 48, 64, stride=1.0)
    ref = paste_masks_in_image(masks[:, None], boxes, (48, 64))[:, 0]
    assert ours.shape == ref.shape
    assert (ours - ref).abs().mean() < 0.03  # different border conventions, same content
    assert ours[0, :, 35:].abs().max() == 0  # nothing outside the box
    coarse = paste_masks(torch.ones(1, 28, 28), torch.tensor([[8.0, 8.0, 24.0, 16.0]]), 12, 16, stride=4.0)
    assert torch.equal(
        coarse[0] > 0.5,
        torch.zeros(12, 16).index_put_((torch.arange(2, 4)[:, None], torch.arange(2, 6)), torch.tensor(1.0))
        > 0,
    )


def test_panoptic_from_index_map(tiny_categories: CategoryMap) -> None:
    index = torch.tensor([[0, 1, 1], [4, 4, 1]])
    entries = [
        {"train_id": 0, "isthing": False, "score": 1.0},
        {"train_id": 1, "isthing": False, "score": 1.0},  # no pixel: dropped
        {"train_id": 2, "isthing": False, "score": 1.0},  # no pixel: dropped
        {"train_id": 4, "isthing": True, "score": 0.7},
    ]
    pan, segs = panoptic_from_index_map(index, entries, tiny_categories)
    assert pan.dtype == torch.int32
    assert pan.tolist() == [[0, 1, 1], [2, 2, 1]]
    assert segs == [
        {"id": 1, "category_id": 10, "isthing": False, "score": 1.0, "area": 3},
        {"id": 2, "category_id": 57, "isthing": True, "score": pytest.approx(0.7), "area": 2},
    ]


def test_argmax_full_resolution_matches_dense_upsampling() -> None:
    torch.manual_seed(0)
    p = torch.rand(6, 8, 10)
    got = PanopticNetwork.argmax_full_resolution(p, (30, 37))
    dense = torch.nn.functional.interpolate(p[None], scale_factor=4, mode="bilinear", align_corners=False)[0]
    want = dense[:, :30, :37].argmax(0)
    assert got.shape == (30, 37)
    assert (got == want).float().mean() > 0.97


def test_config_from_dict() -> None:
    cfg = ModelConfig.from_dict(
        {"backbone_depth": 34, "anchor_sizes": [8, 16, 32, 64, 128], "use_masks": False}
    )
    assert cfg.backbone_depth == 34 and cfg.anchor_sizes == (8, 16, 32, 64, 128)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown ModelConfig keys"):
        ModelConfig.from_dict({"backbone": 50})
    with pytest.raises(ValueError, match="backbone_depth"):
        ModelConfig(backbone_depth=152)
    with pytest.raises(ValueError, match="heuristic"):
        ModelConfig(use_masks=False, inference="heuristic")
    default = ModelConfig()
    assert (default.backbone_depth, default.pretrained, default.norm) == (50, "imagenet", "frozen_bn")
    city = conf_model_config("train_cityscapes")
    assert (city.loss_weight_det, city.loss_weight_sem, city.loss_weight_pan) == (0.25, 1.0, 1.0)
    assert (default.loss_weight_det, default.loss_weight_sem, default.loss_weight_pan) == (1.0, 0.2, 0.1)


def test_void_unclaimed_things(tiny_categories: CategoryMap, synthetic_batch: tuple) -> None:
    """With the switch on, no pixel is given to a stuff segment where the semantic argmax is a thing class."""
    images, _ = synthetic_batch
    plain = _model(tiny_categories, box_score_thresh=0.99)  # D = 0: every thing pixel is unclaimed
    switched = _model(tiny_categories, box_score_thresh=0.99, void_unclaimed_things=True)
    switched.load_state_dict(plain.state_dict())
    plain.eval()
    switched.eval()
    for a, b in zip(plain(images), switched(images), strict=True):
        thing_pixels = a["semantic"] >= tiny_categories.num_stuff
        assert (a["panoptic"][thing_pixels] > 0).all()  # plain argmax: stuff channels take them
        assert (b["panoptic"][thing_pixels] == 0).all()
        assert torch.equal(b["panoptic"][~thing_pixels] > 0, a["panoptic"][~thing_pixels] > 0)


def test_training_on_ground_truth_detections(
    tiny_categories: CategoryMap, synthetic_batch: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    """train_detections: ground_truth (supplementary Table C): the panoptic head gets exactly the GT boxes and
    classes with score 1, the mask head runs on them with gradient, the detector's second pass is skipped
    (without the demo's box jitter, which tests/test_box_jitter.py covers)."""
    images, targets = synthetic_batch
    model = _model(tiny_categories, train_detections="ground_truth", train_box_jitter=0.0)
    model.train()
    seen: list[dict] = []
    potentials = model.potentials

    def spy(sem, q, boxes, *, scores, classes, mask_probs):  # type: ignore[no-untyped-def]
        seen.append({"boxes": boxes.detach(), "scores": scores, "classes": classes, "masks": mask_probs})
        return potentials(sem, q, boxes, scores=scores, classes=classes, mask_probs=mask_probs)

    def no_second_pass(*_a: object, **_k: object) -> None:
        raise AssertionError("the detector's predicted detections are not used with ground_truth")

    monkeypatch.setattr(model, "potentials", spy)
    monkeypatch.setattr(model.detector, "detect", no_second_pass)
    losses = model(images, targets)
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values()) and "loss_panoptic" in losses
    assert len(seen) == len(images)
    for got, tgt in zip(seen, targets, strict=True):
        assert torch.equal(got["boxes"], tgt["boxes"])
        assert torch.equal(got["scores"], torch.ones(len(tgt["boxes"])))
        assert torch.equal(got["classes"], tgt["labels"] + tiny_categories.num_stuff - 1)
        assert got["masks"].shape == (len(tgt["boxes"]), 28, 28) and got["masks"].requires_grad
    model.zero_grad()
    losses["loss_panoptic"].backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any(n.startswith("detector.roi_heads.mask_head") for n in grads)
    assert any(n.startswith("detector.roi_heads.mask_predictor") for n in grads)
    assert any(n.startswith("affinity.phi0") for n in grads)
    # eval is unchanged: predicted detections
    model.eval()
    monkeypatch.undo()
    assert model(images)[0]["panoptic"].shape == images[0].shape[-2:]
    with pytest.raises(ValueError, match="train_detections"):
        tiny_config(train_detections="oracle")


def test_potentials_heuristic_and_box_perturbation_outputs(
    tiny_categories: CategoryMap, synthetic_batch: tuple
) -> None:
    """return_potentials: Psi, P and argmax(Psi)'s panoptic output (= argmax(P)'s when the affinity term is
    zero); return_heuristic: the merger's output on the same detections; box_perturbation: applied to the
    detected boxes before the panoptic head."""
    images, _ = synthetic_batch
    model = _model(tiny_categories, heuristic_score_thresh=0.0, heuristic_stuff_area=0)
    model.eval()
    plain_out = model(images)
    model.return_potentials = model.return_heuristic = True
    outs = model(images)
    # the batch's padded grid at stride 4
    h, w = (math.ceil(max(int(i.shape[d]) for i in images) / 32) * 32 // 4 for d in (1, 2))
    for a, b, img in zip(plain_out, outs, images, strict=True):
        assert torch.equal(a["panoptic"], b["panoptic"]) and a["segments_info"] == b["segments_info"]
        assert b["potential"].shape == b["panoptic_logits"].shape == (3 + len(b["boxes"]), h, w)
        assert not torch.equal(b["potential"], b["panoptic_logits"])  # untrained affinity changes P
        assert b["potential_panoptic"].shape == b["panoptic"].shape == img.shape[-2:]
    heuristic = _model(
        tiny_categories, inference="heuristic", heuristic_score_thresh=0.0, heuristic_stuff_area=0
    )
    heuristic.load_state_dict(model.state_dict())
    heuristic.eval()
    for h_out, b in zip(heuristic(images), outs, strict=True):
        assert torch.equal(h_out["panoptic"], b["heuristic_panoptic"])
        assert h_out["segments_info"] == b["heuristic_segments_info"]
    with torch.no_grad():  # phi0 = ReLU(0) = 0: P = Psi, so argmax(Psi) gives argmax(P)'s output
        model.affinity.phi0[0].weight.zero_()
        model.affinity.phi0[0].bias.zero_()
    for b in model(images):
        assert torch.equal(b["potential"], b["panoptic_logits"])
        assert torch.equal(b["potential_panoptic"], b["panoptic"])
        assert b["potential_segments_info"] == b["segments_info"]
    model.return_potentials = model.return_heuristic = False
    model.box_perturbation = lambda boxes, size: boxes
    for a, b in zip(model(images), model(images), strict=True):
        assert torch.equal(a["panoptic"], b["panoptic"])
    reference = model(images)
    sizes: list[tuple[int, int]] = []

    def halve(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        sizes.append(size)
        return boxes * 0.5

    model.box_perturbation = halve
    moved = model(images)
    assert sizes == [tuple(i.shape[-2:]) for i in images]
    for r, m in zip(reference, moved, strict=True):
        assert torch.equal(m["boxes"], r["boxes"] * 0.5)


def test_learnt_affinity_gain_is_trained(tiny_categories: CategoryMap, synthetic_batch: tuple) -> None:
    """``affinity_learn_gain``: the model has one more parameter, ``affinity.log_gain`` (initialised at
    ``affinity_log_gain``), which the matching loss trains; a model without it loads without it."""
    images, targets = synthetic_batch
    torch.manual_seed(0)
    model = _model(tiny_categories, affinity_learn_gain=True, affinity_log_gain=0.5)
    names = dict(model.named_parameters())
    assert float(names["affinity.log_gain"].detach()) == 0.5
    model.train()
    sum(model(images, targets).values()).backward()
    assert params_without_grad(model) == set()
    assert names["affinity.log_gain"].grad is not None and float(names["affinity.log_gain"].grad) != 0.0
    plain = _model(tiny_categories)
    assert set(model.state_dict()) == {*plain.state_dict(), "affinity.log_gain"}
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if k != "affinity.log_gain"})
