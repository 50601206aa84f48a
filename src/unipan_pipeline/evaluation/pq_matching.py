"""PQ matching of one image: run-length coding of the pair of id maps, the intersection matrix, and the
TP / FP / FN decisions of ``pq_compute`` (the protocol: :mod:`.panoptic_quality`).

The pair of id maps is run-length encoded (:func:`joint_runs`: panoptic maps are piecewise constant, ~10^4
runs instead of 2x10^6 pixels), run values are mapped to compact indices (0 = unknown id, 1 = void, 2.. =
the segments in ``segments_info`` order) and one ``np.bincount`` of ``gt_idx * n_pred + pred_idx`` weighted
by run length gives the whole intersection matrix; all decisions are then taken on that small matrix.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from unipan_pipeline.fileio.errors import SegmentMismatchError, ShapeMismatchError, UnknownCategoryError

log = logging.getLogger(__name__)

VOID = 0
"""Segment id of void pixels in panoptic PNGs."""
COMPAT_MODES = ("panopticapi",)
"""Values of ``compat``: ``None`` (strict, the default) or ``"panopticapi"`` (``pq_compute``'s tolerance)."""
_UNKNOWN, _VOID_IDX, _FIRST_SEG = 0, 1, 2

__all__ = [
    "COMPAT_MODES",
    "VOID",
    "ImageStats",
    "PQCategories",
    "as_numpy",
    "check_compat",
    "check_shapes",
    "evaluate_image",
    "evaluate_runs",
    "joint_runs",
]


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
_RUN_BLOCK = 1 << 18
"""Pixels per block of :func:`joint_runs` (1 MB of each uint32 map)."""


def joint_runs(
    gt: np.ndarray, pred: np.ndarray, value_mask: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run-length encode the pair (gt id, pred id) over the flattened maps: values and run lengths.

    Panoptic maps are piecewise constant, so a 2-Mpixel pair of maps has only ~10^4-10^5 runs; everything
    after this (id lookup, intersection counting) works on runs instead of pixels. ``value_mask``: the run
    values are ``value & value_mask`` - for maps of PNG pixel words (:func:`~unipan_pipeline.fileio.png.
    decode_pixel_words`), whose ids are masked here on ~10^4 runs instead of on every pixel. (A run split by
    a changing alpha byte only splits a count in two: the intersection matrix is the same.)
    """
    g = gt.reshape(-1)
    p = pred.reshape(-1)
    n = g.size
    change = np.empty(n, dtype=bool)
    if n == 0:
        return g[:0], p[:0], np.zeros(0, dtype=np.int64)
    change[0] = True
    # block by block, so that both maps' comparisons of a block meet in cache (the maps are 8 MB each at
    # 1024x2048): ~25 % faster than two whole-map passes and a temporary
    other = np.empty(min(n, _RUN_BLOCK), dtype=bool)
    for start in range(1, n, _RUN_BLOCK):
        stop = min(n, start + _RUN_BLOCK)
        block = change[start:stop]
        np.not_equal(g[start:stop], g[start - 1 : stop - 1], out=block)
        np.not_equal(p[start:stop], p[start - 1 : stop - 1], out=other[: stop - start])
        block |= other[: stop - start]
    starts = np.flatnonzero(change)
    lengths = np.diff(starts, append=n)
    g_run, p_run = g[starts], p[starts]
    if value_mask is not None:
        g_run &= value_mask
        p_run &= value_mask
    return g_run, p_run, lengths


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


def as_numpy(x: Any) -> np.ndarray:
    """A 2-D integer id map (numpy array or torch tensor) as a numpy array."""
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
    gt = as_numpy(gt_ids)
    pred = as_numpy(pred_ids)
    check_shapes(gt.shape, pred.shape, image_id, gt_file, pred_file)
    g_run, p_run, lengths = joint_runs(gt, pred)
    return evaluate_runs(
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


def check_shapes(
    gshape: tuple[int, ...],
    pshape: tuple[int, ...],
    image_id: Any,
    gt_file: str | None,
    pred_file: str | None,
) -> None:
    """Raise :class:`ShapeMismatchError` unless the two maps of an image have the same size."""
    if tuple(gshape) != tuple(pshape):
        raise ShapeMismatchError(
            f"image {image_id!r}: ground truth is {gshape[0]}x{gshape[1]} but prediction is "
            f"{pshape[0]}x{pshape[1]}" + (f" ({gt_file} vs {pred_file})" if gt_file else "")
        )


def evaluate_runs(
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
    """:func:`evaluate_image` on the :func:`joint_runs` of the image's pair of id maps."""
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
