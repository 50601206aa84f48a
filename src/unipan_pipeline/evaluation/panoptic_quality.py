"""Panoptic quality (PQ = SQ x RQ, Kirillov et al. 2019), the metric of the paper's Tables 1-6.

One implementation of the protocol of ``panopticapi.evaluation.pq_compute`` (COCO) - which
``cityscapesscripts.evaluation.evalPanopticSemanticLabeling`` copies line for line (same matching, same
void / crowd handling, same averaging; it only differs in printing a per-class table and writing a results
file) - with two entry points:

* :func:`pq_compute_files` - same arguments as ``pq_compute``: COCO panoptic json + PNG folders, a process
  pool over images;
* :class:`PQAccumulator` - in memory: ``update(gt_ids, gt_segments, pred_ids, pred_segments)`` per image
  straight from id maps (numpy arrays or torch tensors), no PNG round trip, then ``compute()``.

Protocol (exactly ``pq_compute``'s):

* a pair (gt segment g, predicted segment p) is a match iff g is not crowd, both have the same category and
  ``IoU = |g n p| / (area(p) + area(g) - |g n p| - |void n p|) > 0.5`` (strictly); ``area(p)`` is counted
  in the prediction PNG, ``area(g)`` is the ground-truth json ``area`` (counted pixels only when the
  segment has no ``area`` field, e.g. in memory); ``void`` is ground-truth id 0;
* every unmatched non-crowd gt segment is a false negative; crowd segments are never matched nor counted;
* an unmatched predicted segment is a false positive unless more than half of it lies on gt void plus the
  crowd region of its own category (as in ``pq_compute``, when an image has several crowd segments of one
  category, the last one listed in ``segments_info`` is that region);
* per category ``PQ = sum IoU(TP) / (TP + FP/2 + FN/2)``, ``SQ = sum IoU / TP`` (0 when TP = 0),
  ``RQ = TP / (TP + FP/2 + FN/2)``; categories with ``TP + FP + FN = 0`` are left out of the averages (and
  reported with zeros per class, as ``pq_compute`` does). A group without any counted category (e.g. no
  stuff in the data) gets ``n = 0`` and ``pq = sq = rq = nan`` (``pq_compute`` raises
  ``ZeroDivisionError``); :func:`results_to_jsonable` turns those into ``null``.

Implementation: the pair of id maps is run-length encoded (panoptic maps are piecewise constant: ~10^4 runs
instead of 2x10^6 pixels), run values are mapped to compact indices (0 = unknown id, 1 = void, 2.. = the
segments in ``segments_info`` order) and one ``np.bincount`` of ``gt_idx * n_pred + pred_idx`` weighted by
run length gives the whole intersection matrix; all decisions are then taken on that small matrix. PNGs are
decoded by :mod:`unipan_pipeline.panoptic_png` (pyspng when installed, else Pillow).

Matched IoUs are summed per category in image order and, within an image, in increasing (gt id, pred id)
order - the order of ``pq_compute`` on one core - so results are bitwise identical whatever the number of
workers and between the file and the in-memory entry points.

Deliberate differences from ``pq_compute`` (bad input only; valid data give the same numbers): every
problem raises an :class:`~unipan_pipeline.evaluation.errors.EvaluationError` (a ``ValueError``) naming the
image, file and segment - prediction PNG missing, segment in json but not in PNG or the reverse (also checked
for the ground truth, which ``pq_compute`` silently tolerates), unknown category id (also for the ground
truth, which ``pq_compute`` silently ignores), duplicated segment / image ids, id 0 listed as a segment, a
predicted image absent from the ground truth (``pq_compute`` ignores it) and a ground-truth image without
prediction.

``compat="panopticapi"`` (every entry point; ``--compat panopticapi`` on the command line) accepts, with a
logged warning, the three inputs on which ``pq_compute`` returns a number and gives exactly its numbers:

(a) a predicted image that is not in the ground truth - ignored, its PNG is not read;
(b) a ground-truth ``segments_info`` segment with no pixel in the PNG - never matched, so a false negative
    (a crowd one is still the crowd region of its category when listed last, as in ``pq_compute``);
(c) a ground-truth PNG id missing from ``segments_info`` - its pixels are neither a segment nor void: they
    are never matched, count in the predicted segments' areas and do not excuse a false positive.

Everything else stays an error in both modes (``pq_compute`` raises on those too, or they are not among the
three cases above).
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from unipan_pipeline.evaluation.errors import (
    CorruptPNGError,
    ImageMismatchError,
    MissingFileError,
    SegmentMismatchError,
    ShapeMismatchError,
    UnknownCategoryError,
)
from unipan_pipeline.panoptic_png import PanopticPNGError, decode_id_png

log = logging.getLogger(__name__)

VOID = 0
"""Segment id of void pixels in panoptic PNGs."""
COMPAT_MODES = ("panopticapi",)
"""Values of ``compat``: ``None`` (strict, the default) or ``"panopticapi"`` (``pq_compute``'s tolerance)."""
_RGB_ID_LIMIT = 1 << 24
_UNKNOWN, _VOID_IDX, _FIRST_SEG = 0, 1, 2

__all__ = [
    "COMPAT_MODES",
    "VOID",
    "PQAccumulator",
    "PQCategories",
    "evaluate_image",
    "format_pq_table",
    "id_to_rgb",
    "pq_compute_files",
    "read_id_png",
    "results_to_jsonable",
    "target_to_panoptic",
    "update_from_model",
    "write_id_png",
]


# ---------------------------------------------------------------------------------------------- PNG I/O
def read_id_png(path: str | os.PathLike) -> np.ndarray:
    """Decode a COCO panoptic PNG into a ``uint32 [H, W]`` id map, ``id = R + 256 G + 256^2 B``.

    :func:`unipan_pipeline.panoptic_png.decode_id_png` (pyspng, else Pillow; same result).
    """
    return decode_id_png(path)


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """Inverse of :func:`read_id_png`'s decoding: ``[H, W]`` ids (< 2^24) -> ``uint8 [H, W, 3]``."""
    ids = np.asarray(ids).astype(np.uint32)
    if ids.size and int(ids.max()) >= _RGB_ID_LIMIT:
        raise ValueError("segment ids must be < 2^24 to be stored in an RGB PNG")
    return np.stack([ids & 255, (ids >> 8) & 255, (ids >> 16) & 255], axis=-1).astype(np.uint8)


def write_id_png(path: str | os.PathLike, ids: np.ndarray) -> None:
    """Write an id map as a COCO panoptic RGB PNG (atomically: temp file + rename)."""
    from PIL import Image  # noqa: PLC0415 - not needed to read PNGs: keeps the PQ command line's start-up light

    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    Image.fromarray(id_to_rgb(ids)).save(tmp, format="PNG")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------- categories
@dataclass(frozen=True)
class PQCategories:
    """The evaluated categories, in the order of the ground-truth json ``categories`` list."""

    ids: tuple[int, ...]
    isthing: tuple[bool, ...]
    names: tuple[str, ...]

    @classmethod
    def coerce(cls, categories: Any) -> PQCategories:
        """Accept a :class:`PQCategories`, a ``CategoryMap``, a COCO ``categories`` list or an
        ``{id: info}`` dict (what ``pq_compute`` builds)."""
        if isinstance(categories, PQCategories):
            return categories
        if hasattr(categories, "to_coco"):
            categories = categories.to_coco()
        if isinstance(categories, Mapping):
            entries = [{**dict(info), "id": cid} for cid, info in categories.items()]
        else:
            entries = [dict(c) for c in categories]
        if not entries:
            raise ValueError("no categories to evaluate")
        ids = tuple(int(c["id"]) for c in entries)
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate category ids in {sorted(ids)}")
        # pq_compute: ``label_info['isthing'] == 1``
        isthing = tuple(c.get("isthing", 0) == 1 for c in entries)
        names = tuple(str(c.get("name", c["id"])) for c in entries)
        return cls(ids, isthing, names)

    @property
    def index(self) -> dict[int, int]:
        return {cid: k for k, cid in enumerate(self.ids)}


# ---------------------------------------------------------------------------------------------- id mapping
def _runs(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run-length encode the pair (gt id, pred id) over the flattened maps: values and run lengths.

    Panoptic maps are piecewise constant, so a 2-Mpixel pair of maps has only ~10^4-10^5 runs; everything
    after this (id lookup, intersection counting) works on runs instead of pixels.
    """
    g = gt.reshape(-1)
    p = pred.reshape(-1)
    n = g.size
    change = np.empty(n, dtype=bool)
    if n == 0:
        return g[:0], p[:0], np.zeros(0, dtype=np.int64)
    change[0] = True
    np.not_equal(g[1:], g[:-1], out=change[1:])
    change[1:] |= p[1:] != p[:-1]
    starts = np.flatnonzero(change)
    lengths = np.diff(starts, append=n)
    return g[starts], p[starts], lengths


def _compact(values: np.ndarray, seg_ids: np.ndarray) -> np.ndarray:
    """Compact index per value: 0 = unknown id, 1 = void (id 0), 2 + k = ``seg_ids[k]``."""
    keys = np.concatenate([[VOID], seg_ids]).astype(np.int64)
    order = np.argsort(keys, kind="stable")
    skeys = keys[order]
    sval = order.astype(np.int64) + _VOID_IDX
    v = values.astype(np.int64, copy=False)
    pos = np.searchsorted(skeys, v).clip(0, len(skeys) - 1)
    return np.where(skeys[pos] == v, sval[pos], _UNKNOWN)


def check_compat(compat: str | None) -> str | None:
    """Validate a ``compat`` argument: ``None`` (strict) or one of :data:`COMPAT_MODES`."""
    if compat is not None and compat not in COMPAT_MODES:
        raise ValueError(f"compat must be None (strict) or one of {list(COMPAT_MODES)}, got {compat!r}")
    return compat


def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"id maps must be 2-D [H, W], got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
        raise ValueError(f"id maps must hold integers, got dtype {arr.dtype}")
    return arr


# ---------------------------------------------------------------------------------------------- one image
@dataclass
class ImageStats:
    """Per-image counts; category indices refer to :class:`PQCategories` order."""

    image_id: Any
    matched_cat: np.ndarray
    """Category index of each true positive, in increasing (gt id, pred id) order."""
    matched_iou: np.ndarray
    fn_cat: np.ndarray
    fp_cat: np.ndarray


def _where(image_id: Any, file: str | None) -> str:
    return f"image {image_id!r}" + (f" ({file})" if file else "")


def _parse_segments(
    segments: Sequence[Mapping[str, Any]],
    cat_index: Mapping[int, int],
    what: str,
    where: str,
    need_crowd: bool,
    *,
    check_area: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """-> ids, category indices, iscrowd, json areas (-1 where absent; an area <= 0 raises, or is kept as 0
    without ``check_area``)."""
    n = len(segments)
    ids = np.empty(n, dtype=np.int64)
    cats = np.empty(n, dtype=np.int64)
    crowd = np.zeros(n, dtype=bool)
    areas = np.full(n, -1, dtype=np.int64)
    seen: set[int] = set()
    for k, seg in enumerate(segments):
        try:
            sid = int(seg["id"])
            cid = int(seg["category_id"])
        except (KeyError, TypeError, ValueError) as exc:
            raise SegmentMismatchError(
                f"{where}: {what} segment #{k} {dict(seg)!r} lacks a valid 'id' or 'category_id'"
            ) from exc
        if sid == VOID:
            raise SegmentMismatchError(f"{where}: {what} segment with id 0 - id 0 is reserved for void")
        if sid in seen:
            raise SegmentMismatchError(f"{where}: {what} segment id {sid} is listed twice in segments_info")
        seen.add(sid)
        if cid not in cat_index:
            raise UnknownCategoryError(
                f"{where}: {what} segment {sid} has unknown category_id {cid} "
                f"(evaluated categories: {sorted(cat_index)})"
            )
        ids[k] = sid
        cats[k] = cat_index[cid]
        if need_crowd:
            crowd[k] = seg.get("iscrowd", 0) == 1
            if "area" in seg and seg["area"] is not None:
                areas[k] = int(seg["area"])
                if areas[k] <= 0:
                    if check_area:
                        raise SegmentMismatchError(
                            f"{where}: {what} segment {sid} has json area {areas[k]} <= 0"
                        )
                    areas[k] = 0
    return ids, cats, crowd, areas


def _unknown_ids(ids: np.ndarray, seg_ids: np.ndarray) -> list[int]:
    known = np.concatenate([[VOID], seg_ids])
    present = np.unique(ids)
    return [int(v) for v in present[~np.isin(present, known)]][:20]


def evaluate_image(
    gt_ids: Any,
    gt_segments: Sequence[Mapping[str, Any]],
    pred_ids: Any,
    pred_segments: Sequence[Mapping[str, Any]],
    categories: PQCategories,
    *,
    image_id: Any = None,
    gt_file: str | None = None,
    pred_file: str | None = None,
    cat_index: Mapping[int, int] | None = None,
    compat: str | None = None,
) -> ImageStats:
    """TP / FP / FN and matched IoUs of one image (the body of ``pq_compute_single_core``, vectorised).

    Args:
        gt_ids, pred_ids: ``[H, W]`` integer id maps (0 = void).
        gt_segments, pred_segments: ``segments_info`` lists (``id``, ``category_id``; gt also ``iscrowd`` and
            optionally ``area``; a prediction's ``area`` is ignored and counted, as ``pq_compute`` does).
        categories: evaluated categories.
        compat: ``None`` (strict) or ``"panopticapi"`` (module docstring, cases b and c).

    Raises:
        SegmentMismatchError, UnknownCategoryError, ShapeMismatchError: naming the image and segment.
    """
    gt = _as_numpy(gt_ids)
    pred = _as_numpy(pred_ids)
    _check_shapes(gt.shape, pred.shape, image_id, gt_file, pred_file)
    g_run, p_run, lengths = _runs(gt, pred)
    return _evaluate_runs(
        g_run,
        p_run,
        lengths,
        gt_segments,
        pred_segments,
        categories=categories,
        image_id=image_id,
        gt_file=gt_file,
        pred_file=pred_file,
        cat_index=cat_index,
        compat=check_compat(compat),
    )


def _check_shapes(
    gshape: tuple[int, ...],
    pshape: tuple[int, ...],
    image_id: Any,
    gt_file: str | None,
    pred_file: str | None,
) -> None:
    if tuple(gshape) != tuple(pshape):
        raise ShapeMismatchError(
            f"image {image_id!r}: ground truth is {gshape[0]}x{gshape[1]} but prediction is "
            f"{pshape[0]}x{pshape[1]}" + (f" ({gt_file} vs {pred_file})" if gt_file else "")
        )


def _evaluate_runs(
    g_run: np.ndarray,
    p_run: np.ndarray,
    lengths: np.ndarray,
    gt_segments: Sequence[Mapping[str, Any]],
    pred_segments: Sequence[Mapping[str, Any]],
    *,
    categories: PQCategories,
    image_id: Any,
    gt_file: str | None,
    pred_file: str | None,
    cat_index: Mapping[int, int] | None,
    compat: str | None = None,
) -> ImageStats:
    cat_index = categories.index if cat_index is None else cat_index
    strict = compat is None
    gwhere, pwhere = _where(image_id, gt_file), _where(image_id, pred_file)
    g_sid, g_cat, g_crowd, g_area = _parse_segments(
        gt_segments, cat_index, "ground-truth", gwhere, True, check_area=strict
    )
    p_sid, p_cat, _, _ = _parse_segments(pred_segments, cat_index, "predicted", pwhere, False)
    n_g, n_p = len(g_sid) + _FIRST_SEG, len(p_sid) + _FIRST_SEG

    g_idx = _compact(g_run, g_sid)
    p_idx = _compact(p_run, p_sid)
    conf = np.bincount(g_idx * n_p + p_idx, weights=lengths, minlength=n_g * n_p)
    conf = conf.astype(np.int64).reshape(n_g, n_p)

    # ---- sanity checks (pq_compute's, plus - unless compat - the same ones on the ground truth)
    if conf[_UNKNOWN].any():
        message = (
            f"{gwhere}: ground-truth segment ids {_unknown_ids(g_run, g_sid)} are in the PNG/id map "
            "but not in segments_info"
        )
        if strict:
            raise SegmentMismatchError(message)
        log.warning("%s (compat=%s: neither a segment nor void, as in pq_compute)", message, compat)
    if conf[:, _UNKNOWN].any():
        raise SegmentMismatchError(
            f"{pwhere}: predicted segment ids {_unknown_ids(p_run, p_sid)} are in the PNG/id map but not in "
            "segments_info"
        )
    p_area = conf[:, _FIRST_SEG:].sum(axis=0)
    g_pix = conf[_FIRST_SEG:].sum(axis=1)
    if (p_area == 0).any():
        raise SegmentMismatchError(
            f"{pwhere}: predicted segment ids {p_sid[p_area == 0].tolist()} are in segments_info but not in "
            "the PNG/id map"
        )
    if (g_pix == 0).any():
        message = (
            f"{gwhere}: ground-truth segment ids {g_sid[g_pix == 0].tolist()} are in segments_info but not "
            "in the PNG/id map"
        )
        if strict:
            raise SegmentMismatchError(message)
        log.warning("%s (compat=%s: unmatched, as in pq_compute)", message, compat)
    bad_area = (g_area == 0) & (g_pix > 0)  # only left by compat; pq_compute never reads the area of a
    if bad_area.any():  # segment without pixels, so such a json area is tolerated there
        sid = int(g_sid[np.flatnonzero(bad_area)[0]])
        raise SegmentMismatchError(f"{gwhere}: ground-truth segment {sid} has json area <= 0")
    g_area = np.where(g_area >= 0, g_area, g_pix)

    # ---- matching
    inter = conf[_FIRST_SEG:, _FIRST_SEG:]
    void_p = conf[_VOID_IDX, _FIRST_SEG:]
    cand = (inter > 0) & ~g_crowd[:, None] & (g_cat[:, None] == p_cat[None, :])
    gi, pj = np.nonzero(cand)
    inter_c = inter[gi, pj]
    union = p_area[pj] + g_area[gi] - inter_c - void_p[pj]
    iou = inter_c / union
    ok = iou > 0.5
    gi, pj, iou = gi[ok], pj[ok], iou[ok]
    order = np.lexsort((p_sid[pj], g_sid[gi]))
    gi, pj, iou = gi[order], pj[order], iou[order]
    g_matched = np.zeros(len(g_sid), dtype=bool)
    g_matched[gi] = True
    p_matched = np.zeros(len(p_sid), dtype=bool)
    p_matched[pj] = True

    fn_cat = g_cat[~g_matched & ~g_crowd]

    # crowd region per category: the last crowd segment of that category in segments_info order
    crowd_of_cat: dict[int, int] = {}
    for k in np.flatnonzero(g_crowd & ~g_matched).tolist():
        crowd_of_cat[int(g_cat[k])] = k
    unmatched = np.flatnonzero(~p_matched)
    ignored = conf[_VOID_IDX, _FIRST_SEG + unmatched].astype(np.int64)
    if crowd_of_cat:
        crowd_row = np.array([crowd_of_cat.get(int(c), -1) for c in p_cat[unmatched]], dtype=np.int64)
        has = crowd_row >= 0
        ignored[has] += inter[crowd_row[has], unmatched[has]]
    is_fp = ~(ignored / p_area[unmatched] > 0.5)
    fp_cat = p_cat[unmatched[is_fp]]
    return ImageStats(image_id, g_cat[gi], iou.astype(np.float64), fn_cat, fp_cat)


# ---------------------------------------------------------------------------------------------- accumulation
def _image_key(image_id: Any) -> Any:
    return image_id


class PQAccumulator:
    """In-memory PQ: feed images with :meth:`update`, read the ``pq_compute``-shaped result with
    :meth:`compute`.

    Example::

        acc = PQAccumulator(category_map)          # or a COCO categories list
        for out, tgt in zip(outputs, gt):
            acc.update(tgt_ids, tgt_segments, out["panoptic"], out["segments_info"], image_id=...)
        results = acc.compute()                    # {"All": {...}, "Things": ..., "Stuff": ..., "per_class"}
    """

    def __init__(self, categories: Any, *, compat: str | None = None) -> None:
        """``compat``: ``None`` (strict) or ``"panopticapi"`` (module docstring, cases b and c)."""
        self.categories = PQCategories.coerce(categories)
        self.compat = check_compat(compat)
        self._cat_index = self.categories.index
        k = len(self.categories.ids)
        self.tp = np.zeros(k, dtype=np.int64)
        self.fp = np.zeros(k, dtype=np.int64)
        self.fn = np.zeros(k, dtype=np.int64)
        self.iou = [0.0] * k
        self.num_images = 0
        self._seen: set[Any] = set()

    def update(
        self,
        gt_ids: Any,
        gt_segments: Sequence[Mapping[str, Any]],
        pred_ids: Any,
        pred_segments: Sequence[Mapping[str, Any]],
        image_id: Any = None,
    ) -> ImageStats:
        """Add one image. Ids: ``[H, W]`` integer arrays/tensors (0 = void); segments: ``segments_info``
        lists with dataset category ids. Returns that image's :class:`ImageStats`."""
        stats = evaluate_image(
            gt_ids,
            gt_segments,
            pred_ids,
            pred_segments,
            self.categories,
            image_id=image_id if image_id is not None else self.num_images,
            cat_index=self._cat_index,
            compat=self.compat,
        )
        self.add(stats)
        return stats

    def add(self, stats: ImageStats) -> None:
        """Add precomputed image statistics (used by the file path's workers)."""
        if stats.image_id is not None:
            key = _image_key(stats.image_id)
            if key in self._seen:
                raise ImageMismatchError(f"image {stats.image_id!r} was evaluated twice")
            self._seen.add(key)
        k = len(self.tp)
        self.tp += np.bincount(stats.matched_cat, minlength=k)
        self.fn += np.bincount(stats.fn_cat, minlength=k)
        self.fp += np.bincount(stats.fp_cat, minlength=k)
        iou = self.iou
        for c, v in zip(stats.matched_cat.tolist(), stats.matched_iou.tolist(), strict=True):
            iou[c] += v
        self.num_images += 1

    def class_stats(self) -> dict[int, dict[str, Any]]:
        """Per category id: ``tp``, ``fp``, ``fn`` and ``iou`` (sum of matched IoUs), plus the PQ terms."""
        out: dict[int, dict[str, Any]] = {}
        for k, cid in enumerate(self.categories.ids):
            tp, fp, fn, iou = int(self.tp[k]), int(self.fp[k]), int(self.fn[k]), self.iou[k]
            denom = tp + 0.5 * fp + 0.5 * fn
            out[cid] = {
                "name": self.categories.names[k],
                "isthing": self.categories.isthing[k],
                "tp": tp,
                "fp": fp,
                "fn": fn,
                "iou": iou,
                "pq": iou / denom if denom else 0.0,
                "sq": iou / tp if tp else 0.0,
                "rq": tp / denom if denom else 0.0,
            }
        return out

    def compute(self) -> dict[str, Any]:
        """``pq_compute``'s result: ``{"All"|"Things"|"Stuff": {pq, sq, rq, n}, "per_class": {id: {pq, sq,
        rq}}}`` (``per_class`` in ground-truth category order; empty groups: ``n = 0``, values ``nan``)."""
        results: dict[str, Any] = {}
        for name, isthing in (("All", None), ("Things", True), ("Stuff", False)):
            group, per_class = self._average(isthing)
            results[name] = group
            if name == "All":
                results["per_class"] = per_class
        return results

    def _average(self, isthing: bool | None) -> tuple[dict[str, Any], dict[int, dict[str, float]]]:
        pq = sq = rq = 0.0
        n = 0
        per_class: dict[int, dict[str, float]] = {}
        for k, cid in enumerate(self.categories.ids):
            if isthing is not None and self.categories.isthing[k] != isthing:
                continue
            iou, tp, fp, fn = self.iou[k], int(self.tp[k]), int(self.fp[k]), int(self.fn[k])
            if tp + fp + fn == 0:
                per_class[cid] = {"pq": 0.0, "sq": 0.0, "rq": 0.0}
                continue
            n += 1
            pq_c = iou / (tp + 0.5 * fp + 0.5 * fn)
            sq_c = iou / tp if tp != 0 else 0.0
            rq_c = tp / (tp + 0.5 * fp + 0.5 * fn)
            per_class[cid] = {"pq": pq_c, "sq": sq_c, "rq": rq_c}
            pq += pq_c
            sq += sq_c
            rq += rq_c
        if n == 0:
            return {"pq": math.nan, "sq": math.nan, "rq": math.nan, "n": 0}, per_class
        return {"pq": pq / n, "sq": sq / n, "rq": rq / n, "n": n}, per_class


def target_to_panoptic(target: Mapping[str, Any], categories: Any) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Ground truth of a training-batch target (``panoptic`` index map, ``segment_classes`` train ids,
    ``segment_iscrowd``) as an id map (id k = element k-1) and ``segments_info`` with dataset category ids.

    Segments with no pixel left in the map (e.g. removed by resizing) are dropped; areas are counted.
    """
    ids = _as_numpy(target["panoptic"]).astype(np.int64, copy=False)
    classes = _as_numpy_1d(target["segment_classes"])
    crowd = _as_numpy_1d(target.get("segment_iscrowd", np.zeros(len(classes), dtype=bool)))
    counts = np.bincount(ids.reshape(-1), minlength=len(classes) + 1)
    if len(counts) > len(classes) + 1:
        raise SegmentMismatchError(
            f"image {target.get('image_id')!r}: panoptic index map refers to segment {len(counts) - 1} "
            f"but only {len(classes)} segment_classes are given"
        )
    segments = [
        {
            "id": k + 1,
            "category_id": int(categories.dataset_id(int(classes[k]))),
            "iscrowd": int(bool(crowd[k])),
            "area": int(counts[k + 1]),
        }
        for k in range(len(classes))
        if counts[k + 1] > 0
    ]
    return ids, segments


def _as_numpy_1d(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x).reshape(-1)


def update_from_model(
    acc: PQAccumulator,
    outputs: Sequence[Mapping[str, Any]],
    targets: Sequence[Mapping[str, Any]],
    categories: Any,
) -> None:
    """Feed a batch of model eval outputs (``panoptic``, ``segments_info``) and their targets to ``acc``.

    ``categories``: the ``CategoryMap`` (train id -> dataset id for the targets).
    """
    if len(outputs) != len(targets):
        raise ImageMismatchError(f"{len(outputs)} outputs for {len(targets)} targets")
    for out, tgt in zip(outputs, targets, strict=True):
        gt_ids, gt_segments = target_to_panoptic(tgt, categories)
        acc.update(gt_ids, gt_segments, out["panoptic"], out["segments_info"], image_id=tgt.get("image_id"))


# ---------------------------------------------------------------------------------------------- file path
_WORKER_STATE: dict[str, Any] = {}


def _init_worker(
    gt_folder: str, pred_folder: str, categories: PQCategories, compat: str | None = None
) -> None:
    _WORKER_STATE.update(
        gt_folder=gt_folder,
        pred_folder=pred_folder,
        categories=categories,
        cat_index=categories.index,
        compat=compat,
    )


def _evaluate_pair(pair: tuple[dict[str, Any], dict[str, Any]]) -> ImageStats:
    gt_ann, pred_ann = pair
    st = _WORKER_STATE
    image_id = gt_ann["image_id"]
    gt_file = os.path.join(st["gt_folder"], gt_ann["file_name"])
    pred_file = os.path.join(st["pred_folder"], pred_ann["file_name"])
    if not os.path.isfile(pred_file):
        raise MissingFileError(f"image {image_id!r}: prediction PNG {pred_file} does not exist")
    if not os.path.isfile(gt_file):
        raise MissingFileError(f"image {image_id!r}: ground-truth PNG {gt_file} does not exist")
    try:
        gt = decode_id_png(gt_file)
        pred = decode_id_png(pred_file)
    except PanopticPNGError as exc:
        raise CorruptPNGError(f"image {image_id!r}: {exc}") from None
    _check_shapes(gt.shape, pred.shape, image_id, gt_file, pred_file)
    g_run, p_run, lengths = _runs(gt, pred)  # one joint pass: cheaper than two RLEs and a merge
    return _evaluate_runs(
        g_run,
        p_run,
        lengths,
        gt_ann["segments_info"],
        pred_ann["segments_info"],
        categories=st["categories"],
        image_id=image_id,
        gt_file=gt_file,
        pred_file=pred_file,
        cat_index=st["cat_index"],
        compat=st["compat"],
    )


def _load_json(path: str | os.PathLike, what: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise MissingFileError(f"{what} json {path} does not exist")
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{what} json {path} is not valid JSON: {exc}") from exc


def match_annotations(
    gt_json: Mapping[str, Any],
    pred_json: Mapping[str, Any],
    gt_name: str = "ground truth",
    pred_name: str = "prediction",
    compat: str | None = None,
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Pair gt and predicted annotations by ``image_id`` (gt order); every image must be in both, once
    (``compat="panopticapi"``: predicted images absent from the ground truth are ignored, as ``pq_compute``
    does)."""
    gt_anns = list(gt_json.get("annotations", []))
    pred_anns = list(pred_json.get("annotations", []))
    preds: dict[Any, dict[str, Any]] = {}
    for ann in pred_anns:
        if ann["image_id"] in preds:
            raise ImageMismatchError(f"{pred_name}: image {ann['image_id']!r} has two annotations")
        preds[ann["image_id"]] = ann
    pairs = []
    seen: set[Any] = set()
    for ann in gt_anns:
        iid = ann["image_id"]
        if iid in seen:
            raise ImageMismatchError(f"{gt_name}: image {iid!r} has two annotations")
        seen.add(iid)
        if iid not in preds:
            raise ImageMismatchError(f"no prediction for the image with id {iid!r} ({pred_name})")
        pairs.append((ann, preds[iid]))
    extra = [iid for iid in preds if iid not in seen]
    if extra:
        message = (
            f"{pred_name}: {len(extra)} predicted images {extra[:10]} are not in the ground truth ({gt_name})"
        )
        if check_compat(compat) is None:
            raise ImageMismatchError(message)
        log.warning("%s (compat=%s: ignored, as in pq_compute)", message, compat)
    return pairs


def pq_compute_files(
    gt_json_file: str | os.PathLike,
    pred_json_file: str | os.PathLike,
    gt_folder: str | os.PathLike | None = None,
    pred_folder: str | os.PathLike | None = None,
    *,
    workers: int | None = None,
    chunksize: int | None = None,
    verbose: bool = False,
    return_accumulator: bool = False,
    compat: str | None = None,
    start_method: str = "forkserver",
) -> Any:
    """Drop-in for ``panopticapi.evaluation.pq_compute`` (same arguments, same result), faster.

    Args:
        gt_json_file, pred_json_file: COCO panoptic json files.
        gt_folder, pred_folder: PNG folders; default: the json path without ``.json`` (as ``pq_compute``).
        workers: processes (default ``os.cpu_count()``; ``<= 1`` evaluates in this process). The result does
            not depend on it (bitwise).
        verbose: print ``pq_compute``'s table.
        return_accumulator: return ``(results, accumulator)``; the accumulator has per-class TP/FP/FN/IoU.
        compat: ``None`` (strict: every inconsistency raises) or ``"panopticapi"``: ``pq_compute``'s numbers
            on the inputs it tolerates (module docstring, cases a-c).
        start_method: how worker processes start. ``"forkserver"`` (default) is safe in a caller that holds
            threads (torch, MLflow); ``"fork"`` starts faster and is for single-threaded callers such as the
            command line.

    Raises:
        MissingFileError, ImageMismatchError, SegmentMismatchError, UnknownCategoryError (all ``ValueError``).
    """
    compat = check_compat(compat)
    gt_json_file, pred_json_file = str(gt_json_file), str(pred_json_file)
    gt_folder = str(gt_folder) if gt_folder is not None else gt_json_file.replace(".json", "")
    pred_folder = str(pred_folder) if pred_folder is not None else pred_json_file.replace(".json", "")
    gt_json = _load_json(gt_json_file, "ground-truth")
    pred_json = _load_json(pred_json_file, "prediction")
    for folder, what in ((gt_folder, "ground-truth"), (pred_folder, "prediction")):
        if not os.path.isdir(folder):
            raise MissingFileError(f"{what} segmentation folder {folder} does not exist")
    categories = PQCategories.coerce(gt_json["categories"])
    pairs = match_annotations(gt_json, pred_json, gt_json_file, pred_json_file, compat=compat)
    acc = PQAccumulator(categories, compat=compat)
    n_workers = (os.cpu_count() or 1) if workers is None else int(workers)
    n_workers = max(1, min(n_workers, len(pairs)))
    if n_workers <= 1:
        _init_worker(gt_folder, pred_folder, categories, compat)
        for pair in pairs:
            acc.add(_evaluate_pair(pair))
    else:
        chunk = chunksize or max(1, min(8, len(pairs) // (4 * n_workers)))
        # forkserver by default, not fork: the caller may hold threads (torch, MLflow) whose locks a forked
        # child would inherit mid-use; workers fork from a clean single-threaded server instead.
        context = multiprocessing.get_context(start_method)
        with context.Pool(
            n_workers, initializer=_init_worker, initargs=(gt_folder, pred_folder, categories, compat)
        ) as pool:
            for stats in pool.imap(_evaluate_pair, pairs, chunksize=chunk):
                acc.add(stats)
    results = acc.compute()
    if verbose:
        print(format_pq_table(results))
    return (results, acc) if return_accumulator else results


# ---------------------------------------------------------------------------------------------- output
def format_pq_table(results: Mapping[str, Any], categories: PQCategories | None = None) -> str:
    """``pq_compute``'s summary table (and, given categories, cityscapesscripts' per-class table above)."""
    lines: list[str] = []
    if categories is not None:
        lines.append("{:14s}| {:>5s}  {:>5s}  {:>5s}".format("Category", "PQ", "SQ", "RQ"))
        names = dict(zip(categories.ids, categories.names, strict=True))
        for cid in sorted(results["per_class"]):
            r = results["per_class"][cid]
            lines.append(
                f"{names.get(cid, str(cid))[:14]:14s}| {100 * r['pq']:5.1f}  {100 * r['sq']:5.1f}  "
                f"{100 * r['rq']:5.1f}"
            )
        lines.append("-" * 41)
    lines.append("{:10s}| {:>5s}  {:>5s}  {:>5s} {:>5s}".format("", "PQ", "SQ", "RQ", "N"))
    lines.append("-" * (10 + 7 * 4))
    for name in ("All", "Things", "Stuff"):
        r = results[name]
        lines.append(
            f"{name:10s}| {100 * r['pq']:5.1f}  {100 * r['sq']:5.1f}  {100 * r['rq']:5.1f} {r['n']:5d}"
        )
    return "\n".join(lines)


def _clean(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k) if not isinstance(k, str) else k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def results_to_jsonable(results: Mapping[str, Any]) -> dict[str, Any]:
    """Plain-JSON copy of a result dict: numpy scalars -> Python, ``nan`` -> ``None``, keys -> str."""
    return _clean(results)


def iter_category_rows(
    results: Mapping[str, Any], stats: Mapping[int, Mapping[str, Any]]
) -> Iterable[dict[str, Any]]:
    """Rows ``class, isthing, PQ, SQ, RQ, TP, FP, FN, IoU`` (IoU = summed matched IoU) per category."""
    for cid, s in stats.items():
        r = results["per_class"][cid]
        yield {
            "category_id": cid,
            "class": s["name"],
            "isthing": bool(s["isthing"]),
            "PQ": r["pq"],
            "SQ": r["sq"],
            "RQ": r["rq"],
            "TP": s["tp"],
            "FP": s["fp"],
            "FN": s["fn"],
            "IoU": s["iou"],
        }
