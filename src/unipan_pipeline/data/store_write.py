"""Writing the internal ("ingested") panoptic data form: :func:`write_ingested` validates source records
(:func:`check_image`, :func:`validate_segments`) and writes the folder atomically (layout: :mod:`.store`)."""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage
from tqdm.auto import tqdm

from unipan_pipeline.categories import CategoryMap
from unipan_pipeline.data.store_read import MARKER, read_panoptic_png
from unipan_pipeline.fileio.atomic import atomic_directory, link_or_copy, write_json_atomic
from unipan_pipeline.fileio.errors import (
    CorruptFileError,
    DataError,
    MissingDataError,
    SegmentMismatchError,
    UnknownCategoryError,
)

log = logging.getLogger(__name__)

VerifyMode = Literal["full", "header", "none"]
PngMode = Literal["link", "copy", "move"]
T = TypeVar("T")

__all__ = [
    "PngMode",
    "SourceRecord",
    "VerifyMode",
    "check_image",
    "portable_path",
    "portable_source",
    "segment_statistics",
    "validate_segments",
    "write_ingested",
]


# ------------------------------------------------------------------------------------------ validation
def check_image(path: str | os.PathLike, height: int, width: int, mode: VerifyMode = "full") -> None:
    """Check that an image exists, decodes (``mode="full"``) or has a readable header, and has size H x W."""
    path = Path(path)
    if not path.is_file():
        raise MissingDataError(f"image {path} does not exist")
    if mode == "none":
        return
    try:
        with Image.open(path) as im:
            size = im.size
            if mode == "full":
                im.load()
    except (OSError, SyntaxError, ValueError) as err:
        raise CorruptFileError(f"image {path} cannot be decoded (truncated or corrupt?): {err}") from None
    if size != (width, height):
        raise DataError(f"image {path} is {size[0]}x{size[1]} (WxH) but its annotation says {width}x{height}")


# ------------------------------------------------------------------------------------------ statistics
def segment_statistics(id_map: np.ndarray) -> dict[int, tuple[int, list[int]]]:
    """``{segment id: (area, [x, y, w, h])}`` for every non-zero id of an id map (one pass, no masks)."""
    ids, inverse, counts = np.unique(id_map.ravel(), return_inverse=True, return_counts=True)
    labels = inverse.reshape(id_map.shape).astype(np.int32) + 1
    slices = ndimage.find_objects(labels)
    out: dict[int, tuple[int, list[int]]] = {}
    for k, (sid, count) in enumerate(zip(ids.tolist(), counts.tolist(), strict=True)):
        if sid == 0:
            continue
        ys, xs = slices[k]
        out[int(sid)] = (
            int(count),
            [int(xs.start), int(ys.start), int(xs.stop - xs.start), int(ys.stop - ys.start)],
        )
    return out


def validate_segments(
    image_id: str,
    segments_info: Sequence[Mapping[str, Any]],
    id_map: np.ndarray,
    categories: CategoryMap,
    png_path: str | os.PathLike,
    *,
    fix_stats: bool = True,
) -> list[dict]:
    """Check one annotation against its PNG and return clean ``segments_info`` (area/bbox from the PNG).

    Raises :class:`SegmentMismatchError` for ids listed but not painted (or painted but not listed),
    :class:`UnknownCategoryError` for category ids outside ``categories``, and :class:`DataError` for
    duplicate ids or (``fix_stats=False``) areas/bboxes that disagree with the PNG.
    """
    stats = segment_statistics(id_map)
    listed: list[int] = []
    clean: list[dict] = []
    for seg in segments_info:
        if "id" not in seg or "category_id" not in seg:
            raise DataError(f"{png_path}: image {image_id!r}: segment without id/category_id: {dict(seg)}")
        sid, cid = int(seg["id"]), int(seg["category_id"])
        if sid in listed:
            raise DataError(f"{png_path}: image {image_id!r} lists segment id {sid} twice")
        listed.append(sid)
        if cid not in categories:
            raise UnknownCategoryError(
                f"{png_path}: image {image_id!r}, segment {sid} has unknown category id {cid} "
                f"(not among the {categories.num_classes} categories of {categories.name!r})"
            )
        if sid not in stats:
            raise SegmentMismatchError(
                f"{png_path}: image {image_id!r}, segment {sid} is listed in the json but absent from the PNG"
            )
        area, bbox = stats[sid]
        if ("area" in seg and int(seg["area"]) != area) or ("bbox" in seg and list(seg["bbox"]) != bbox):
            msg = (
                f"{png_path}: image {image_id!r}, segment {sid}: json area/bbox {seg.get('area')}/"
                f"{seg.get('bbox')} disagree with the PNG ({area}/{bbox})"
            )
            if not fix_stats:
                raise DataError(msg)
            log.warning("%s; using the PNG's values", msg)
        clean.append(
            {
                "id": sid,
                "category_id": cid,
                "area": area,
                "bbox": bbox,
                "iscrowd": int(seg.get("iscrowd", 0)),
            }
        )
    unlisted = sorted(set(stats) - set(listed))
    if unlisted:
        raise SegmentMismatchError(
            f"{png_path}: image {image_id!r}, segment id(s) {unlisted[:10]} are painted in the PNG but not "
            f"listed in the json segments_info"
        )
    return clean


