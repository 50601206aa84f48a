"""Oracle ceilings of the two inference paths: ground truth fed through them instead of network outputs.

What each path loses even with perfect inputs:

* **argmax** (sec. 3.4-3.6): Psi at stride 4 (eq. 1-2, no affinity) from the one-hot GT semantics (the
  share of each class in each 4x4 cell) and the GT instances (boxes, score 1, masks = the share of each
  instance in each cell), then the bilinear x4 upsampling and argmax of :meth:`PanopticNetwork.
  argmax_full_resolution`. The stride-4 grid blurs boundaries and thin objects: PQ < 1.
* **heuristic** (rows C1/D1): the merger (:func:`.heuristic_merger.heuristic_merge`) at full resolution on
  the GT semantic map and the GT masks (score 1): PQ 1 on data whose stuff segments are one per class.

:func:`oracle_ceilings` scores both with ``PQAccumulator`` against the ground truth of an ingested split;
``python -m unipan_pipeline.experiment.oracle data/03_primary/cityscapes --split val --stuff-area 64`` prints
them as JSON (PQ / SQ / RQ as fractions).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from unipan_pipeline.categories import CategoryMap
from unipan_pipeline.data import PanopticDataset, load_ingested, read_panoptic_png
from unipan_pipeline.data.dataset import build_target
from unipan_pipeline.evaluation import PQAccumulator
from unipan_pipeline.evaluation.metrics import collect_metrics
from unipan_pipeline.model.dynamic_potential import dynamic_potential
from unipan_pipeline.model.heuristic_merger import heuristic_merge
from unipan_pipeline.model.outputs import channel_entries, panoptic_from_index_map
from unipan_pipeline.model.panoptic_network import STRIDE, PanopticNetwork

OraclePath = Literal["argmax", "heuristic"]


def _cell_shares(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """``[K, H, W]`` 0/1 maps -> ``[K, ceil(H/4), ceil(W/4)]`` share of each 4x4 cell (zero-padded)."""
    h, w = size
    hp, wp = -(-h // STRIDE) * STRIDE, -(-w // STRIDE) * STRIDE
    padded = F.pad(maps.float(), (0, wp - w, 0, hp - h))
    return F.avg_pool2d(padded[None], STRIDE)[0]


def oracle_panoptic(
    target: Mapping[str, Any],
    categories: CategoryMap,
    path: OraclePath,
    *,
    potential_variant: Literal["A", "B", "C"] = "C",
    stuff_area_limit: int = 0,
) -> tuple[Tensor, list[dict]]:
    """The panoptic output (``int32 [H, W]`` id map, segments with dataset ids) of one GT target through
    the argmax or the heuristic path (module docstring). ``target`` follows the batch contract
    (``semantic``, ``boxes``, ``labels``, ``masks``)."""
    semantic = target["semantic"].long()
    size = (int(semantic.shape[0]), int(semantic.shape[1]))
    num_stuff = categories.num_stuff
    classes = target["labels"].long() + (num_stuff - 1)
    scores = torch.ones(len(classes))
    masks = target["masks"].float()
    if path == "heuristic":
        index_map, entries = heuristic_merge(
            semantic,
            masks,
            scores,
            classes,
            num_stuff,
            score_threshold=0.5,
            overlap_threshold=0.5,
            stuff_area_limit=stuff_area_limit,
            mask_threshold=0.5,
        )
    elif path == "argmax":
        onehot = F.one_hot(semantic.clamp(max=categories.num_classes), categories.num_classes + 1)
        onehot = onehot.permute(2, 0, 1)[: categories.num_classes]  # void (255) -> all zero
        v = _cell_shares(onehot, size)
        logits = torch.log(v.clamp(min=1e-6))  # softmax(logits) = the shares (B/C: probabilities)
        psi = dynamic_potential(
            logits,
            target["boxes"].float(),
            scores,
            classes,
            _cell_shares(masks, size) if len(masks) else None,
            num_stuff,
            potential_variant,
            STRIDE,
        )
        index_map = PanopticNetwork.argmax_full_resolution(psi, size) + 1
        entries = channel_entries(num_stuff, classes, scores)
    else:
        raise ValueError(f"oracle_panoptic: path={path!r}: choose 'argmax' or 'heuristic'")
    return panoptic_from_index_map(index_map, entries, categories)


def oracle_ceilings(
    root: str | Path,
    split: str,
    categories: CategoryMap | None = None,
    *,
    max_images: int | None = None,
    potential_variant: Literal["A", "B", "C"] = "C",
    stuff_area_limit: int = 0,
) -> dict[str, dict[str, float | None]]:
    """PQ / SQ / RQ (all, things, stuff; fractions) of the GT through each path on an ingested split:
    ``{"argmax": {...}, "heuristic": {...}}``, scored at the GT resolution."""
    dataset = PanopticDataset(root, split, categories)
    categories = dataset.categories
    data = load_ingested(root, split)
    n = len(dataset) if max_images is None else min(max_images, len(dataset))
    acc = {p: PQAccumulator(categories) for p in ("argmax", "heuristic")}
    for i in range(n):
        _image, index, seg_classes, crowd = dataset.load(i)
        target = build_target(
            index, seg_classes, crowd, categories, image_id=str(i), orig_size=tuple(index.shape)
        )
        gt_ids, gt_segments = read_panoptic_png(data.png_path(i)), data.segments(i)
        if tuple(gt_ids.shape) != tuple(index.shape):
            raise ValueError(f"oracle_ceilings: image {i} of {root}/{split}: GT and target sizes differ")
        for path, accumulator in acc.items():
            pan, segs = oracle_panoptic(
                target,
                categories,
                path,  # type: ignore[arg-type]
                potential_variant=potential_variant,
                stuff_area_limit=stuff_area_limit,
            )
            accumulator.update(gt_ids, gt_segments, pan.numpy(), segs, image_id=str(i))
    return {path: _pq(accumulator) for path, accumulator in acc.items()}


def _pq(accumulator: PQAccumulator) -> dict[str, float | None]:
    metrics = collect_metrics(accumulator.compute())
    return {k: metrics[k] for k in ("pq", "sq", "rq", "pq_th", "sq_th", "rq_th", "pq_st", "sq_st", "rq_st")}


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, float | None]]:
    """Command line: the ceilings of an ingested split as JSON on stdout (and returned)."""
    parser = argparse.ArgumentParser(
        prog="python -m unipan_pipeline.experiment.oracle", description=__doc__.split("\n")[0]
    )
    parser.add_argument("root", help="an ingested data set, e.g. data/03_primary/cityscapes")
    parser.add_argument("--split", default="val")
    parser.add_argument("--max-images", type=int, default=None)
    parser.add_argument("--variant", choices=("A", "B", "C"), default="C", help="dynamic potential variant")
    parser.add_argument(
        "--stuff-area", type=int, default=0, help="the heuristic's minimum stuff area in pixels (0: none)"
    )
    args = parser.parse_args(argv)
    ceilings = oracle_ceilings(
        args.root,
        args.split,
        max_images=args.max_images,
        potential_variant=args.variant,
        stuff_area_limit=args.stuff_area,
    )
    print(json.dumps(ceilings, indent=2))
    return ceilings


if __name__ == "__main__":
    main()
