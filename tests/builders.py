"""Builders of test inputs shared by several test modules: a synthetic panoptic sample (batch contract), a
network configuration from a preset of conf/base (and a tiny one), and a tiny Cityscapes tree in the genuine
layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import yaml
from cityscapesscripts.helpers.labels import id2label, name2label
from PIL import Image

from unipan_pipeline.categories import IGNORE_INDEX
from unipan_pipeline.model import ModelConfig, PanopticNetwork
from unipan_pipeline.params import from_params

ROOT = Path(__file__).resolve().parents[1]
CPU_DEMO_DETECTOR = {
    "rpn_pre_nms_top_n_test": 300,
    "rpn_post_nms_top_n_test": 100,
    "roi_batch_size_per_image": 128,
    "detections_per_img": 50,
    "panoptic_max_detections_train": None,
}
"""Where the tests' slim model departs from the demo's ``model:`` (fewer proposals and detections at test
time, more RoIs, no cap on the detections reaching the panoptic head in training): the values the tests
were calibrated with."""


def conf_model_config(namespace: str, **changes: object) -> ModelConfig:
    """The ``model:`` preset of ``params:<namespace>`` in ``conf/base/parameters_<namespace>.yml`` (``demo``,
    ``train_cityscapes``, ``train_coco``; the YAML is the one source of presets) with ``changes``, converted
    as the training node converts it (:func:`unipan_pipeline.params.from_params`)."""
    params = yaml.safe_load((ROOT / "conf/base" / f"parameters_{namespace}.yml").read_text())[namespace]
    return from_params(ModelConfig, {**params["model"], **changes}, f"params:{namespace}.model")


def cpu_demo_config(**changes: object) -> ModelConfig:
    """The demo's slim CPU model (ResNet-18 from scratch, BN, FPN 128, small anchors, slim heads) with the
    tests' detector counts (:data:`CPU_DEMO_DETECTOR`) and ``changes``."""
    return conf_model_config("demo", **{**CPU_DEMO_DETECTOR, **changes})


def make_panoptic_sample(
    height: int,
    width: int,
    instances: list[tuple[int, int, int, int, int]],
    seed: int = 0,
    num_stuff: int = 3,
) -> tuple[torch.Tensor, dict]:
    """Image + target (batch contract) with stuff bands and rectangular thing instances.

    ``instances``: (x1, y1, x2, y2, train_id) drawn in order (later ones occlude earlier ones). The image
    encodes the classes in its colour so the task is learnable.
    """
    g = torch.Generator().manual_seed(seed)
    seg_classes: list[int] = []
    pan = torch.zeros(height, width, dtype=torch.int64)
    bands = torch.linspace(0, height, num_stuff + 1).long()
    for s in range(num_stuff):
        pan[bands[s] : bands[s + 1]] = len(seg_classes) + 1
        seg_classes.append(s)
    pan[:2] = 0  # a void strip
    for x1, y1, x2, y2, c in instances:
        pan[y1:y2, x1:x2] = len(seg_classes) + 1
        seg_classes.append(c)
    classes = torch.tensor(seg_classes, dtype=torch.int64)
    semantic = torch.where(pan > 0, classes[(pan - 1).clamp(min=0)], torch.full_like(pan, IGNORE_INDEX))
    palette = torch.rand(len(seg_classes) + 1, 3, generator=g)
    palette[0] = 0
    image = palette[pan].permute(2, 0, 1) * 2 - 1 + 0.1 * torch.randn(3, height, width, generator=g)
    boxes, labels, masks = [], [], []
    for k in range(num_stuff, len(seg_classes)):
        m = pan == k + 1
        if not m.any():
            continue
        ys, xs = torch.nonzero(m, as_tuple=True)
        boxes.append([xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1])
        labels.append(seg_classes[k] - num_stuff + 1)
        masks.append(m.to(torch.uint8))
    target = {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "masks": torch.stack(masks) if masks else torch.zeros(0, height, width, dtype=torch.uint8),
        "semantic": semantic,
        "panoptic": pan,
        "segment_classes": classes,
        "segment_iscrowd": torch.zeros(len(seg_classes), dtype=torch.bool),
        "image_id": f"synthetic_{seed}",
        "orig_size": (height, width),
    }
    return image.float(), target


