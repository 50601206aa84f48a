"""Inference cost of the full network vs torchvision's Mask R-CNN R50-FPN, side by side in one run.

The paper's configuration (ResNet-50-FPN, semantic and affinity heads of 128 channels, Mask R-CNN, dynamic
potential C + dense instance affinity, ``argmax(P)``), untrained (no weights are downloaded), on one
generated street scene at Cityscapes' 1024x2048, with the score threshold at 0 so that both detectors hand
exactly ``--detections`` boxes on; torchvision's ``maskrcnn_resnet50_fpn`` with the same number of classes,
size (its resize set to 1024/2048), threads and detections. Also timed: the same weights with the heuristic
merger (the ablation baseline), and the network stage by stage:

* backbone + FPN, semantic head, affinity extractor, detector (RPN + box and mask heads);
* panoptic head: mask paste at stride 4, dynamic potential (eq. 1-2), affinity (eq. 3-4), the full-
  resolution argmax of ``P`` and of the semantic logits;
* output conversion: the id map and ``segments_info``.

"after the heads" = full call - (backbone + semantic + affinity extractor + detector): what the paper's
submodule and the output cost; also timed directly ("after the detector": the full call's code after the
detector, the detector replaced by its cached output), which a difference of minima over- or under-states.
Every figure is the minimum over ``--repeat`` calls after a warm-up. ``THP_MEM_ALLOC_ENABLE=1 .venv/bin/python
benchmarks/inference.py`` measures with PyTorch's huge-page allocation for large tensors (both networks
alike; see the README's speed options).
Run: ``.venv/bin/python benchmarks/inference.py`` (``--device cuda`` on a GPU). Prints a table and, last,
one JSON line. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from PIL import Image
from torchvision.models.detection import maskrcnn_resnet50_fpn

from unipan_pipeline.categories import CategoryMap
from unipan_pipeline.model import ModelConfig, build_model
from unipan_pipeline.model.outputs import channel_entries, panoptic_from_index_map
from unipan_pipeline.params import from_params
from unipan_pipeline.synthetic import generate_cityscapes_tree

ROOT = Path(__file__).resolve().parents[1]

try:
    from unipan_pipeline.model.upsampled_argmax import upsampled_argmax
except ImportError:  # a checkout from before the sparse argmax: the dense computation it replaced

    def upsampled_argmax(x: torch.Tensor, size: tuple[int, int], stride: int = 4) -> torch.Tensor:
        up = torch.nn.functional.interpolate(x[None], scale_factor=stride, mode="bilinear")[0]
        return up[:, : size[0], : size[1]].argmax(0)


MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


class _CachedDetector(torch.nn.Module):
    """Stands in for the detector: returns the detections it was given (times what follows it)."""

    def __init__(self, detections: list[dict[str, torch.Tensor]]) -> None:
        super().__init__()
        self.detections = detections

    def forward(self, *_: Any, **__: Any) -> tuple[list[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
        return self.detections, {}


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--height", type=int, default=1024)
    p.add_argument("--width", type=int, default=2048)
    p.add_argument("--detections", type=int, default=100)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument(
        "--semantic-head", default="plain", help="ModelConfig.semantic_head, when the config has it"
    )
    return p.parse_args()


def _scene(height: int, width: int) -> torch.Tensor:
    """One generated street scene (RGB in [0, 1]), the same every run."""
    with tempfile.TemporaryDirectory() as tmp:
        generate_cityscapes_tree(tmp, {"val": 1}, height, width, seed=7, progress=False)
        path = next(Path(tmp, "leftImg8bit", "val").glob("*/*_leftImg8bit.png"))
        rgb = np.asarray(Image.open(path).convert("RGB"))
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255.0


def _timed(fn: Callable[[], Any], repeat: int, sync: Callable[[], None]) -> tuple[float, Any]:
    out = fn()  # warm-up
    best = math.inf
    for _ in range(repeat):
        sync()
        t0 = time.perf_counter()
        out = fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _model_config(args: argparse.Namespace) -> ModelConfig:
    """The paper's Cityscapes model (``model:`` of conf/base/parameters_train_cityscapes.yml, converted as the
    training node converts it), untrained, with every detection handed on."""
    conf = yaml.safe_load((ROOT / "conf/base/parameters_train_cityscapes.yml").read_text())
    values: dict[str, Any] = dict(
        conf["train_cityscapes"]["model"],
        backbone_depth=50,
        pretrained="none",
        norm="frozen_bn",
        box_score_thresh=0.0,
        detections_per_img=args.detections,
        panoptic_min_score=0.0,
    )
    if "semantic_head" in {f.name for f in ModelConfig.__dataclass_fields__.values()}:
        values["semantic_head"] = args.semantic_head
    return from_params(ModelConfig, values, "params:train_cityscapes.model")


def main() -> int:
    args = _parse()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(
        "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    )

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    categories = CategoryMap.cityscapes()
    rgb = _scene(args.height, args.width).to(device)
    normalised = (rgb - MEAN.to(device)) / STD.to(device)
    torch.manual_seed(0)
    ours = build_model(_model_config(args), categories).to(device).eval()
    torch.manual_seed(0)
    reference = (
        maskrcnn_resnet50_fpn(
            weights=None,
            weights_backbone=None,
            num_classes=categories.num_things + 1,
            min_size=args.height,
            max_size=args.width,
            box_score_thresh=0.0,
            box_detections_per_img=args.detections,
        )
        .to(device)
        .eval()
    )
    print(
        f"{args.height}x{args.width}, {args.detections} detections, device {device}, "
        f"threads {torch.get_num_threads()}, semantic head {getattr(ours.cfg, 'semantic_head', 'plain')}, "
        f"huge-page allocation (THP_MEM_ALLOC_ENABLE) {os.environ.get('THP_MEM_ALLOC_ENABLE')}"
    )
    rows: dict[str, float] = {}
    with torch.inference_mode():
        rows["torchvision maskrcnn_resnet50_fpn"], tv_out = _timed(
            lambda: reference([rgb]), args.repeat, sync
        )
        rows["full network, argmax(P)"], out = _timed(lambda: ours([normalised]), args.repeat, sync)
        argmax_cfg = ours.cfg
        ours.cfg = argmax_cfg.replace(inference="heuristic")
        rows["same weights, heuristic merger"], _ = _timed(lambda: ours([normalised]), args.repeat, sync)
        ours.cfg = argmax_cfg

        image_list = ours.batch_images([normalised])
        t_bb, features = _timed(lambda: ours.backbone(image_list.tensors), args.repeat, sync)
        t_sem, sem = _timed(lambda: ours.semantic_head(features), args.repeat, sync)
        extractor = ours.affinity_extractor
        assert extractor is not None
        t_aff, q = _timed(lambda: extractor(features), args.repeat, sync)
        t_det, (dets, _) = _timed(lambda: ours.detector(image_list, features), args.repeat, sync)
        det = dets[0]
        h, w = image_list.image_sizes[0]
        boxes, scores, classes, masks = ours._panoptic_inputs(det)

        def head() -> tuple[torch.Tensor, torch.Tensor]:
            p = ours.panoptic_logits(sem[0], q[0], boxes, scores=scores, classes=classes, mask_probs=masks)
            return ours.argmax_full_resolution(p, (h, w)) + 1, upsampled_argmax(sem[0], (h, w))

        t_head, (index_map, _) = _timed(head, args.repeat, sync)
        # everything the full call does after the detector, timed directly on the same inputs (the
        # detector replaced by its cached output): semantic argmax, paste, Psi, affinity, argmax, id map
        detector = ours.detector
        ours.detector = _CachedDetector(dets)
        try:
            t_post, _ = _timed(lambda: ours._inference(image_list, features, sem, q), args.repeat, sync)
        finally:
            ours.detector = detector
        entries = channel_entries(ours.num_stuff, classes, scores)
        t_out, _ = _timed(lambda: panoptic_from_index_map(index_map, entries, categories), args.repeat, sync)

    full = rows["full network, argmax(P)"]
    stages = {
        "backbone + FPN": t_bb,
        "semantic head": t_sem,
        "affinity extractor": t_aff,
        "detector (RPN, box + mask heads)": t_det,
        "panoptic head (paste, Psi, affinity, argmax)": t_head,
        "output conversion (id map, segments)": t_out,
    }
    after = full - (t_bb + t_sem + t_aff + t_det)
    rows_post = {"after the detector, timed directly": t_post}
    tv = rows["torchvision maskrcnn_resnet50_fpn"]
    print(f"\n{'call':46s}{'seconds':>9s}{'vs torchvision':>16s}")
    for name, t in rows.items():
        print(f"{name:46s}{t:9.3f}{t / tv:15.2f}x")
    print(f"\n{'stage of the full network':46s}{'seconds':>9s}{'share':>9s}")
    for name, t in stages.items():
        print(f"{name:46s}{t:9.3f}{t / full:8.1%}")
    print(f"{'everything after the heads (full - stages)':46s}{after:9.3f}{after / full:8.1%}")
    for name, t in rows_post.items():
        print(f"{name:46s}{t:9.3f}{t / full:8.1%}")
    print(
        f"\ndetections: ours {len(det['boxes'])}, torchvision {len(tv_out[0]['boxes'])}; "
        f"segments in our output: {len(out[0]['segments_info'])}"
    )
    print(
        json.dumps(
            {
                "device": str(device),
                "thp_mem_alloc_enable": os.environ.get("THP_MEM_ALLOC_ENABLE"),
                "size": [args.height, args.width],
                "detections": args.detections,
                "torchvision_s": tv,
                "full_s": full,
                "heuristic_s": rows["same weights, heuristic merger"],
                "ratio_full_vs_torchvision": full / tv,
                "after_heads_s": after,
                "after_heads_share": after / full,
                "after_detector_direct_s": t_post,
                "after_detector_direct_share": t_post / full,
                "stages_s": stages,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
