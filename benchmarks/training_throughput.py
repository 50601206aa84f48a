"""Training step of the demo preset with the speed options off and on, side by side in one run.

Same model weights, same batches (generated street scenes at the demo's 128x256, demo augmentation), same
optimiser; each variant is timed over the same steps after a warm-up, interleaved round by round so that a
noisy neighbour hurts every variant alike, and the best round is kept. Every round starts each variant from
the same (untrained, as at the start of training) weights and a fresh optimiser, so that all variants do the
same work on the same batches. Variants:

* ``fp32 (torchvision heads)``: the options off, and the detector's RoI poolers, mask head and mask predictor
  torchvision's own classes (single-threaded RoIAlign on a CPU, the mask branch in fp32 on RoI batches of
  every size): the step as it was before :mod:`unipan_pipeline.model.roi_align` and
  :mod:`unipan_pipeline.model.mask_head`; the reference of the speed-ups;
* ``fp32``: the options off (the project's RoI poolers and mask branch);
* ``bf16``: ``trainer.amp: bf16`` (autocast, fp32 master weights);
* ``bf16+cl``: bf16 and ``trainer.channels_last``;
* ``bf16+capN``, ``bf16+cl+capN``: also ``model.panoptic_max_detections_train: N`` (the panoptic head's
  detections in training), without and with channels_last;
* ``conf``: the demo's configuration as committed (``conf/base/parameters_demo.yml``);
* ``conf (torchvision heads)``: the same with torchvision's RoI poolers and mask branch: what the project's
  detector classes save in the demo's configuration;
* ``conf (RoIAlign kernels)``: the demo's configuration with the separable RoIAlign of small levels off
  (``roi_align.SEPARABLE_MAX_CELLS = 0``: every level on torchvision's kernels, threaded): what the matrix
  products save.

Run: ``.venv/bin/python benchmarks/training_throughput.py`` (``--threads 2`` pins threads; ``--weights
data/06_models/demo/model.pt`` times the steps from the demo's trained weights, where fewer detections
reach the heads than at initialisation). Prints a table and, last, one JSON line with the speed-ups over
the baseline. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign

from unipan_pipeline.categories import CategoryMap
from unipan_pipeline.data import PanopticDataset, PanopticTransform, TransformConfig, collate_panoptic
from unipan_pipeline.data.cityscapes import ingest_cityscapes
from unipan_pipeline.model import ModelConfig, build_model, roi_align
from unipan_pipeline.synthetic import generate_cityscapes_tree
from unipan_pipeline.training.config import TrainerConfig
from unipan_pipeline.training.precision import Autocast, native_bf16
from unipan_pipeline.training.schedule import build_optimizer

ROOT = Path(__file__).resolve().parents[1]


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=6, help="timed steps per variant and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--caps", type=int, nargs="*", default=[20])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--weights", type=Path, default=None, help="a state dict to start from (default: init)")
    return p.parse_args()


def _demo_params() -> tuple[dict[str, Any], dict[str, Any]]:
    demo = yaml.safe_load((ROOT / "conf/base/parameters_demo.yml").read_text())["demo"]
    gen = yaml.safe_load((ROOT / "conf/base/parameters_generate_synthetic.yml").read_text())
    return demo, gen["generate_synthetic"]


def _batches(demo: dict[str, Any], gen: dict[str, Any], n: int, tmp: Path) -> tuple[list, CategoryMap]:
    batch = int(demo["trainer"]["images_per_batch"])
    raw = tmp / "raw"
    generate_cityscapes_tree(
        raw, {"train": n * batch}, gen["height"], gen["width"], seed=1, scene=gen["scene"], progress=False
    )
    ingest_cityscapes(raw, tmp / "ingested", ["train"], source="synthetic")
    categories = CategoryMap.cityscapes()
    tf = PanopticTransform(TransformConfig.from_params(dict(demo["augment"]), train=True))
    ds = PanopticDataset(tmp / "ingested", "train", categories, tf)
    torch.manual_seed(0)
    items = [ds[i] for i in range(n * batch)]
    return [collate_panoptic(items[i * batch : (i + 1) * batch]) for i in range(n)], categories


BASELINE = "fp32 (torchvision heads)"


def _use_torchvision_heads(model: torch.nn.Module) -> None:
    """Swap the detector's RoI poolers and mask branch back to torchvision's classes, in place. The project's
    classes only add a forward and plain attributes to torchvision's (same parameters and buffers), so
    changing the instances' class is exact."""
    heads = model.detector.roi_heads
    for module, base in (
        (heads.box_roi_pool, MultiScaleRoIAlign),
        (heads.mask_roi_pool, MultiScaleRoIAlign),
        (heads.mask_head, MaskRCNNHeads),
        (heads.mask_predictor, MaskRCNNPredictor),
    ):
        if module is not None:
            module.__class__ = base


