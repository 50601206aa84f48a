"""PQ from files: :func:`pq_compute_files`, a drop-in for ``panopticapi.evaluation.pq_compute`` (COCO
panoptic json + PNG folders), over a process pool.

Per image pair a worker reads the two PNGs, decodes them into pixel words (:mod:`unipan_pipeline.fileio.png`,
the ids before their alpha byte is masked: the mask is applied to the ~10^4 runs instead of the ~2x10^6
pixels), takes one joint run-length pass over both maps and matches on the runs
(:mod:`.pq_matching`); only the small per-image statistics travel back to the parent.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from unipan_pipeline.evaluation.pq_accumulator import PQAccumulator
from unipan_pipeline.evaluation.pq_matching import (
    ImageStats,
    PQCategories,
    check_compat,
    check_shapes,
    evaluate_runs,
    joint_runs,
)
from unipan_pipeline.evaluation.pq_report import format_pq_table
from unipan_pipeline.fileio.errors import (
    CorruptPNGError,
    ImageMismatchError,
    MissingFileError,
    PanopticPNGError,
)
from unipan_pipeline.fileio.png import ID_MASK, decode_pixel_words, default_backend

log = logging.getLogger(__name__)

__all__ = ["match_annotations", "pq_compute_files"]

_WORKER_STATE: dict[str, Any] = {}
_HEAP_WARM_UP_BYTES = 24 << 20


def _keep_decode_buffers_on_the_heap() -> None:
    """Make glibc's malloc reuse the ~8 MB buffers of each decoded image instead of mapping fresh ones.

    Freeing a memory-mapped block raises glibc's mmap threshold to that block's size (at most 32 MiB) and
    its trim threshold to twice that; one 24 MiB block allocated and freed here thus lets the decode buffers
    of every later image come from, and go back to, the heap - not mapped, faulted in page by page and
    unmapped again per image, which took about as long as decoding (measured on 1024x2048 maps). A no-op
    with other allocators.
    """
    np.empty(_HEAP_WARM_UP_BYTES, dtype=np.uint8)


def _init_worker(
    gt_folder: str, pred_folder: str, categories: PQCategories, compat: str | None = None
) -> None:
    _keep_decode_buffers_on_the_heap()
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
        gt = decode_pixel_words(gt_file)
        pred = decode_pixel_words(pred_file)
    except PanopticPNGError as exc:
        raise CorruptPNGError(f"image {image_id!r}: {exc}") from None
    check_shapes(gt.shape, pred.shape, image_id, gt_file, pred_file)
    # one joint pass: cheaper than two RLEs and a merge; ids masked on the runs
    g_run, p_run, lengths = joint_runs(gt, pred, value_mask=ID_MASK)
    del gt, pred  # free the maps before the next image is decoded into the same memory
    return evaluate_runs(
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
        # small chunks: an image pair takes ~10 ms, and the last chunks should end together
        chunk = chunksize or max(1, min(2, len(pairs) // (16 * n_workers)))
        # forkserver by default, not fork: the caller may hold threads (torch, MLflow) whose locks a forked
        # child would inherit mid-use; workers fork from a clean single-threaded server instead.
        context = multiprocessing.get_context(start_method)
        # the PNG decoder is imported before the workers start, once: forked workers inherit it, and a
        # forkserver imports it when it starts (instead of every worker on its first image)
        if start_method == "forkserver":
            backend = default_backend()
            context.set_forkserver_preload([__name__, "PIL.Image" if backend == "pillow" else backend])
        else:
            default_backend()
        with context.Pool(
            n_workers, initializer=_init_worker, initargs=(gt_folder, pred_folder, categories, compat)
        ) as pool:
            for stats in pool.imap(_evaluate_pair, pairs, chunksize=chunk):
                acc.add(stats)
    results = acc.compute()
    if verbose:
        print(format_pq_table(results))
    return (results, acc) if return_accumulator else results