def tiny_config(**kw: object) -> ModelConfig:
    values: dict = dict(
        fpn_channels=32,
        semantic_channels=16,
        affinity_channels=16,
        semantic_convs=1,
        box_head_channels=64,
        mask_head_channels=16,
        box_score_thresh=0.0,
        detections_per_img=20,
        rpn_post_nms_top_n_train=50,
        rpn_post_nms_top_n_test=50,
        roi_batch_size_per_image=32,
    )
    values.update(kw)
    return cpu_demo_config(**values)


def params_without_grad(model: PanopticNetwork) -> set[str]:
    return {
        n
        for n, p in model.named_parameters()
        if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)
    }


# ------------------------------------------------------------------------------------------ Cityscapes tree
H, W = 24, 48

# (label, x0, y0, x1, y1) rectangles, drawn in order (later ones on top), corners inclusive like PIL polygons
SCENES: list[list[tuple[str, int, int, int, int]]] = [
    [
        ("road", 0, 0, 47, 23),
        ("sky", 0, 0, 47, 5),
        ("building", 0, 6, 20, 12),
        ("car", 4, 14, 15, 20),
        ("car", 30, 15, 41, 21),
        ("person", 22, 8, 25, 19),
        ("cargroup", 42, 8, 47, 13),  # crowd
        ("ego vehicle", 0, 22, 47, 23),  # ignoreInEval -> void
    ],
    [
        ("road", 0, 0, 47, 23),
        ("vegetation", 10, 0, 30, 8),
        ("rider", 5, 10, 9, 18),
        ("bicycle", 4, 16, 11, 21),
    ],
    [
        ("sidewalk", 0, 0, 47, 23),
        ("pole", 20, 0, 21, 23),
    ],
]


def write_frame(root: Path, split: str, prefix: str, objects: list[tuple[str, int, int, int, int]]) -> None:
    """Write one frame: leftImg8bit, gtFine polygons.json, labelIds.png, instanceIds.png, color.png."""
    city = prefix.split("_", 1)[0]
    gt = root / "gtFine" / split / city
    im = root / "leftImg8bit" / split / city
    gt.mkdir(parents=True, exist_ok=True)
    im.mkdir(parents=True, exist_ok=True)
    label_ids = np.zeros((H, W), np.uint8)
    inst_ids = np.zeros((H, W), np.int32)
    counts: dict[str, int] = {}
    polys = []
    for name, x0, y0, x1, y1 in objects:
        group = name.endswith("group")
        label = name2label[name[: -len("group")] if group else name]
        value = label.id
        if label.hasInstances and not group:
            value = label.id * 1000 + counts.get(name, 0)
            counts[name] = counts.get(name, 0) + 1
        label_ids[y0 : y1 + 1, x0 : x1 + 1] = label.id
        inst_ids[y0 : y1 + 1, x0 : x1 + 1] = value
        polys.append({"label": name, "polygon": [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]})
    (gt / f"{prefix}_gtFine_polygons.json").write_text(
        json.dumps({"imgHeight": H, "imgWidth": W, "objects": polys})
    )
    Image.fromarray(label_ids).save(gt / f"{prefix}_gtFine_labelIds.png")
    Image.fromarray(inst_ids.astype(np.uint16)).save(gt / f"{prefix}_gtFine_instanceIds.png")
    color = np.array([id2label[int(v)].color for v in label_ids.ravel()], np.uint8).reshape(H, W, 3)
    Image.fromarray(color).save(gt / f"{prefix}_gtFine_color.png")
    rng = np.random.default_rng(len(polys))
    Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(im / f"{prefix}_leftImg8bit.png")


def make_cityscapes_tree(root: Path) -> Path:
    """Two train frames (two cities) and one val frame."""
    write_frame(root, "train", "aachen_000000_000019", SCENES[0])
    write_frame(root, "train", "bremen_000001_000019", SCENES[1])
    write_frame(root, "val", "frankfurt_000000_000294", SCENES[2])
    return root
