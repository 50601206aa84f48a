"""Object detection submodule (sec. 3.3): torchvision's RPN + RoI heads (Faster R-CNN, optionally Mask R-CNN).

The parts are torchvision's own (``AnchorGenerator``, ``RPNHead``, ``RegionProposalNetwork``,
``MultiScaleRoIAlign`` (run on every CPU thread, :mod:`.roi_align`), ``TwoMLPHead``, ``FastRCNNPredictor``,
``MaskRCNNHeads``, ``MaskRCNNPredictor``,
``RoIHeads``), composed here instead of through ``GeneralizedRCNN`` because the panoptic head needs the
*predicted* detections during training too (sec. 3.5: "we feed predicted object detections into the panoptic
segmentation submodule"), while torchvision's heads return only losses in training mode.

Training: the normal loss pass (RPN losses; RoI heads on 512 sampled proposals incl. GT boxes) and then,
when the panoptic head is trained, a second pass on the RPN proposals through box head -> predictor ->
``postprocess_detections`` (score threshold, per-class NMS, top-k) and, with masks, mask head ->
``maskrcnn_inference`` on the detected boxes. Inference: only the second pass.

Gradient choice (documented decision): the box pass of the second pass runs under ``torch.no_grad()`` - boxes
and scores ``s_k`` are constants for the panoptic head (they are trained by the detector's own losses; letting
the matching loss, which only sees matched detections, push scores would bias them upwards). The mask pass
keeps its graph when ``mask_grad=True``, so the panoptic matching loss back-propagates through the pasted mask
probabilities into the mask head and, via RoIAlign, into the FPN - the end-to-end training of the paper.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import RoIHeads, maskrcnn_inference
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead

from .backbone import ROI_KEYS
from .config import ModelConfig
from .mask_head import MaskHead, MaskPredictor, caller_autocast_dtype, mask_branch_precision
from .roi_align import CpuMultiScaleRoIAlign

Detections = dict[str, Tensor]
"""Per image: ``boxes`` [D,4] image xyxy, ``scores`` [D], ``labels`` [D] detector labels 1..N_th,
``mask_probs`` [D,M,M] (RoI-resolution mask probabilities of the predicted class; with masks only)."""
BoxTransform = Callable[[Tensor, tuple[int, int]], Tensor]
"""``f(boxes [D, 4] xyxy, (H, W)) -> boxes [D, 4]``."""


def paste_masks(masks: Tensor, boxes: Tensor, height: int, width: int, stride: float = 1.0) -> Tensor:
    """Paste RoI masks into a grid of cell size ``stride`` image pixels, each only inside its box.

    Cell ``(y, x)`` samples the mask at its centre ``((x + .5) s, (y + .5) s)`` (image pixels) with bilinear
    interpolation; the ``M x M`` mask covers the box exactly (``align_corners=False`` convention), zero
    outside. Each mask is sampled only over the cells that its bilinear footprint reaches (the box plus half
    a mask cell), like torchvision's ``paste_masks_in_image``, so the cost is the boxes' area rather than
    ``D x H x W``; the values equal a ``grid_sample`` over the whole grid. Differentiable w.r.t. ``masks``.

    Args:
        masks: [D, M, M] (or [D, 1, M, M]) mask probabilities.
        boxes: [D, 4] xyxy in image pixels.
        height, width: output grid size.
        stride: image pixels per output cell (4 for the panoptic head, 1 for full resolution).

    Returns:
        [D, height, width].
    """
    if masks.ndim == 4:
        masks = masks[:, 0]
    d, mh, mw = masks.shape
    out = masks.new_zeros((d, height, width))
    if d == 0:
        return out
    b = boxes.detach().to(masks.dtype)
    bw = (b[:, 2] - b[:, 0]).clamp(min=1e-3)
    bh = (b[:, 3] - b[:, 1]).clamp(min=1e-3)
    # cells whose centre lies strictly within half a mask cell of the box get a non-zero bilinear weight;
    # one cell of margin on each side absorbs rounding
    span = torch.stack(
        [
            (b[:, 0] - 0.5 * bw / mw) / stride - 0.5,
            (b[:, 1] - 0.5 * bh / mh) / stride - 0.5,
            (b[:, 2] + 0.5 * bw / mw) / stride - 0.5,
            (b[:, 3] + 0.5 * bh / mh) / stride - 0.5,
        ],
        dim=1,
    ).float()
    lo = span[:, :2].floor().long()
    hi = span[:, 2:].ceil().long() + 2
    lo[:, 0].clamp_(0, width)
    lo[:, 1].clamp_(0, height)
    hi[:, 0].clamp_(0, width)
    hi[:, 1].clamp_(0, height)
    for k, (x0, y0, x1, y1) in enumerate(torch.cat([lo, hi], dim=1).tolist()):
        if x1 <= x0 or y1 <= y0:
            continue
        xs = (torch.arange(x0, x1, device=masks.device, dtype=masks.dtype) + 0.5) * stride
        ys = (torch.arange(y0, y1, device=masks.device, dtype=masks.dtype) + 0.5) * stride
        gx = (xs - b[k, 0]) / bw[k] * 2 - 1
        gy = (ys - b[k, 1]) / bh[k] * 2 - 1
        grid = torch.stack([gx[None, :].expand(y1 - y0, -1), gy[:, None].expand(-1, x1 - x0)], dim=-1)
        out[k, y0:y1, x0:x1] = F.grid_sample(
            masks[k][None, None], grid[None], mode="bilinear", padding_mode="zeros", align_corners=False
        )[0, 0]
    return out


class DetectionSubmodule(nn.Module):
    """RPN + RoI heads on the FPN features.

    Args:
        cfg: model configuration (anchors, proposal counts, RoI sampling, thresholds, head widths).
        num_things: ``N_th``; the box predictor has ``N_th + 1`` outputs (0 = background).
        in_channels: FPN channels.
    """

    def __init__(self, cfg: ModelConfig, num_things: int, in_channels: int) -> None:
        super().__init__()
        self.use_masks = cfg.use_masks
        self.min_box_size = cfg.min_box_size
        anchor_generator = AnchorGenerator(
            sizes=tuple((s,) for s in cfg.anchor_sizes),
            aspect_ratios=(tuple(cfg.aspect_ratios),) * len(cfg.anchor_sizes),
        )
        rpn_head = RPNHead(in_channels, anchor_generator.num_anchors_per_location()[0])
        self.rpn = RegionProposalNetwork(
            anchor_generator,
            rpn_head,
            fg_iou_thresh=cfg.rpn_fg_iou_thresh,
            bg_iou_thresh=cfg.rpn_bg_iou_thresh,
            batch_size_per_image=cfg.rpn_batch_size_per_image,
            positive_fraction=0.5,
            pre_nms_top_n={"training": cfg.rpn_pre_nms_top_n_train, "testing": cfg.rpn_pre_nms_top_n_test},
            post_nms_top_n={"training": cfg.rpn_post_nms_top_n_train, "testing": cfg.rpn_post_nms_top_n_test},
            nms_thresh=cfg.rpn_nms_thresh,
        )
        box_roi_pool = CpuMultiScaleRoIAlign(featmap_names=ROI_KEYS, output_size=7, sampling_ratio=2)
        box_head = TwoMLPHead(in_channels * 7 * 7, cfg.box_head_channels)
        box_predictor = FastRCNNPredictor(cfg.box_head_channels, num_things + 1)
        mask_parts: dict[str, nn.Module] = {}
        if cfg.use_masks:
            mask_parts = {
                "mask_roi_pool": CpuMultiScaleRoIAlign(
                    featmap_names=ROI_KEYS, output_size=14, sampling_ratio=2
                ),
                "mask_head": MaskHead(in_channels, [cfg.mask_head_channels] * cfg.mask_head_convs, 1),
                "mask_predictor": MaskPredictor(
                    cfg.mask_head_channels, cfg.mask_head_channels, num_things + 1
                ),
            }
        self.roi_heads = RoIHeads(
            box_roi_pool,
            box_head,
            box_predictor,
            fg_iou_thresh=cfg.box_fg_iou_thresh,
            bg_iou_thresh=cfg.box_bg_iou_thresh,
            batch_size_per_image=cfg.roi_batch_size_per_image,
            positive_fraction=cfg.roi_positive_fraction,
            bbox_reg_weights=None,
            score_thresh=cfg.box_score_thresh,
            nms_thresh=cfg.box_nms_thresh,
            detections_per_img=cfg.detections_per_img,
            **mask_parts,
        )

    def forward(
        self,
        images: ImageList,
        features: OrderedDict[str, Tensor],
        targets: list[dict[str, Tensor]] | None = None,
        detect: bool = True,
        mask_grad: bool = False,
        *,
        max_detections: int | None = None,
        box_transform: BoxTransform | None = None,
    ) -> tuple[list[Detections], dict[str, Tensor]]:
        """Run the detector.

        Args:
            images: the padded batch (``image_sizes`` = valid sizes).
            features: FPN maps (all levels feed the RPN; ``'0'..'3'`` the RoI heads).
            targets: training targets (``boxes``, ``labels``, ``masks`` when masks are on); ``None`` in eval.
            detect: also return post-processed detections (always in eval; in training only when needed).
            mask_grad: keep the graph of the mask pass of the detections (end-to-end training).
            max_detections: keep only this many top-scoring detections per image (before the mask pass).
            box_transform: ``f(boxes [D, 4], (H, W)) -> boxes`` applied to the kept detections before the
                mask pass (training's box jitter, :mod:`.box_perturbation`; the Fig. 1 perturbation in eval).

        Returns:
            (detections per image - empty list when ``detect`` is False, detector losses - empty in eval).
        """
        # Under bf16/fp16 autocast the detector runs in fp32: box decoding in bf16 rounds a coordinate of
        # 200 px to the nearest 1 px, and the RoI heads see a different number of boxes at every step, each
        # new shape costing oneDNN a new kernel on a CPU (steps grew from 1.2 to 2 s). Only the backbone,
        # FPN and dense heads (fixed shapes, most of the FLOPs) take the low precision, and the mask branch
        # (no coordinates; its RoI batches padded to recurring sizes in training: .mask_head).
        device_type = images.tensors.device.type
        with (
            mask_branch_precision(caller_autocast_dtype(device_type)),
            torch.autocast(device_type=device_type, enabled=False),
        ):
            features = OrderedDict((k, v.float()) for k, v in features.items())
            images = ImageList(images.tensors.float(), images.image_sizes)
            losses: dict[str, Tensor] = {}
            if self.training:
                if targets is None:
                    raise ValueError("detection.py: targets are required in training mode")
                keys = ("boxes", "labels", "masks") if self.use_masks else ("boxes", "labels")
                det_targets = [{k: t[k] for k in keys} for t in targets]
                proposals, rpn_losses = self.rpn(images, features, det_targets)
                _, roi_losses = self.roi_heads(features, proposals, images.image_sizes, det_targets)
                losses.update(rpn_losses)
                losses.update(roi_losses)
            else:
                proposals, _ = self.rpn(images, features)
            detections: list[Detections] = []
            if detect or not self.training:
                detections = self.detect(
                    features,
                    proposals,
                    images.image_sizes,
                    mask_grad=mask_grad,
                    max_detections=max_detections,
                    box_transform=box_transform,
                )
        return detections, losses

    def detect(
        self,
        features: OrderedDict[str, Tensor],
        proposals: list[Tensor],
        image_sizes: list[tuple[int, int]],
        mask_grad: bool = False,
        *,
        max_detections: int | None = None,
        box_transform: BoxTransform | None = None,
    ) -> list[Detections]:
        """Second pass: proposals -> box head -> ``postprocess_detections`` (-> mask head); degenerate boxes
        (width or height < ``min_box_size``) are removed, then all but the ``max_detections`` top-scoring;
        ``box_transform`` (if any) moves the kept boxes before the mask head sees them."""
        heads = self.roi_heads
        with torch.no_grad():
            x = heads.box_head(heads.box_roi_pool(features, proposals, image_sizes))
            class_logits, box_regression = heads.box_predictor(x)
            boxes, scores, labels = heads.postprocess_detections(
                class_logits, box_regression, proposals, image_sizes
            )
        out: list[Detections] = []
        for b, s, lab, size in zip(boxes, scores, labels, image_sizes, strict=True):
            keep = ((b[:, 2] - b[:, 0]) >= self.min_box_size) & ((b[:, 3] - b[:, 1]) >= self.min_box_size)
            if max_detections is not None and int(keep.sum()) > max_detections:
                kept = keep.nonzero()[:, 0]
                top = s[kept].topk(max_detections).indices.sort().values  # keep the detector's order
                keep = kept[top]
            kept_boxes = b[keep] if box_transform is None else box_transform(b[keep], size)
            out.append({"boxes": kept_boxes, "scores": s[keep], "labels": lab[keep]})
        if self.use_masks:
            probs = self.mask_probs(
                features, [d["boxes"] for d in out], [d["labels"] for d in out], image_sizes, mask_grad
            )
            for d, p in zip(out, probs, strict=True):
                d["mask_probs"] = p
        return out

    def mask_probs(
        self,
        features: OrderedDict[str, Tensor],
        boxes: list[Tensor],
        labels: list[Tensor],
        image_sizes: list[tuple[int, int]],
        grad: bool = False,
    ) -> list[Tensor]:
        """Mask head on given boxes (per image; detector labels 1..N_th): [D, M, M] probabilities of each
        box's class. ``grad`` keeps the graph (end-to-end training; also used on GT boxes, Table C).
        Runs in fp32 under autocast, as the rest of the detector, but for the mask branch's convolutions
        (:mod:`.mask_head`; called on GT / perturbed boxes from outside :meth:`forward` too)."""
        heads = self.roi_heads
        device_type = next(iter(features.values())).device.type
        caller = caller_autocast_dtype(device_type)  # None inside forward: forward set the branch's dtype
        with (
            mask_branch_precision(caller) if caller is not None else nullcontext(),
            torch.autocast(device_type=device_type, enabled=False),
            torch.set_grad_enabled(grad and torch.is_grad_enabled()),
        ):
            features = OrderedDict((k, v.float()) for k, v in features.items())
            if sum(len(b) for b in boxes) > 0:
                m = heads.mask_head(heads.mask_roi_pool(features, boxes, image_sizes))
                probs = maskrcnn_inference(heads.mask_predictor(m), labels)
            else:
                size = heads.mask_roi_pool.output_size[0] * 2
                probs = [features[ROI_KEYS[0]].new_zeros((0, 1, size, size)) for _ in boxes]
        return [p[:, 0] for p in probs]