# ------------------------------------------------------------------------------------------ writer
@dataclass
class SourceRecord:
    """One image of a source data set, before ingestion."""

    image_id: str
    image_path: Path
    """Absolute path of the RGB image."""
    png_path: Path
    """Path of the source panoptic PNG."""
    height: int
    width: int
    segments_info: list[dict] = field(default_factory=list)
    file_name: str = ""
    """Image file name (defaults to the image path's name)."""


def _place_png(src: Path, dst: Path, mode: PngMode) -> None:
    if mode == "move":
        os.replace(src, dst)
    elif mode == "link":
        link_or_copy(src, dst)
    else:
        shutil.copyfile(src, dst)


def portable_path(path: str | os.PathLike) -> str:
    """``path`` relative to the working directory (the project root under ``kedro run`` / DVC) when it lies
    inside it, else absolute: summaries and manifests then hash the same in every checkout."""
    absolute = Path(path).absolute()
    try:
        return absolute.relative_to(Path.cwd().absolute()).as_posix()
    except ValueError:
        return str(absolute)


def portable_source(source: str) -> str:
    """``"<kind>:<path>"`` with the path made :func:`portable_path`; other strings unchanged."""
    kind, sep, where = source.partition(":")
    return f"{kind}:{portable_path(where)}" if sep and where else source


def write_ingested(
    out_root: str | os.PathLike,
    categories: CategoryMap,
    splits: Mapping[str, Sequence[SourceRecord]],
    *,
    source: str,
    verify_images: VerifyMode = "full",
    fix_stats: bool = True,
    png_mode: PngMode = "link",
    workers: int = 0,
) -> dict:
    """Validate source records and write the internal form to ``out_root`` atomically.

    Args:
        out_root: destination folder (replaced only when the new one is complete).
        categories: the data set's categories (dataset ids in the records).
        splits: split name -> records.
        source: free text describing where the data came from (stored in the marker).
        verify_images: ``"full"`` decodes every image (catches truncation), ``"header"`` reads sizes only.
        fix_stats: replace json areas/bboxes that disagree with the PNG (with a warning) instead of raising.
        png_mode: how PNGs get into ``out_root``: hard ``link`` (falls back to copy), ``copy`` or ``move``.
        workers: processes that decode and validate images/PNGs in parallel (0 = in this process).

    Returns:
        A JSON-able summary (also written to ``<out_root>/_INGESTED.json``).
    """
    out_root = Path(out_root).absolute()
    start = time.perf_counter()
    summary: dict[str, Any] = {  # no absolute paths, no wall time: equal data -> equal bytes (DVC)
        "root": portable_path(out_root),
        "source": portable_source(source),
        "dataset": categories.name,
        "splits": {},
    }
    with atomic_directory(out_root) as tmp:
        categories.save(tmp / "categories.json")
        for split, records in splits.items():
            png_dir = tmp / f"panoptic_{split}"
            png_dir.mkdir()
            images, annotations, rows = [], [], []
            seen: set[str] = set()
            counts = _ClassCounter(categories)
            checked = _map(
                functools.partial(
                    _check_record, categories=categories, verify_images=verify_images, fix_stats=fix_stats
                ),
                records,
                workers,
            )
            progress = tqdm(checked, total=len(records), desc=f"ingest {categories.name}/{split}", unit="img")
            for rec, (segs, npix) in zip(records, progress, strict=True):
                if rec.image_id in seen:
                    raise DataError(f"image id {rec.image_id!r} appears twice in split {split!r}")
                seen.add(rec.image_id)
                png_name = rec.png_path.name
                _place_png(rec.png_path, png_dir / png_name, png_mode)
                rel_image = os.path.relpath(rec.image_path.absolute(), out_root)
                images.append(
                    {
                        "id": rec.image_id,
                        "file_name": rec.file_name or rec.image_path.name,
                        "height": rec.height,
                        "width": rec.width,
                        "image_path": rel_image,
                    }
                )
                annotations.append({"image_id": rec.image_id, "file_name": png_name, "segments_info": segs})
                rows.append(counts.add_image(rec, rel_image, f"panoptic_{split}/{png_name}", segs, npix))
            write_json_atomic(
                tmp / f"panoptic_{split}.json",
                {"images": images, "annotations": annotations, "categories": categories.to_coco()},
                newline=False,
            )
            index = pd.DataFrame(rows, columns=counts.index_columns())
            index.to_parquet(tmp / f"index_{split}.parquet", index=False)
            counts.class_table().to_parquet(tmp / f"class_stats_{split}.parquet", index=False)
            summary["splits"][split] = {
                "images": len(images),
                "segments": int(index["num_segments"].sum()) if len(index) else 0,
                "things": int(index["num_things"].sum()) if len(index) else 0,
                "crowd": int(index["num_crowd"].sum()) if len(index) else 0,
            }
        write_json_atomic(tmp / MARKER, summary, newline=False)
    log.info(
        "ingested %s (%s) into %s in %.1f s: %s",
        categories.name,
        source,
        out_root,
        time.perf_counter() - start,
        summary["splits"],
    )
    return summary


