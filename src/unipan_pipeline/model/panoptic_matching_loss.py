"""Panoptic matching loss (paper sec. 3.5, eq. 5).

During training the panoptic submodule is fed *predicted* detections, so the instance channels of ``P`` have
no fixed relation to the ground-truth segments. :func:`match_detections` matches ground-truth thing segments
to detections by box IoU (eq. 5) and builds the per-pixel target channel map; :func:`panoptic_matching_loss`
is then a plain cross-entropy on ``P``.

Decisions (OPEN in the design notes), all documented here:

* **Tight GT boxes.** From the segment masks of the index map; pixel ``(y, x)`` covers ``[x, x+1) x [y, y+1)``
  so a segment spanning columns ``x0..x1`` gets ``X1 = x0, X2 = x1 + 1`` (the COCO ``bbox`` convention).
* **Threshold.** A pair is *valid* iff the classes are equal and ``IoU >= iou_threshold`` (the paper calls
  ``t`` the "minimum match threshold", so a pair exactly at ``t`` qualifies). IoU between different classes is
  0 and never valid.
* **Optimisation of eq. 5.** ``strategy="hungarian"`` (default) solves the assignment exactly with
  ``scipy.optimize.linear_sum_assignment`` maximising the total thresholded IoU (invalid pairs count 0 and are
  discarded afterwards); this *is* the argmax over permutations of eq. 5. Ties are broken towards the
  higher-scoring detection (a ``1e-6 * score`` bonus). ``strategy="greedy_score"`` is the COCO-evaluation
  style alternative: detections in descending score order each take their highest-IoU still-free valid GT.
* **"Top match" among several detections on one GT.** The detection the assignment gives the GT is the top
  match: with Hungarian that is the one maximising the total IoU (for an isolated GT simply the highest IoU,
  ties -> higher score); with ``greedy_score`` the highest-scoring one. Every other detection that has a
  *valid* pair with an already-matched GT but got no GT itself is a duplicate and is dropped
  (``keep = False``); the caller removes it before building ``Psi`` (paper: "before being fed into the
  panoptic submodule").
* **Detections without any valid GT pair** (false positives, or on crowd regions) are *kept*: their channel
  gets no target pixel, so the cross-entropy pushes them down everywhere - this is how the network learns to
  suppress false positives through ``P``.
* **Ignored pixels (255).** Void, crowd segments (never matched), thing segments without a matched detection.
  Stuff pixels map to their stuff train id channel (always present in ``Psi``).
* **Resolution.** ``resize="upsample"`` (default) bilinearly upsamples ``P`` (stride 4) to the target size,
  which is exact w.r.t. the label map; ``"downsample"`` takes the nearest target pixel at each feature cell
  centre (cheaper, 16x fewer terms at stride 4).
* **Probabilities vs logits.** ``input_kind="probabilities"`` (default, for ``Psi`` built from softmax
  probabilities with a non-negative affinity) uses ``log(max(P, eps))`` as logits, i.e. the loss is
  ``-log(P_t / sum_k P_k)``: the NLL of ``P`` normalised over channels (argmax unchanged).
  ``input_kind="logits"`` applies the usual softmax cross-entropy (variant A / signed affinity).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor
from torchvision.ops import box_iou

IGNORE_INDEX = 255
_WHERE = "panoptic_matching_loss.py"

Strategy = Literal["hungarian", "greedy_score"]
InputKind = Literal["probabilities", "logits"]
Resize = Literal["upsample", "downsample"]


@dataclass
class PanopticMatch:
    """Result of :func:`match_detections` for one image.

    Attributes:
        keep: ``[D]`` bool, detections to feed to the panoptic submodule (duplicates on one GT dropped).
        target: ``[H, W]`` int64, channel of the KEPT-detection ``Psi``/``P`` per pixel (255 = ignore).
        matched_det: ``[M]`` int64, indices into the ORIGINAL ``D`` detections of the matched pairs.
        matched_gt: ``[M]`` int64, segment indices (0-based, ``k - 1`` of the index map) of the pairs.
        matched_iou: ``[M]`` float32, box IoU of the pairs.
        num_gt_things: number of non-crowd thing GT segments present in the map.
    """

    keep: Tensor
    target: Tensor
    matched_det: Tensor
    matched_gt: Tensor
    matched_iou: Tensor
    num_gt_things: int

    @property
    def num_matched(self) -> int:
        return int(self.matched_det.numel())

    @property
    def num_dropped(self) -> int:
        return int((~self.keep).sum())

    def stats(self) -> dict[str, float]:
        """Scalars for logging."""
        return {
            "num_gt_things": float(self.num_gt_things),
            "num_matched": float(self.num_matched),
            "num_dropped_duplicates": float(self.num_dropped),
            "mean_matched_iou": float(self.matched_iou.mean()) if self.num_matched else 0.0,
        }


def segment_boxes(gt_panoptic: Tensor, num_segments: int) -> tuple[Tensor, Tensor]:
    """Tight xyxy boxes of every segment of an index map (vectorised).

    Returns ``(boxes [S, 4] float32, present [S] bool)``; absent segments get a zero box.
    """
    h, w = gt_panoptic.shape
    dev = gt_panoptic.device
    flat = gt_panoptic.reshape(-1).long()
    valid = (flat >= 1) & (flat <= num_segments)
    seg = flat[valid] - 1
    ys = torch.arange(h, device=dev).repeat_interleave(w)[valid]
    xs = torch.arange(w, device=dev).repeat(h)[valid]
    big = torch.full((num_segments,), max(h, w) + 1, dtype=torch.long, device=dev)
    small = torch.full((num_segments,), -1, dtype=torch.long, device=dev)
    x0 = big.scatter_reduce(0, seg, xs, "amin")
    y0 = big.clone().scatter_reduce(0, seg, ys, "amin")
    x1 = small.scatter_reduce(0, seg, xs, "amax")
    y1 = small.clone().scatter_reduce(0, seg, ys, "amax")
    present = x1 >= 0
    boxes = torch.stack([x0, y0, x1 + 1, y1 + 1], dim=1).to(torch.float32)
    boxes[~present] = 0.0
    return boxes, present


def _assign(valid_iou: np.ndarray, scores: np.ndarray, strategy: Strategy) -> list[tuple[int, int]]:
    """Pairs ``(gt, det)`` maximising eq. 5; ``valid_iou`` is ``[G, D]`` with invalid pairs set to 0."""
    g, d = valid_iou.shape
    if g == 0 or d == 0:
        return []
    if strategy == "hungarian":
        gain = valid_iou + 1e-6 * (valid_iou > 0) * scores[None, :]
        rows, cols = linear_sum_assignment(gain, maximize=True)
        return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if valid_iou[r, c] > 0]
    if strategy == "greedy_score":
        free = np.ones(g, dtype=bool)
        pairs = []
        for j in np.argsort(-scores, kind="stable"):
            cand = np.where(free & (valid_iou[:, j] > 0), valid_iou[:, j], -1.0)
            r = int(np.argmax(cand))
            if cand[r] > 0:
                free[r] = False
                pairs.append((r, int(j)))
        return pairs
    raise ValueError(f"{_WHERE}: unknown strategy {strategy!r} (expected 'hungarian' or 'greedy_score')")


def match_detections(  # noqa: PLR0917 - positional signature fixed by the model contract
    det_boxes: Tensor,
    det_classes: Tensor,
    det_scores: Tensor,
    gt_panoptic: Tensor,
    gt_classes: Tensor,
    gt_iscrowd: Tensor,
    num_stuff: int,
    iou_threshold: float = 0.5,
    *,
    strategy: Strategy = "hungarian",
) -> PanopticMatch:
    """Match predicted detections to ground-truth segments (eq. 5) and build the panoptic target.

    Args:
        det_boxes: ``[D, 4]`` xyxy boxes in the pixel coordinates of ``gt_panoptic``.
        det_classes: ``[D]`` TRAIN ids of the detections.
        det_scores: ``[D]`` detection scores (tie-break / greedy order).
        gt_panoptic: ``[H, W]`` segment INDEX map: 0 void, ``k >= 1`` -> segment ``k - 1``.
        gt_classes: ``[S]`` TRAIN ids of the segments.
        gt_iscrowd: ``[S]`` crowd flags.
        num_stuff: ``N_st``.
        iou_threshold: ``t``; a pair is valid iff same class and ``IoU >= t``.
        strategy: ``"hungarian"`` (exact eq. 5) or ``"greedy_score"`` (see module docstring).

    Returns:
        :class:`PanopticMatch`. Channel ``N_st + j'`` of the target refers to the ``j'``-th KEPT detection.
    """
    if det_boxes.ndim != 2 or det_boxes.shape[-1] != 4:
        raise ValueError(f"{_WHERE}: det_boxes must be [D, 4], got {tuple(det_boxes.shape)}")
    d = det_boxes.shape[0]
    if det_classes.shape != (d,) or det_scores.shape != (d,):
        raise ValueError(
            f"{_WHERE}: det_classes/det_scores must be [D={d}], got "
            f"{tuple(det_classes.shape)} / {tuple(det_scores.shape)}"
        )
    if gt_panoptic.ndim != 2:
        raise ValueError(f"{_WHERE}: gt_panoptic must be [H, W], got {tuple(gt_panoptic.shape)}")
    s = gt_classes.shape[0]
    if gt_classes.ndim != 1 or gt_iscrowd.shape != (s,):
        raise ValueError(
            f"{_WHERE}: gt_classes/gt_iscrowd must be [S], got {tuple(gt_classes.shape)} / "
            f"{tuple(gt_iscrowd.shape)}"
        )
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"{_WHERE}: iou_threshold must be in (0, 1], got {iou_threshold}")
    dev = gt_panoptic.device
    gt_classes = gt_classes.to(dev).long()
    gt_iscrowd = gt_iscrowd.to(dev).bool()
    pan = gt_panoptic.long()
    if pan.numel() > 0 and (int(pan.max()) > s or int(pan.min()) < 0):
        raise ValueError(
            f"{_WHERE}: gt_panoptic values must be in [0, S={s}], got [{int(pan.min())}, {int(pan.max())}]"
        )

    gt_boxes, present = segment_boxes(pan, s)
    is_thing = gt_classes >= num_stuff
    cand = present & is_thing & ~gt_iscrowd  # GT segments that can be matched
    gt_idx = torch.nonzero(cand).flatten()

    keep = torch.ones(d, dtype=torch.bool, device=det_boxes.device)
    pairs: list[tuple[int, int]] = []
    iou_np = np.zeros((0, d), dtype=np.float64)
    if d > 0 and gt_idx.numel() > 0:
        iou = box_iou(gt_boxes[gt_idx], det_boxes.detach().to(dev, torch.float32))  # [G, D]
        same = gt_classes[gt_idx][:, None] == det_classes.to(dev).long()[None, :]
        iou = torch.where(same, iou, torch.zeros_like(iou))
        valid = iou >= iou_threshold
        iou_np = torch.where(valid, iou, torch.zeros_like(iou)).cpu().double().numpy()
        scores_np = det_scores.detach().cpu().double().numpy()
        pairs = _assign(iou_np, scores_np, strategy)
        matched_det_set = {j for _, j in pairs}
        matched_gt_rows = [r for r, _ in pairs]
        if matched_gt_rows:
            # duplicates: unmatched detections with a valid pair to a matched GT
            dup = (iou_np[matched_gt_rows] > 0).any(axis=0)
            for j in np.nonzero(dup)[0]:
                if int(j) not in matched_det_set:
                    keep[int(j)] = False

    # Channel of each kept detection.
    kept_rank = torch.cumsum(keep.long(), 0) - 1  # index among kept
    # segment -> channel lookup (index 0 = void)
    lut = torch.full((s + 1,), IGNORE_INDEX, dtype=torch.long, device=dev)
    if s > 0:
        stuff_seg = present & ~is_thing
        seg_ids = torch.nonzero(stuff_seg).flatten()
        lut[seg_ids + 1] = gt_classes[seg_ids]
    for r, j in pairs:
        lut[int(gt_idx[r]) + 1] = num_stuff + int(kept_rank[j])
    target = lut[pan]

    if pairs:
        md = torch.tensor([j for _, j in pairs], dtype=torch.long)
        mg = gt_idx.cpu()[torch.tensor([r for r, _ in pairs], dtype=torch.long)]
        mi = torch.tensor([iou_np[r, j] for r, j in pairs], dtype=torch.float32)
    else:
        md = torch.zeros(0, dtype=torch.long)
        mg = torch.zeros(0, dtype=torch.long)
        mi = torch.zeros(0, dtype=torch.float32)
    return PanopticMatch(
        keep=keep,
        target=target,
        matched_det=md,
        matched_gt=mg,
        matched_iou=mi,
        num_gt_things=int(gt_idx.numel()),
    )


def panoptic_matching_loss(
    panoptic_logits: Tensor,
    target: Tensor,
    *,
    input_kind: InputKind = "probabilities",
    resize: Resize = "upsample",
    eps: float = 1e-6,
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    """Cross-entropy of ``P`` against the matched target of one image.

    Args:
        panoptic_logits: ``[K, h, w]`` panoptic output ``P`` (built from the KEPT detections).
        target: ``[H, W]`` int64 channel map from :func:`match_detections` (255 = ignore).
        input_kind: ``"probabilities"`` (CE on ``log(max(P, eps))``) or ``"logits"`` (CE on ``P``).
        resize: ``"upsample"`` ``P`` bilinearly to ``[H, W]`` or ``"downsample"`` the target (nearest) to
            ``[h, w]``.
        eps: clamp of the probability reading.
        ignore_index: label to ignore.

    Returns:
        Scalar mean over non-ignored pixels; ``0`` (still connected to the graph) when there are none.
    """
    if panoptic_logits.ndim != 3 or target.ndim != 2:
        raise ValueError(
            f"{_WHERE}: expected P [K, h, w] and target [H, W], got {tuple(panoptic_logits.shape)} and "
            f"{tuple(target.shape)}"
        )
    k = panoptic_logits.shape[0]
    tgt = target.to(panoptic_logits.device).long()
    bad = (tgt != ignore_index) & ((tgt < 0) | (tgt >= k))
    if bool(bad.any()):
        raise ValueError(f"{_WHERE}: target has channel ids outside [0, K={k}) (max {int(tgt[bad].max())})")
    with torch.autocast(device_type=tgt.device.type, enabled=False):
        p32 = panoptic_logits.to(torch.promote_types(panoptic_logits.dtype, torch.float32))
        return _matching_cross_entropy(p32, tgt, input_kind, resize, ignore_index=ignore_index, eps=eps)


def _matching_cross_entropy(
    panoptic_logits: Tensor, tgt: Tensor, input_kind: str, resize: str, *, ignore_index: int, eps: float
) -> Tensor:
    """Cross-entropy of eq. 5's targets on ``P`` (fp32: ``log(P)`` of tiny probabilities needs it)."""
    p = panoptic_logits[None]
    if resize == "upsample":
        if p.shape[-2:] != tgt.shape:
            p = F.interpolate(p, size=tuple(tgt.shape), mode="bilinear", align_corners=False)
    elif resize == "downsample":
        if p.shape[-2:] != tgt.shape:
            tgt = F.interpolate(tgt[None, None].float(), size=tuple(p.shape[-2:]), mode="nearest-exact")[0, 0]
            tgt = tgt.long()
    else:
        raise ValueError(f"{_WHERE}: unknown resize {resize!r} (expected 'upsample' or 'downsample')")
    if input_kind == "probabilities":
        logits = torch.log(p.clamp_min(eps))
    elif input_kind == "logits":
        logits = p
    else:
        raise ValueError(f"{_WHERE}: unknown input_kind {input_kind!r} (expected 'probabilities'/'logits')")
    if not bool((tgt != ignore_index).any()):
        return panoptic_logits.sum() * 0.0
    return F.cross_entropy(logits, tgt[None], ignore_index=ignore_index)


def batch_panoptic_matching_loss(
    panoptic_logits: Sequence[Tensor],
    targets: Sequence[Tensor],
    **kwargs: object,
) -> Tensor:
    """Mean of :func:`panoptic_matching_loss` over the images that have at least one labelled pixel.

    Images whose target is all-ignore contribute nothing (but stay in the graph with weight 0). Keyword
    arguments are forwarded to :func:`panoptic_matching_loss`.
    """
    if len(panoptic_logits) != len(targets):
        raise ValueError(f"{_WHERE}: {len(panoptic_logits)} P tensors but {len(targets)} targets")
    if not panoptic_logits:
        raise ValueError(f"{_WHERE}: empty batch")
    ignore_index = int(kwargs.get("ignore_index", IGNORE_INDEX))  # type: ignore[call-overload]
    losses = []
    zero = panoptic_logits[0].sum() * 0.0
    for p, t in zip(panoptic_logits, targets, strict=True):
        loss = panoptic_matching_loss(p, t, **kwargs)  # type: ignore[arg-type]
        if bool((t != ignore_index).any()):
            losses.append(loss)
        else:
            zero = zero + loss
    if not losses:
        return zero
    return torch.stack(losses).mean() + zero
