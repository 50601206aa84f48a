"""Semantic segmentation mIoU over train ids (the semantic head's ``V``, sec. 3.2 of the paper).

Convention (Cityscapes' ``evalPixelLevelSemanticLabeling`` / the usual mmseg one):

* a confusion matrix over the ``num_classes`` train ids is accumulated over all images; pixels whose
  ground truth is ``ignore_index`` (255, void) are skipped;
* a prediction outside ``0 .. num_classes - 1`` (e.g. 255) at a valid pixel counts as a miss of the ground-
  truth class (a false negative), not as a false positive of any class;
* ``IoU_c = TP_c / (TP_c + FP_c + FN_c)``; a class that appears neither in the ground truth nor in the
  prediction of any evaluated pixel has no IoU (``nan`` / ``None``) and is **excluded** from the mean;
* ``mIoU`` is the mean over the remaining classes (``nan`` when there are none); pixel accuracy is
  ``sum TP / number of valid pixels``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from unipan_pipeline.evaluation.errors import ShapeMismatchError

IGNORE_INDEX = 255

__all__ = ["SemanticConfusion", "semantic_miou"]


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


class SemanticConfusion:
    """Accumulates a ``[num_classes, num_classes]`` confusion matrix (rows: gt, columns: prediction).

    Args:
        num_classes: number of train ids.
        ignore_index: ground-truth label of pixels to skip.
        class_names: optional names for :meth:`compute`'s ``per_class``.
    """

    def __init__(
        self, num_classes: int, ignore_index: int = IGNORE_INDEX, class_names: Sequence[str] | None = None
    ) -> None:
        if num_classes <= 0:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.class_names = list(class_names) if class_names is not None else None
        # one extra column: predictions outside the class range at valid pixels
        self.matrix = np.zeros((self.num_classes, self.num_classes + 1), dtype=np.int64)

    def update(self, pred: Any, target: Any, image_id: Any = None) -> None:
        """Add one image (or a batch with identical shapes): integer train-id maps."""
        p = _to_numpy(pred).astype(np.int64, copy=False).reshape(-1)
        t = _to_numpy(target).astype(np.int64, copy=False)
        if _to_numpy(pred).shape != t.shape:
            raise ShapeMismatchError(
                f"image {image_id!r}: semantic prediction shape {_to_numpy(pred).shape} != "
                f"target shape {t.shape}"
            )
        t = t.reshape(-1)
        valid = t != self.ignore_index
        bad = valid & ((t < 0) | (t >= self.num_classes))
        if bad.any():
            raise ValueError(
                f"image {image_id!r}: target labels {np.unique(t[bad])[:10].tolist()} are outside "
                f"0..{self.num_classes - 1} and not the ignore index {self.ignore_index}"
            )
        t, p = t[valid], p[valid]
        p = np.where((p >= 0) & (p < self.num_classes), p, self.num_classes)
        k = self.num_classes + 1
        self.matrix += np.bincount(t * k + p, minlength=self.num_classes * k).reshape(self.num_classes, k)

    def compute(self) -> dict[str, Any]:
        """``{"miou", "pixel_acc", "iou": [per class or nan], "per_class": {name: iou or None}, "n"}``."""
        cm = self.matrix
        tp = np.diag(cm[:, : self.num_classes]).astype(np.float64)
        gt = cm.sum(axis=1).astype(np.float64)  # TP + FN (incl. out-of-range predictions)
        pred = cm[:, : self.num_classes].sum(axis=0).astype(np.float64)  # TP + FP
        union = gt + pred - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)
        present = union > 0
        miou = float(iou[present].mean()) if present.any() else math.nan
        total = cm.sum()
        names = self.class_names or [str(c) for c in range(self.num_classes)]
        return {
            "miou": miou,
            "pixel_acc": float(tp.sum() / total) if total else math.nan,
            "iou": iou.tolist(),
            "per_class": {n: (None if math.isnan(v) else float(v)) for n, v in zip(names, iou, strict=True)},
            "n": int(present.sum()),
        }


def semantic_miou(
    preds: Sequence[Any], targets: Sequence[Any], num_classes: int, ignore_index: int = IGNORE_INDEX
) -> dict[str, Any]:
    """One-shot :class:`SemanticConfusion` over paired prediction / target maps."""
    conf = SemanticConfusion(num_classes, ignore_index)
    for k, (p, t) in enumerate(zip(preds, targets, strict=True)):
        conf.update(p, t, image_id=k)
    return conf.compute()
