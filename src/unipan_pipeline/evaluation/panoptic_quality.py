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

Implementation, by module: :mod:`.pq_matching` (run-length coding of a pair of id maps, the intersection
matrix from one ``np.bincount``, the decisions), :mod:`.pq_accumulator` (:class:`PQAccumulator`, the
averages), :mod:`.pq_files` (:func:`pq_compute_files`: json, PNGs, the process pool), :mod:`.pq_report`
(tables, JSON); PNGs are read by :mod:`unipan_pipeline.fileio.png`. This module gathers their public names.

Matched IoUs are summed per category in image order and, within an image, in increasing (gt id, pred id)
order - the order of ``pq_compute`` on one core - so results are bitwise identical whatever the number of
workers and between the file and the in-memory entry points.

Deliberate differences from ``pq_compute`` (bad input only; valid data give the same numbers): every
problem raises an :class:`~unipan_pipeline.fileio.errors.EvaluationError` (a ``ValueError``) naming the
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

from unipan_pipeline.evaluation.pq_accumulator import PQAccumulator, target_to_panoptic, update_from_model
from unipan_pipeline.evaluation.pq_files import match_annotations, pq_compute_files
from unipan_pipeline.evaluation.pq_matching import (
    COMPAT_MODES,
    VOID,
    ImageStats,
    PQCategories,
    check_compat,
    evaluate_image,
    evaluate_runs,
    joint_runs,
)
from unipan_pipeline.evaluation.pq_report import format_pq_table, results_to_jsonable
from unipan_pipeline.fileio.png import decode_id_png as read_id_png
from unipan_pipeline.fileio.png import id_to_rgb, write_id_png

__all__ = [
    "COMPAT_MODES",
    "VOID",
    "ImageStats",
    "PQAccumulator",
    "PQCategories",
    "check_compat",
    "evaluate_image",
    "evaluate_runs",
    "format_pq_table",
    "id_to_rgb",
    "joint_runs",
    "match_annotations",
    "pq_compute_files",
    "read_id_png",
    "results_to_jsonable",
    "target_to_panoptic",
    "update_from_model",
    "write_id_png",
]