def _check_record(
    rec: SourceRecord, *, categories: CategoryMap, verify_images: VerifyMode, fix_stats: bool
) -> tuple[list[dict], int]:
    """Decode and validate one record; returns (clean segments_info, number of pixels)."""
    check_image(rec.image_path, rec.height, rec.width, verify_images)
    id_map = read_panoptic_png(rec.png_path)
    if id_map.shape != (rec.height, rec.width):
        raise DataError(
            f"{rec.png_path}: image {rec.image_id!r} PNG is {id_map.shape[1]}x{id_map.shape[0]} "
            f"(WxH) but the image is {rec.width}x{rec.height}"
        )
    segs = validate_segments(
        rec.image_id, rec.segments_info, id_map, categories, rec.png_path, fix_stats=fix_stats
    )
    return segs, int(id_map.size)


def _map(fn: Callable[[SourceRecord], T], items: Sequence[SourceRecord], workers: int) -> Iterator[T]:
    """Ordered map, in a process pool when ``workers > 0`` (errors re-raised here, pool torn down)."""
    if workers <= 0 or len(items) < 2:
        yield from map(fn, items)
        return
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(fn, items, chunksize=8)


class _ClassCounter:
    """Accumulates the per-image index rows and the per-class statistics of one split."""

    def __init__(self, categories: CategoryMap) -> None:
        self.categories = categories
        n = categories.num_classes
        self.pixels = np.zeros(n, dtype=np.int64)
        self.segments = np.zeros(n, dtype=np.int64)
        self.instances = np.zeros(n, dtype=np.int64)
        self.crowd = np.zeros(n, dtype=np.int64)
        self.images = np.zeros(n, dtype=np.int64)
        self.total_pixels = 0

    def index_columns(self) -> list[str]:
        base = [
            "image_id",
            "file_name",
            "image_path",
            "png_path",
            "height",
            "width",
            "num_segments",
            "num_things",
            "num_stuff",
            "num_crowd",
            "void_pixels",
        ]
        names = self.categories.names
        return base + [f"pixels:{n}" for n in names] + [f"instances:{n}" for n in names]

    def add_image(
        self, rec: SourceRecord, image_path: str, png_path: str, segs: list[dict], npix: int
    ) -> dict:
        n = self.categories.num_classes
        pix = np.zeros(n, dtype=np.int64)
        inst = np.zeros(n, dtype=np.int64)
        n_things = n_stuff = n_crowd = 0
        for s in segs:
            t = self.categories.train_id(s["category_id"])
            pix[t] += s["area"]
            self.segments[t] += 1
            if s["iscrowd"]:
                n_crowd += 1
                self.crowd[t] += 1
            elif self.categories.is_thing_train_id(t):
                n_things += 1
                inst[t] += 1
            else:
                n_stuff += 1
        self.pixels += pix
        self.instances += inst
        self.images += pix > 0
        self.total_pixels += npix
        row = {
            "image_id": rec.image_id,
            "file_name": rec.file_name or rec.image_path.name,
            "image_path": image_path,
            "png_path": png_path,
            "height": rec.height,
            "width": rec.width,
            "num_segments": len(segs),
            "num_things": n_things,
            "num_stuff": n_stuff,
            "num_crowd": n_crowd,
            "void_pixels": int(npix - pix.sum()),
        }
        for name, p, k in zip(self.categories.names, pix.tolist(), inst.tolist(), strict=True):
            row[f"pixels:{name}"] = p
            row[f"instances:{name}"] = k
        return row

    def class_table(self) -> pd.DataFrame:
        cats = self.categories.categories
        return pd.DataFrame(
            {
                "train_id": [c.train_id for c in cats],
                "dataset_id": [c.id for c in cats],
                "name": [c.name for c in cats],
                "isthing": [c.isthing for c in cats],
                "pixels": self.pixels,
                "pixel_fraction": self.pixels / max(self.total_pixels, 1),
                "segments": self.segments,
                "instances": self.instances,
                "crowd_segments": self.crowd,
                "images": self.images,
            }
        )
