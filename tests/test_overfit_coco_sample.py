"""Real-data overfit: the full model (masks, affinity, matching loss, argmax) trained from scratch on CPU on
the two COCO images of panopticapi's sample must reproduce their panoptic segmentation (PQ via panopticapi).

The sample is ingested and loaded with ``unipan_pipeline.data`` (``ingest_panopticapi_sample``,
``PanopticDataset`` with an evaluation resize to shorter side 160, ``collate_panoptic``). The ground truth
is the same downscaled index map, written with recomputed areas and boxes next to the predictions in COCO
panoptic format (``panopticapi.utils.id2rgb``), so ``pq_compute`` scores the model against exactly what it
was trained on. PQ counts only the 8 categories present (person, truck, horse, sports ball; gravel, tree,
sky, grass).

Measured (2 shared CPU cores, load 5-7 from other jobs, so wall times are pessimistic):
* 300 iterations (slow test): PQ 0.837 (things 0.747, stuff 0.927), 198 s CPU (one thread), 298 s wall.
* 150 iterations (CI test): PQ 0.796 (things 0.685, stuff 0.908), 97 s CPU (one thread), 178 s wall.
* Without ``void_unclaimed_things`` the same recipe plateaus at PQ 0.80 (stuff 0.83): the crowd region of
  image 142238 (ignored by the matching loss) is handed to a near-zero stuff channel (a false "gravel").
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from builders import cpu_demo_config
from official import official_pq_compute
from panopticapi.utils import id2rgb
from PIL import Image

from unipan_pipeline.categories import CategoryMap
from unipan_pipeline.data.coco import ingest_panopticapi_sample
from unipan_pipeline.data.dataset import PanopticDataset, collate_panoptic
from unipan_pipeline.data.transforms import PanopticTransform, TransformConfig
from unipan_pipeline.model import ModelConfig, build_model

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "panopticapi_sample"

FULL_SHORT_SIDE, FULL_ITERATIONS = 160, 300
"""Full bar (slow): PQ >= 0.8. Measured: see the module docstring."""
CI_SHORT_SIDE, CI_ITERATIONS = 160, 150
CI_PQ_BAR, CI_PQ_STUFF_BAR, CI_PQ_THINGS_BAR = 0.7, 0.8, 0.5

pytestmark = pytest.mark.skipif(not SAMPLE.is_dir(), reason=f"COCO sample folder {SAMPLE} is absent")


def load_sample(
    workdir: Path, short_side: int
) -> tuple[CategoryMap, list[torch.Tensor], list[dict], list[dict]]:
    """Ingest the sample (``unipan_pipeline.data``), load it at shorter side ``short_side`` as one batch, and
    describe the (downscaled) ground truth as COCO panoptic records for ``pq_compute``."""
    root = workdir / "ingested"
    ingest_panopticapi_sample(SAMPLE, root, split="val")
    dataset = PanopticDataset(
        root, "val", transforms=PanopticTransform(TransformConfig(train=False, eval_min_size=short_side))
    )
    cats = dataset.categories
    images, targets = collate_panoptic([dataset[i] for i in range(len(dataset))])
    gt_records = []
    for t in targets:
        index = t["panoptic"].numpy()
        segments = []
        for k, (cls, crowd) in enumerate(
            zip(t["segment_classes"], t["segment_iscrowd"], strict=True), start=1
        ):
            ys, xs = np.nonzero(index == k)
            bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
            segments.append(
                {
                    "id": k,
                    "category_id": cats.dataset_id(int(cls)),
                    "iscrowd": int(crowd),
                    "area": len(xs),
                    "bbox": bbox,
                }
            )
        gt_records.append(
            {
                "image_id": t["image_id"],
                "file_name": f"{t['image_id']}.png",
                "ids": index.astype(np.int64),
                "segments_info": segments,
                "height": int(index.shape[0]),
                "width": int(index.shape[1]),
            }
        )
    return cats, images, targets, gt_records


def write_coco_panoptic(
    folder: Path, name: str, records: list[dict], categories: list[dict]
) -> tuple[Path, Path]:
    """Write ``<name>.json`` and ``<name>/`` PNGs (id -> RGB via panopticapi) in COCO panoptic format."""
    png_dir = folder / name
    png_dir.mkdir(parents=True, exist_ok=True)
    anns, imgs = [], []
    for r in records:
        Image.fromarray(id2rgb(r["ids"])).save(png_dir / r["file_name"])
        anns.append(
            {"image_id": r["image_id"], "file_name": r["file_name"], "segments_info": r["segments_info"]}
        )
        imgs.append(
            {
                "id": r["image_id"],
                "file_name": r["file_name"].replace(".png", ".jpg"),
                "height": r["height"],
                "width": r["width"],
            }
        )
    json_path = folder / f"{name}.json"
    json_path.write_text(json.dumps({"images": imgs, "annotations": anns, "categories": categories}))
    return json_path, png_dir


def overfit_config(**changes: object) -> ModelConfig:
    """The CPU demo model (ResNet-18 from scratch, BN), slimmed (FPN 64, thin heads) to fit the CI budget,
    with proposal / detection counts for the ~30 objects of these images."""
    values: dict = dict(
        fpn_channels=64,
        semantic_channels=32,
        affinity_channels=32,
        box_head_channels=256,
        mask_head_channels=32,
        rpn_post_nms_top_n_train=100,
        rpn_post_nms_top_n_test=200,
        roi_batch_size_per_image=64,
        detections_per_img=40,
        void_unclaimed_things=True,
    )
    values.update(changes)
    return cpu_demo_config(**values)


def score(
    model: torch.nn.Module, images: list, gt_records: list[dict], cats: CategoryMap, folder: Path
) -> dict:
    """Predict, write GT and predictions in COCO panoptic format under ``folder``, run ``pq_compute``."""
    model.eval()
    with torch.no_grad():
        outputs = model(images)
    model.train()
    preds = [
        {**gt, "ids": out["panoptic"].numpy().astype(np.int64), "segments_info": out["segments_info"]}
        for out, gt in zip(outputs, gt_records, strict=True)
    ]
    coco_cats = [
        {k: c[k] for k in ("id", "name", "isthing", "color", "supercategory")} for c in cats.to_coco()
    ]
    gt_json, gt_dir = write_coco_panoptic(folder, "gt", gt_records, coco_cats)
    pred_json, pred_dir = write_coco_panoptic(folder, "pred", preds, coco_cats)
    result = official_pq_compute(str(gt_json), str(pred_json), str(gt_dir), str(pred_dir))
    return {
        "pq": result["All"]["pq"],
        "pq_things": result["Things"]["pq"],
        "pq_stuff": result["Stuff"]["pq"],
        "per_class": result["per_class"],
    }


def train_and_score(
    tmp_path: Path,
    short_side: int,
    iterations: int,
    *,
    lr: float = 2e-3,
    seed: int = 0,
    eval_at: tuple[int, ...] = (),
    **config_changes: object,
) -> dict:
    """Train on the two images (one batch of both, AdamW, one-cycle schedule) and return panopticapi's PQ
    figures after the last iteration (plus ``train_s`` and a ``history`` of PQ at the ``eval_at`` steps)."""
    torch.manual_seed(seed)
    cats, images, targets, gt_records = load_sample(tmp_path, short_side)
    model = build_model(overfit_config(**config_changes), cats)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=iterations, pct_start=0.1)
    model.train()
    history = []
    train_s = 0.0
    cpu_start = time.process_time()
    for it in range(1, iterations + 1):
        start = time.perf_counter()
        losses = model(images, targets)
        loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 10.0)
        opt.step()
        sched.step()
        train_s += time.perf_counter() - start
        if it in eval_at:
            r = score(model, images, gt_records, cats, tmp_path / f"eval_{it}")
            history.append(
                (it, round(train_s), {k: round(float(r[k]), 3) for k in ("pq", "pq_things", "pq_stuff")})
            )
            print(history[-1], {k: round(float(v.detach()), 3) for k, v in losses.items()}, flush=True)
    result = score(model, images, gt_records, cats, tmp_path / "final")
    cpu_s = time.process_time() - cpu_start
    return {**result, "train_s": train_s, "cpu_s": cpu_s, "history": history}


@pytest.mark.slow
def test_overfit_two_coco_images_full(tmp_path: Path) -> None:
    """The full bar: PQ >= 0.8 on the two training images."""
    torch.set_num_threads(1)
    result = train_and_score(tmp_path, short_side=FULL_SHORT_SIDE, iterations=FULL_ITERATIONS)
    print({k: v for k, v in result.items() if k != "per_class"})
    assert result["pq"] >= 0.8
    assert result["pq_things"] >= 0.6


def test_overfit_two_coco_images_ci(tmp_path: Path) -> None:
    """Shorter CI variant (fewer iterations): stuff is reproduced and things are being found."""
    torch.set_num_threads(1)
    result = train_and_score(tmp_path, short_side=CI_SHORT_SIDE, iterations=CI_ITERATIONS)
    print({k: v for k, v in result.items() if k != "per_class"})
    assert result["pq"] >= CI_PQ_BAR
    assert result["pq_stuff"] >= CI_PQ_STUFF_BAR
    assert result["pq_things"] > CI_PQ_THINGS_BAR