def _variants(demo: dict[str, Any], caps: list[int]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {
        BASELINE: {"amp": "off", "channels_last": False, "cap": None, "torchvision_heads": True},
        "fp32": {"amp": "off", "channels_last": False, "cap": None},
        "bf16": {"amp": "bf16", "channels_last": False, "cap": None},
        "bf16+cl": {"amp": "bf16", "channels_last": True, "cap": None},
    }
    for c in caps:
        out[f"bf16+cap{c}"] = {"amp": "bf16", "channels_last": False, "cap": c}
        out[f"bf16+cl+cap{c}"] = {"amp": "bf16", "channels_last": True, "cap": c}
    t = demo["trainer"]
    out["conf"] = {
        "amp": t.get("amp", "off"),
        "channels_last": bool(t.get("channels_last", False)),
        "cap": demo["model"].get("panoptic_max_detections_train"),
    }
    out["conf (torchvision heads)"] = {**out["conf"], "torchvision_heads": True}
    out["conf (RoIAlign kernels)"] = {**out["conf"], "separable_roi_align": False}
    return out


def main() -> int:
    args = _parse()
    if args.threads:
        torch.set_num_threads(args.threads)
    demo, gen = _demo_params()
    device = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        batches, categories = _batches(demo, gen, args.steps, Path(tmp))
    base_cfg = ModelConfig.from_dict({**demo["model"], "panoptic_max_detections_train": None})
    torch.manual_seed(0)
    reference = build_model(base_cfg, categories).state_dict()
    if args.weights is not None:
        reference = torch.load(args.weights, map_location="cpu", weights_only=True)
    variants = _variants(demo, args.caps)
    opt_cfg = TrainerConfig(iterations=1, images_per_batch=4, optimizer="adamw", lr=1e-4, warmup_iters=0)
    models: dict[str, Any] = {}
    for name, v in variants.items():
        model = build_model(base_cfg.replace(panoptic_max_detections_train=v["cap"]), categories)
        model.load_state_dict(reference)
        model.train()
        if v.get("torchvision_heads"):
            _use_torchvision_heads(model)
        if v["channels_last"]:
            model.to(memory_format=torch.channels_last)
        models[name] = (model, build_optimizer(model, opt_cfg), Autocast(v["amp"], device))
    print(
        f"demo preset: ResNet-{base_cfg.backbone_depth}, batch {len(batches[0][0])}, "
        f"{tuple(batches[0][0][0].shape[-2:])} images; threads {torch.get_num_threads()}; "
        f"native bf16: {native_bf16(device)}; weights: {args.weights or 'initialisation'}; "
        f"huge-page allocation (THP_MEM_ALLOC_ENABLE): {os.environ.get('THP_MEM_ALLOC_ENABLE')}"
    )

    def step(name: str, images: list, targets: list) -> float:
        model, opt, autocast = models[name]
        separable = variants[name].get("separable_roi_align", True)
        roi_align.SEPARABLE_MAX_CELLS = separable_max if separable else 0
        t0 = time.perf_counter()
        with autocast():
            losses = model(images, targets)
        total = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        return time.perf_counter() - t0

    separable_max = roi_align.SEPARABLE_MAX_CELLS
    best: dict[str, float] = {}
    for name in models:  # warm-up (allocator, oneDNN kernels)
        for i in range(args.warmup):
            step(name, *batches[i % len(batches)])
    for r in range(args.rounds):
        for name in list(models):
            # every variant starts each round from the same weights and a fresh optimiser, so that all of
            # them do the same work (the same detections reach the heads) on the same batches
            model, _, autocast = models[name]
            model.load_state_dict(reference)
            models[name] = (model, build_optimizer(model, opt_cfg), autocast)
            times = [step(name, *b) for b in batches]
            mean = sum(times) / len(times)
            best[name] = min(best.get(name, float("inf")), mean)
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k} {v:.3f}s" for k, v in best.items()))
    ref = best[BASELINE]
    print(f"\n{'variant':26s}{'amp':>6s}{'ch.last':>9s}{'cap':>6s}{'s/step':>9s}{'speed-up':>10s}")
    for name, v in variants.items():
        cap = "-" if v["cap"] is None else str(v["cap"])
        print(
            f"{name:26s}{v['amp']:>6s}{v['channels_last']!s:>9s}{cap:>6s}{best[name]:9.3f}"
            f"{ref / best[name]:9.2f}x"
        )
    thp = os.environ.get("THP_MEM_ALLOC_ENABLE")
    speedup = {k: ref / v for k, v in best.items()}
    print(
        json.dumps(
            {
                "step_s": best,
                "speedup_vs_baseline": speedup,
                "baseline": BASELINE,
                "thp_mem_alloc_enable": thp,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
