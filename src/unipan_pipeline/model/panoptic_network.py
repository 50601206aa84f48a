"""The full network of the paper (Fig. 2): backbone -> semantic head V + detector -> dynamic potential Psi ->
dense instance affinity -> P, with the same logic in training and inference.

Documented choices:

* **Input.** Images arrive normalised (data contract) unless ``cfg.normalize_inputs``; they are zero-padded
  (bottom/right) to a common size divisible by ``cfg.size_divisible`` (32) and wrapped in an ``ImageList``
  whose ``image_sizes`` are the valid sizes. Semantic / panoptic targets are padded with the ignore label.
* **Semantic loss.** Logits V (stride 4) upsampled bilinearly to the padded input size, cross-entropy with
  ignore 255 (:func:`.semantic_head.semantic_loss`).
* **Panoptic head in training** (``train_end_to_end``): the detector's post-processed *predicted*
  detections (second pass, see :mod:`.detection`) scoring at least ``panoptic_min_score`` are matched to the
  GT (eq. 5, :func:`.panoptic_matching_loss.match_detections`); duplicates are dropped; Psi (eq. 1-2) and P
  (eq. 3-4) are built from the kept detections and the matching cross-entropy is taken on P (on Psi when
  ``use_affinity`` is off). Gradients reach V, the affinity head, and the mask head through the pasted mask
  probabilities; boxes and scores are constants (see :mod:`.detection`).
* **Ground-truth detections in training** (``train_detections: ground_truth``, supplementary Table C): the
  panoptic head gets the GT boxes and classes (score 1; degenerate boxes dropped) and the masks of the mask
  head run on the GT boxes, with gradient; matching, Psi, P and the loss are the same as above.
* **Box jitter in training** (``train_box_jitter > 0``, off by default = the paper): the boxes of those
  detections, predicted or GT, are shrunk and shifted at random before the mask pass and the matching
  (:mod:`.box_perturbation`), the targets staying whole segments, so that the loss asks the affinity to
  recover what imperfect boxes cut off; with exact GT boxes it otherwise learns to switch itself off.
* **Masks for Psi** are pasted at stride 4, each inside its box (:func:`.detection.paste_masks`); the
  full-resolution masks are pasted only for the heuristic merger or when ``return_masks`` is set (AP mask).
* **Argmax inference.** ``P`` (stride 4, padded grid) is upsampled bilinearly by 4 and cropped to the input
  size before the argmax, evaluated only next to label changes (:mod:`.upsampled_argmax`; the same result
  as the dense upsampling); the semantic output is the same argmax of ``V``. Only channels that win at
  least one stride-4 cell take part (a channel that
  loses everywhere on the stride-4 grid can win a full-resolution pixel only through interpolation between
  two other winners; we accept that approximation for the memory saving with 150+ channels on COCO).
* **Unclaimed thing pixels** (``void_unclaimed_things``, off by default = the paper's plain argmax): P has
  no channel for "thing without a detection" (e.g. COCO crowd regions, which the matching loss ignores), so
  the argmax hands such pixels to an arbitrary near-zero stuff channel; with the switch on they become void
  where the winning channel is stuff but the semantic argmax is a thing class (UPSNet's "unknown" idea).
* **Heuristic inference** (rows C1/D1): ``heuristic_merge`` of the semantic argmax and the full-resolution
  pasted masks, then the same id-map conversion.
* **D = 0** works everywhere: Psi then holds only the stuff channels.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.image_list import ImageList

from ..categories import IGNORE_INDEX, CategoryMap
from .backbone import ResNetFPNBackbone, build_backbone
from .box_perturbation import jitter_boxes
from .config import ModelConfig
from .detection import BoxTransform, Detections, DetectionSubmodule, paste_masks
from .dynamic_potential import dynamic_potential, potential_space
from .heuristic_merger import heuristic_merge
from .instance_affinity import DenseInstanceAffinity
from .outputs import channel_entries, panoptic_from_index_map
from .panoptic_matching_loss import match_detections, panoptic_matching_loss
from .semantic_head import DeformableSemanticHead, SemanticHead, build_semantic_head, semantic_loss
from .upsampled_argmax import first_argmax, upsampled_argmax

STRIDE = 4
"""Downsampling factor d of V, Q, Psi and P (sec. 3.2)."""


class PanopticNetwork(nn.Module):
    """Backbone, semantic head, detector, panoptic submodule (Fig. 2). Build it with :func:`build_model`.

    ``forward(images, targets=None)`` follows the model contract: in training a dict of weighted losses, in
    eval a list of per-image result dicts (see :meth:`forward`).
    """

    def __init__(
        self,
        cfg: ModelConfig,
        categories: CategoryMap,
        backbone: ResNetFPNBackbone,
        semantic_head: SemanticHead | DeformableSemanticHead,
        detector: DetectionSubmodule,
        *,
        affinity_extractor: SemanticHead | DeformableSemanticHead | None = None,
        affinity: DenseInstanceAffinity | None = None,
    ) -> None:
        super().__init__()
        if (affinity_extractor is None) != (affinity is None):
            raise ValueError("panoptic_network.py: give both affinity_extractor and affinity, or neither")
        self.cfg = cfg
        self.categories = categories
        self.num_stuff = categories.num_stuff
        self.num_classes = categories.num_classes
        self.backbone = backbone
        self.semantic_head = semantic_head
        self.detector = detector
        self.affinity_extractor = affinity_extractor
        self.affinity = affinity
        self.return_masks = False
        """Eval: also return full-resolution ``masks`` [D, 1, H, W] (for AP mask); off, masks are pasted at
        stride 4 only, inside their boxes."""
        self.return_potentials = False
        """Eval (argmax inference): also return ``potential`` (Psi, eq. 1-2) and ``panoptic_logits``
        (P, eq. 3-4) [N_st + D, h, w] at stride 4, and ``potential_panoptic`` / ``potential_segments_info``:
        the panoptic output of argmax(Psi), built exactly as the one of argmax(P) (the affinity's effect)."""
        self.return_heuristic = False
        """Eval (with masks): also return ``heuristic_panoptic`` / ``heuristic_segments_info``, the heuristic
        merger's output on the same detections (rows C1/D1), whatever ``cfg.inference``."""
        self.box_perturbation: BoxTransform | None = None
        """Eval: ``f(boxes [D, 4], (H, W)) -> boxes`` applied to the detected boxes before the mask head, the
        panoptic head and the merger (the detector's ``box_transform``); Fig. 1's experiment."""
        self.register_buffer("image_mean", torch.tensor(cfg.image_mean).view(3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(cfg.image_std).view(3, 1, 1), persistent=False)

    # ------------------------------------------------------------------ helpers
    def batch_images(self, images: list[Tensor]) -> ImageList:
        """(Normalise and) zero-pad to a common size divisible by ``cfg.size_divisible``."""
        if not images:
            raise ValueError("panoptic_network.py: empty image list")
        for img in images:
            if img.ndim != 3 or img.shape[0] != 3:
                raise ValueError(f"panoptic_network.py: images must be [3, H, W], got {tuple(img.shape)}")
        div = self.cfg.size_divisible
        hp = int(math.ceil(max(i.shape[1] for i in images) / div) * div)
        wp = int(math.ceil(max(i.shape[2] for i in images) / div) * div)
        batch = images[0].new_zeros((len(images), 3, hp, wp))
        for b, img in enumerate(images):
            value = (img - self.image_mean) / self.image_std if self.cfg.normalize_inputs else img
            batch[b, :, : img.shape[1], : img.shape[2]] = value
        return ImageList(batch, [(int(i.shape[1]), int(i.shape[2])) for i in images])

    @staticmethod
    def _pad(t: Tensor, size: tuple[int, int], value: int) -> Tensor:
        return F.pad(t, (0, size[1] - t.shape[-1], 0, size[0] - t.shape[-2]), value=value)

    def _panoptic_inputs(self, det: Detections) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """(boxes, scores, train-id classes, mask probs) of the detections given to the panoptic head."""
        keep = det["scores"] >= self.cfg.panoptic_min_score
        classes = det["labels"][keep] + (self.num_stuff - 1)
        masks = det["mask_probs"][keep] if self.cfg.use_masks else None
        return det["boxes"][keep], det["scores"][keep], classes, masks

    def panoptic_logits(
        self,
        semantic_logits: Tensor,
        q: Tensor | None,
        boxes: Tensor,
        *,
        scores: Tensor,
        classes: Tensor,
        mask_probs: Tensor | None,
    ) -> Tensor:
        """Psi (eq. 1-2) and, with the affinity head, P (eq. 3-4) of one image; ``[N_st + D, h, w]``."""
        return self.potentials(
            semantic_logits, q, boxes, scores=scores, classes=classes, mask_probs=mask_probs
        )[1]

    def potentials(
        self,
        semantic_logits: Tensor,
        q: Tensor | None,
        boxes: Tensor,
        *,
        scores: Tensor,
        classes: Tensor,
        mask_probs: Tensor | None,
    ) -> tuple[Tensor, Tensor]:
        """``(Psi, P)`` of one image (eq. 1-2 and 3-4), each ``[N_st + D, h, w]``; ``P is Psi`` without the
        affinity head."""
        h, w = semantic_logits.shape[-2:]
        masks = None
        if mask_probs is not None:
            masks = paste_masks(mask_probs, boxes, h, w, stride=STRIDE)
        psi = dynamic_potential(
            semantic_logits, boxes, scores, classes, masks, self.num_stuff, self.cfg.potential_variant, STRIDE
        )
        if self.affinity is None or q is None:
            return psi, psi
        return psi, self.affinity(q, psi)

    def _jitter_boxes(self, boxes: Tensor, image_size: tuple[int, int]) -> Tensor:
        """Training's box jitter (``cfg.train_box_jitter``, :func:`.box_perturbation.jitter_boxes`)."""
        return jitter_boxes(boxes, self.cfg.train_box_jitter, image_size)

    def ground_truth_detections(
        self,
        features: OrderedDict[str, Tensor],
        image_list: ImageList,
        targets: list[dict],
        box_transform: BoxTransform | None = None,
    ) -> list[Detections]:
        """The GT instances as detections (supplementary Table C): boxes, detector labels, score 1 and, with
        masks, the mask head's probabilities on the GT boxes (with gradient); degenerate boxes dropped, then
        ``box_transform`` (training's box jitter) applied to the rest before the mask head."""
        out: list[Detections] = []
        for tgt, image_size in zip(targets, image_list.image_sizes, strict=True):
            boxes = tgt["boxes"].float()
            size = self.cfg.min_box_size
            keep = ((boxes[:, 2] - boxes[:, 0]) >= size) & ((boxes[:, 3] - boxes[:, 1]) >= size)
            boxes = boxes[keep]
            if box_transform is not None:
                boxes = box_transform(boxes, image_size)
            out.append(
                {"boxes": boxes, "scores": torch.ones_like(boxes[:, 0]), "labels": tgt["labels"][keep]}
            )
        if self.cfg.use_masks:
            probs = self.detector.mask_probs(
                features,
                [d["boxes"] for d in out],
                [d["labels"] for d in out],
                image_list.image_sizes,
                grad=True,
            )
            for d, prob in zip(out, probs, strict=True):
                d["mask_probs"] = prob
        return out

    # ------------------------------------------------------------------ forward
    def forward(
        self, images: list[Tensor], targets: list[dict] | None = None
    ) -> dict[str, Tensor] | list[dict]:
        """Training (``self.training``): weighted losses ``loss_objectness``, ``loss_rpn_box_reg``,
        ``loss_classifier``, ``loss_box_reg``, (``loss_mask``), ``loss_semantic``, (``loss_panoptic``).

        Eval: per image ``panoptic`` int32 [H,W], ``segments_info``, ``semantic`` int64 [H,W],
        ``boxes`` [D,4], ``scores`` [D], ``labels`` [D] (detector labels),
        ``masks`` float [D,1,H,W] (with masks and ``return_masks``), at the size
        of the given image tensor.
        """
        if self.training and targets is None:
            raise ValueError("panoptic_network.py: targets are required in training mode")
        image_list = self.batch_images(images)
        features: OrderedDict[str, Tensor] = self.backbone(image_list.tensors)
        sem_logits = self.semantic_head(features)
        q = self.affinity_extractor(features) if self.affinity_extractor is not None else None
        if self.training:
            assert targets is not None
            return self._losses(image_list, features, sem_logits, q, targets)
        return self._inference(image_list, features, sem_logits, q)

    def _losses(
        self,
        image_list: ImageList,
        features: OrderedDict[str, Tensor],
        sem_logits: Tensor,
        q: Tensor | None,
        targets: list[dict],
    ) -> dict[str, Tensor]:
        cfg = self.cfg
        padded = (int(image_list.tensors.shape[-2]), int(image_list.tensors.shape[-1]))
        e2e = cfg.train_end_to_end
        predicted = cfg.train_detections == "predicted"
        jitter = self._jitter_boxes if cfg.train_box_jitter > 0 else None
        detections, det_losses = self.detector(
            image_list,
            features,
            targets,
            detect=e2e and predicted,
            mask_grad=e2e,
            max_detections=cfg.panoptic_max_detections_train,
            box_transform=jitter,
        )
        if e2e and not predicted:
            detections = self.ground_truth_detections(features, image_list, targets, box_transform=jitter)
        losses = {k: v * cfg.loss_weight_det for k, v in det_losses.items()}
        sem_target = torch.stack([self._pad(t["semantic"].long(), padded, IGNORE_INDEX) for t in targets])
        losses["loss_semantic"] = semantic_loss(sem_logits, sem_target) * cfg.loss_weight_sem
        if e2e:
            space = potential_space(cfg.potential_variant)
            per_image: list[Tensor] = []
            labelled = 0
            for i, (det, tgt) in enumerate(zip(detections, targets, strict=True)):
                boxes, scores, classes, mask_probs = self._panoptic_inputs(det)
                match = match_detections(
                    boxes,
                    classes,
                    scores,
                    tgt["panoptic"],
                    tgt["segment_classes"],
                    tgt["segment_iscrowd"],
                    self.num_stuff,
                    cfg.match_iou_thresh,
                    strategy=cfg.match_strategy,
                )
                keep = match.keep
                p = self.panoptic_logits(
                    sem_logits[i],
                    None if q is None else q[i],
                    boxes[keep],
                    scores=scores[keep],
                    classes=classes[keep],
                    mask_probs=None if mask_probs is None else mask_probs[keep],
                )
                target = self._pad(match.target, padded, IGNORE_INDEX)
                loss = panoptic_matching_loss(p, target, input_kind=space, resize=cfg.panoptic_loss_resize)
                has_labels = bool((target != IGNORE_INDEX).any())
                labelled += int(has_labels)
                per_image.append(loss if has_labels else loss * 0.0)
            losses["loss_panoptic"] = torch.stack(per_image).sum() / max(labelled, 1) * cfg.loss_weight_pan
        return losses

    @torch.no_grad()
    def _inference(
        self,
        image_list: ImageList,
        features: OrderedDict[str, Tensor],
        sem_logits: Tensor,
        q: Tensor | None,
    ) -> list[dict]:
        cfg = self.cfg
        detections, _ = self.detector(image_list, features, box_transform=self.box_perturbation)
        results = []
        for i, det in enumerate(detections):
            h, w = image_list.image_sizes[i]
            semantic = upsampled_argmax(sem_logits[i], (h, w), STRIDE)
            result: dict = {
                "semantic": semantic,
                "boxes": det["boxes"],
                "scores": det["scores"],
                "labels": det["labels"],
            }
            heuristic = cfg.inference == "heuristic" or (self.return_heuristic and cfg.use_masks)
            full_masks = None
            if cfg.use_masks and (self.return_masks or heuristic):
                full_masks = paste_masks(det["mask_probs"], det["boxes"], h, w, stride=1.0)
                if self.return_masks:
                    result["masks"] = full_masks[:, None]
            if heuristic:
                assert full_masks is not None
                heuristic_output = heuristic_merge(
                    semantic,
                    full_masks,
                    det["scores"],
                    det["labels"] + (self.num_stuff - 1),
                    self.num_stuff,
                    score_threshold=cfg.heuristic_score_thresh,
                    overlap_threshold=cfg.heuristic_overlap_thresh,
                    stuff_area_limit=cfg.heuristic_stuff_area,
                    mask_threshold=cfg.heuristic_mask_thresh,
                )
                if self.return_heuristic:
                    pan, segs = panoptic_from_index_map(*heuristic_output, self.categories)
                    result["heuristic_panoptic"], result["heuristic_segments_info"] = pan, segs
            if cfg.inference == "heuristic":
                index_map, entries = heuristic_output
            else:
                boxes, scores, classes, mask_probs = self._panoptic_inputs(det)
                psi, p = self.potentials(
                    sem_logits[i],
                    None if q is None else q[i],
                    boxes,
                    scores=scores,
                    classes=classes,
                    mask_probs=mask_probs,
                )
                index_map = self._argmax_index_map(p, semantic)
                entries = channel_entries(self.num_stuff, classes, scores)
                if self.return_potentials:
                    result["potential"], result["panoptic_logits"] = psi, p
                    pan, segs = panoptic_from_index_map(
                        self._argmax_index_map(psi, semantic), entries, self.categories
                    )
                    result["potential_panoptic"], result["potential_segments_info"] = pan, segs
            panoptic, segments = panoptic_from_index_map(index_map, entries, self.categories)
            result["panoptic"] = panoptic
            result["segments_info"] = segments
            results.append(result)
        return results

    def _argmax_index_map(self, p: Tensor, semantic: Tensor) -> Tensor:
        """Index map (0 = void, k + 1 = channel k) of the full-resolution argmax of ``p`` (P or Psi)."""
        index_map = self.argmax_full_resolution(p, tuple(semantic.shape)) + 1
        if self.cfg.void_unclaimed_things:
            # a stuff channel won where V says "thing": no detection claims the pixel -> void
            unclaimed = (index_map <= self.num_stuff) & (semantic >= self.num_stuff)
            index_map = index_map.masked_fill(unclaimed, 0)
        return index_map

    @staticmethod
    def argmax_full_resolution(p: Tensor, size: tuple[int, int]) -> Tensor:
        """Channel argmax of ``p`` [K, h, w] (stride 4, padded grid) at image size ``size`` (int64 [H, W]).

        ``p`` upsampled bilinearly by 4 and cropped (:func:`.upsampled_argmax.upsampled_argmax`, which
        evaluates the interpolation only next to label changes); only channels winning a valid stride-4 cell
        take part.
        """
        h, w = size
        hv, wv = math.ceil(h / STRIDE), math.ceil(w / STRIDE)
        coarse = first_argmax(p)  # over the padded grid too: reused below wherever it is a winner
        winners = torch.unique(coarse[:hv, :wv])
        if winners.numel() == p.shape[0]:
            return upsampled_argmax(p, size, STRIDE, coarse=coarse)
        # the first maximum among the winners is the first maximum overall wherever that is a winner;
        # where a padding cell is won by another channel, the winners' argmax is recomputed
        position = torch.full((p.shape[0],), -1, dtype=torch.long, device=p.device)
        position[winners] = torch.arange(winners.numel(), device=p.device)
        coarse = position[coarse]
        known = bool((coarse >= 0).all())
        return winners[upsampled_argmax(p[winners], size, STRIDE, coarse=coarse if known else None)]


def build_model(cfg: ModelConfig, categories: CategoryMap) -> PanopticNetwork:
    """Wire the network from a config (the one place where the config becomes parts)."""
    backbone = build_backbone(cfg)
    c = backbone.out_channels
    semantic = build_semantic_head(
        cfg.semantic_head,
        c,
        categories.num_classes,
        channels=cfg.semantic_channels,
        num_convs=cfg.semantic_convs,
        gn_groups=cfg.gn_groups,
    )
    detector = DetectionSubmodule(cfg, categories.num_things, c)
    extractor = affinity = None
    if cfg.use_affinity:
        extractor = build_semantic_head(  # "adopts the same architecture" (sec. 3.4.2)
            cfg.semantic_head,
            c,
            cfg.affinity_channels,
            channels=cfg.semantic_channels,
            num_convs=cfg.semantic_convs,
            gn_groups=cfg.gn_groups,
        )
        affinity = DenseInstanceAffinity(
            cfg.affinity_channels,
            activation=cfg.affinity_activation,
            normalize=cfg.affinity_normalize,
            log_gain=cfg.affinity_log_gain,
            learn_gain=cfg.affinity_learn_gain,
        )
    return PanopticNetwork(
        cfg, categories, backbone, semantic, detector, affinity_extractor=extractor, affinity=affinity
    )
