"""Ingestion of COCO panoptic (as distributed, or any folder in the same format) into the internal form."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

from unipan_pipeline.categories import CategoryMap
from unipan_pipeline.data.errors import CorruptFileError, DataError, MissingDataError
from unipan_pipeline.data.store import PngMode, SourceRecord, VerifyMode, write_ingested

log = logging.getLogger(__name__)

COCO_LAYOUT = """\
COCO panoptic must be laid out as distributed (paths configurable in conf/base/parameters_ingest_coco.yml):
  {root}/
    annotations/panoptic_{{split}}2017.json      (COCO panoptic json)
    annotations/panoptic_{{split}}2017/*.png     (panoptic PNGs, unzipped)
    {{split}}2017/*.jpg                          (images)
Download panoptic_annotations_trainval2017.zip, train2017.zip and val2017.zip from https://cocodataset.org
and unzip them there (also unzip annotations/panoptic_{{split}}2017.zip)."""


def _missing(what: str, path: Path, raw_root: Path) -> MissingDataError:
    return MissingDataError(f"COCO {what} {path} does not exist.\n" + COCO_LAYOUT.format(root=raw_root))


def read_coco_split(
    raw_root: str | os.PathLike,
    split: str,
    *,
    annotation_json: str = "annotations/panoptic_{split}2017.json",
    panoptic_dir: str = "annotations/panoptic_{split}2017",
    image_dir: str = "{split}2017",
    categories_json: str | None = None,
    max_images: int | None = None,
    unannotated_images: str = "error",
) -> tuple[CategoryMap, list[SourceRecord]]:
    """Read one split's json (and categories) into :class:`SourceRecord` s; paths are relative to raw_root.

    The three path patterns may contain ``{split}``. If the json has no ``categories`` the file
    ``categories_json`` (e.g. panopticapi's ``panoptic_coco_categories.json``) is used. An image of the json
    without annotation raises, or with ``unannotated_images="warn"`` is logged by name and left out.
    """
    if unannotated_images not in ("error", "warn"):
        raise ValueError(f"unannotated_images must be 'error' or 'warn', not {unannotated_images!r}")
    raw_root = Path(raw_root).absolute()
    if not raw_root.is_dir():
        raise _missing("data folder", raw_root, raw_root)
    json_path = raw_root / annotation_json.format(split=split)
    png_dir = raw_root / panoptic_dir.format(split=split)
    img_dir = raw_root / image_dir.format(split=split)
    for what, p, is_dir in (
        ("annotation json", json_path, False),
        ("PNG folder", png_dir, True),
        ("image folder", img_dir, True),
    ):
        if not (p.is_dir() if is_dir else p.is_file()):
            raise _missing(what, p, raw_root)
    data = _read_json(json_path)
    for key in ("images", "annotations"):
        if key not in data:
            raise DataError(f"{json_path} is not a COCO panoptic json: no {key!r} list")
    cats = data.get("categories") or []
    if not cats:
        if categories_json is None:
            raise DataError(f"{json_path} has no categories and no categories_json file was configured")
        cat_path = raw_root / categories_json
        if not cat_path.is_file():
            raise _missing("categories file", cat_path, raw_root)
        cats = _read_json(cat_path)
    try:
        categories = CategoryMap.from_coco(cats, name="coco")
    except ValueError as err:
        raise DataError(f"categories of {json_path}: {err}") from None
    anns = {}
    for a in data["annotations"]:
        try:
            anns[str(a["image_id"])] = a
        except (KeyError, TypeError):
            raise DataError(f"{json_path}: annotation without image_id: {str(a)[:200]}") from None
    records = []
    unannotated: list[str] = []
    for img in data["images"][: max_images if max_images else None]:
        image_id = str(img["id"])
        ann = anns.pop(image_id, None)
        if ann is None:
            if unannotated_images == "error":
                raise DataError(
                    f"{json_path}: image {image_id!r} ({img.get('file_name')}) has no annotation; add it, "
                    "or set ingest_coco.unannotated_images: warn to ingest the annotated images only"
                )
            unannotated.append(f"{image_id} ({img.get('file_name')})")
            continue
        png = png_dir / ann.get("file_name", f"{Path(img['file_name']).stem}.png")
        if not png.is_file():
            raise MissingDataError(f"{json_path}: image {image_id!r}: panoptic PNG {png} does not exist")
        records.append(
            SourceRecord(
                image_id=image_id,
                image_path=img_dir / img["file_name"],
                png_path=png,
                height=int(img["height"]),
                width=int(img["width"]),
                segments_info=list(ann.get("segments_info", [])),
                file_name=img["file_name"],
            )
        )
    if unannotated:
        log.warning(
            "COCO %s: skipping %d image(s) without annotation in %s:\n  %s",
            split,
            len(unannotated),
            json_path,
            "\n  ".join(unannotated),
        )
    if anns and not max_images:
        raise DataError(f"{json_path}: annotations for image ids {sorted(anns)[:5]} have no image entry")
    return categories, records


def _read_json(path: Path) -> dict | list:
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise CorruptFileError(f"{path} is not valid JSON: {err}") from None


def ingest_coco(
    raw_root: str | os.PathLike,
    out_root: str | os.PathLike,
    splits: Sequence[str] = ("val",),
    *,
    annotation_json: str = "annotations/panoptic_{split}2017.json",
    panoptic_dir: str = "annotations/panoptic_{split}2017",
    image_dir: str = "{split}2017",
    categories_json: str | None = None,
    verify_images: VerifyMode = "full",
    fix_stats: bool = True,
    png_mode: PngMode = "link",
    max_images: int | None = None,
    workers: int = 0,
    unannotated_images: str = "error",
) -> dict:
    """Validate COCO panoptic splits and write them in the internal form to ``out_root`` (atomically).

    Category ids stay in dataset space (COCO ids 1..200); train ids come from
    :meth:`CategoryMap.from_coco`. Returns the ingestion summary.
    """
    raw_root = Path(raw_root).absolute()
    categories: CategoryMap | None = None
    per_split = {}
    for split in splits:
        cats, records = read_coco_split(
            raw_root,
            split,
            annotation_json=annotation_json,
            panoptic_dir=panoptic_dir,
            image_dir=image_dir,
            categories_json=categories_json,
            max_images=max_images,
            unannotated_images=unannotated_images,
        )
        if categories is not None and cats != categories:
            raise DataError(f"COCO split {split!r} under {raw_root}: categories differ from {splits[0]!r}")
        categories = cats
        per_split[split] = records
        log.info("COCO %s: %d images from %s", split, len(records), raw_root)
    if categories is None:
        raise ValueError("ingest_coco needs at least one split")
    return write_ingested(
        out_root,
        categories,
        per_split,
        source=f"coco:{raw_root}",
        verify_images=verify_images,
        fix_stats=fix_stats,
        png_mode=png_mode,
        workers=workers,
    )


PANOPTICAPI_SAMPLE = {
    "annotation_json": "panoptic_examples.json",
    "panoptic_dir": "panoptic_examples",
    "image_dir": "input_images",
    "categories_json": "panoptic_coco_categories.json",
}
"""Path parameters for panopticapi's ``sample_data`` folder (two COCO val2017 images)."""


def ingest_panopticapi_sample(
    sample_root: str | os.PathLike, out_root: str | os.PathLike, split: str = "val"
) -> dict:
    """Ingest panopticapi's sample folder as split ``split`` (a convenience for tests and demos)."""
    return ingest_coco(sample_root, out_root, [split], **PANOPTICAPI_SAMPLE)  # type: ignore[arg-type]
