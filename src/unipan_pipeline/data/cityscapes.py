"""Ingestion of Cityscapes (real, or the tree of ``unipan_pipeline.synthetic``) into the internal form.

The conversion goes through cityscapesscripts' own tools, so that the ground truth is exactly what the
official panoptic evaluation uses:

1. ``json2instanceImg.createInstanceImage`` renders ``*_gtFine_instanceIds.png`` from the polygons for
   frames that lack it (into a scratch copy of the gtFine tree; the raw data are never written to);
2. ``createPanopticImgs.convert2panoptic(..., useTrainId=False)`` turns instanceIds into COCO panoptic json +
   PNGs (dataset ids = Cityscapes ``label.id``; ``ignoreInEval`` classes become void; instance-less ids of
   thing classes, e.g. ``cargroup``, become crowd segments);
3. the result is validated and written with image paths, :meth:`CategoryMap.cityscapes` categories and the
   index tables by :func:`unipan_pipeline.data.store.write_ingested` (atomically).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from cityscapesscripts.helpers.annotation import Annotation
from cityscapesscripts.helpers.labels import id2label
from cityscapesscripts.preparation.createPanopticImgs import convert2panoptic
from cityscapesscripts.preparation.json2instanceImg import createInstanceImage
from PIL import Image
from tqdm.auto import tqdm

from unipan_pipeline.categories import CategoryMap
from unipan_pipeline.data.errors import CorruptFileError, DataError, MissingDataError, UnknownCategoryError
from unipan_pipeline.data.store import PngMode, SourceRecord, VerifyMode, write_ingested
from unipan_pipeline.fileio.atomic import link_or_copy

log = logging.getLogger(__name__)

CITYSCAPES_LAYOUT = """\
Cityscapes must be laid out as distributed. Download gtFine_trainvaltest.zip and leftImg8bit_trainvaltest.zip
from https://www.cityscapes-dataset.com/downloads/ and unzip both into {root}/ so that it holds:
  {root}/leftImg8bit/{{train,val}}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
  {root}/gtFine/{{train,val}}/<city>/<city>_<seq>_<frame>_gtFine_polygons.json
  {root}/gtFine/{{train,val}}/<city>/<city>_<seq>_<frame>_gtFine_instanceIds.png   (optional: rebuilt from
                                                                                  the polygons if missing)
(The default pipeline uses data/01_raw/cityscapes when its gtFine/ exists, else the generated tree.)"""

_POLY = "_gtFine_polygons.json"
_INST = "_gtFine_instanceIds.png"
_IMG = "_leftImg8bit.png"


def _missing(what: str, path: Path, raw_root: Path) -> MissingDataError:
    return MissingDataError(
        f"Cityscapes {what} {path} does not exist.\n" + CITYSCAPES_LAYOUT.format(root=raw_root)
    )


UnannotatedPolicy = Literal["error", "warn"]


def _list_unannotated(images: list[Path], split: str, raw_root: Path, policy: UnannotatedPolicy) -> None:
    """Raise (``error``) or log every image of ``split`` that has no gtFine annotation (``warn``)."""
    if policy not in ("error", "warn"):
        raise ValueError(f"unannotated_images must be 'error' or 'warn', not {policy!r}")
    if not images:
        return
    names = "\n  ".join(str(p) for p in images)
    if policy == "error":
        shown = "\n  ".join(str(p) for p in images[:20])
        more = f"\n  ... and {len(images) - 20} more" if len(images) > 20 else ""
        raise MissingDataError(
            f"Cityscapes split {split!r} under {raw_root}: {len(images)} image(s) have no gtFine annotation "
            f"({_POLY} or {_INST}):\n  {shown}{more}\n"
            "Add their annotations, remove the images, or set ingest_cityscapes.unannotated_images: warn "
            "to ingest the annotated frames only (every skipped image is then listed in the log)."
        )
    log.warning(
        "Cityscapes %s: skipping %d image(s) without gtFine annotation:\n  %s", split, len(images), names
    )


def find_frames(
    raw_root: str | os.PathLike, split: str, unannotated_images: UnannotatedPolicy = "error"
) -> dict[str, dict[str, Path]]:
    """``{frame prefix: {"polygons"?, "instanceIds"?, "image"}}`` of one split; checks the tree.

    A ``leftImg8bit`` image without annotation raises :class:`MissingDataError` naming it, or with
    ``unannotated_images="warn"`` is logged and left out (never dropped silently).
    """
    raw_root = Path(raw_root).absolute()
    if not raw_root.is_dir():
        raise _missing("data folder", raw_root, raw_root)
    gt = raw_root / "gtFine" / split
    img = raw_root / "leftImg8bit" / split
    for what, p in (("annotation folder", gt), ("image folder", img)):
        if not p.is_dir():
            raise _missing(what, p, raw_root)
    frames: dict[str, dict[str, Path]] = {}
    for path in sorted(gt.glob("*/*_gtFine_*")):
        for suffix, key in ((_POLY, "polygons"), (_INST, "instanceIds")):
            if path.name.endswith(suffix):
                frames.setdefault(path.name[: -len(suffix)], {})[key] = path
    if not frames:
        raise _missing(f"annotations ({_POLY} / {_INST} files) in", gt, raw_root)
    for prefix, files in frames.items():
        city = prefix.split("_", 1)[0]
        files["image"] = img / city / f"{prefix}{_IMG}"
        if not files["image"].is_file():
            raise MissingDataError(
                f"Cityscapes image {files['image']} does not exist "
                f"(annotated frame {prefix!r} of split {split!r})"
            )
    unannotated = [p for p in sorted(img.glob(f"*/*{_IMG}")) if p.name[: -len(_IMG)] not in frames]
    _list_unannotated(unannotated, split, raw_root, unannotated_images)
    return frames


def check_instance_ids(path: Path) -> tuple[int, int]:
    """Decode an instanceIds PNG, check every id maps to a Cityscapes label; return its (H, W)."""
    try:
        with Image.open(path) as im:
            arr = np.asarray(im)
    except (OSError, SyntaxError, ValueError) as err:
        raise CorruptFileError(
            f"instanceIds PNG {path} cannot be decoded (truncated/corrupt?): {err}"
        ) from None
    if arr.ndim != 2:
        raise CorruptFileError(
            f"instanceIds PNG {path} has shape {arr.shape}; expected a single-channel id map"
        )
    for value in np.unique(arr).tolist():
        label_id = value // 1000 if value >= 1000 else value
        if label_id not in id2label:
            raise UnknownCategoryError(
                f"instanceIds PNG {path}: segment {value} has unknown Cityscapes label id {label_id}"
            )
    return int(arr.shape[0]), int(arr.shape[1])


def _render_instance_ids(polygons: Path, out: Path) -> None:
    """cityscapesscripts' ``json2instanceImg``, saved as 16-bit PNG (Pillow cannot write mode ``I``)."""
    try:
        with contextlib.redirect_stdout(io.StringIO()) as buf:
            annotation = Annotation()
            annotation.fromJsonFile(str(polygons))
            instance_img = createInstanceImage(annotation, "ids")
    except SystemExit:  # cityscapesscripts' printError exits on unknown labels
        raise UnknownCategoryError(f"polygon file {polygons}: {buf.getvalue().strip()}") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise CorruptFileError(
            f"polygon file {polygons} cannot be read as Cityscapes polygons: {err!r}"
        ) from None
    Image.fromarray(np.asarray(instance_img, dtype=np.int64).astype(np.uint16)).save(out)



def _convert_split(
    raw_root: Path, split: str, scratch: Path, unannotated_images: UnannotatedPolicy = "error"
) -> tuple[Path, dict, dict[str, dict[str, Path]]]:
    """Run cityscapesscripts on one split; return (PNG folder, panoptic json dict, frames)."""
    frames = find_frames(raw_root, split, unannotated_images)
    gt_root = raw_root / "gtFine"
    missing = [p for p, f in frames.items() if "instanceIds" not in f]
    if missing:
        log.info("Cityscapes %s: rendering %d instanceIds PNGs from polygons", split, len(missing))
        gt_root = scratch / "gtFine"
        for prefix, files in tqdm(frames.items(), desc=f"instanceIds {split}", unit="img", leave=False):
            city_dir = gt_root / split / prefix.split("_", 1)[0]
            city_dir.mkdir(parents=True, exist_ok=True)
            dst = city_dir / f"{prefix}{_INST}"
            if "instanceIds" in files:
                link_or_copy(files["instanceIds"], dst, symbolic=True)
            else:
                _render_instance_ids(files["polygons"], dst)
                files["instanceIds"] = dst
    for files in tqdm(frames.values(), desc=f"check instanceIds {split}", unit="img", leave=False):
        check_instance_ids(files["instanceIds"])
    out = scratch / "converted"
    out.mkdir(exist_ok=True)
    log.info("Cityscapes %s: convert2panoptic on %d frames", split, len(frames))
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            convert2panoptic(str(gt_root), str(out), useTrainId=False, setNames=[split])
        except SystemExit:
            raise DataError(f"cityscapesscripts found no instanceIds PNGs under {gt_root / split}") from None
    data = json.loads((out / f"cityscapes_panoptic_{split}.json").read_text())
    return out / f"cityscapes_panoptic_{split}", data, frames


def ingest_cityscapes(
    raw_root: str | os.PathLike,
    out_root: str | os.PathLike,
    splits: Sequence[str] = ("train", "val"),
    *,
    verify_images: VerifyMode = "full",
    fix_stats: bool = False,
    source: str = "cityscapes",
    workers: int = 0,
    unannotated_images: UnannotatedPolicy = "error",
) -> dict:
    """Convert Cityscapes splits with cityscapesscripts and write the internal form to ``out_root``.

    Args:
        raw_root: folder holding ``leftImg8bit/`` and ``gtFine/``.
        out_root: destination (replaced atomically when complete).
        splits: splits to ingest (those with ground truth: ``train``, ``val``).
        verify_images: ``"full"`` decodes every image, ``"header"`` checks sizes only.
        fix_stats: accept (and fix) json areas/bboxes that disagree with the PNGs; the converter computes
            them from the same PNGs, so the default is to raise.
        source: description stored in the ingestion summary (e.g. ``"synthetic"``).
        workers: processes for decoding/validation (0 = in this process).
        unannotated_images: ``"error"`` (default) raises for a ``leftImg8bit`` image without gtFine files;
            ``"warn"`` logs every such image and ingests the annotated ones.

    Returns:
        The ingestion summary (also ``<out_root>/_INGESTED.json``).
    """
    raw_root = Path(raw_root).absolute()
    out_root = Path(out_root).absolute()
    if not raw_root.is_dir():
        raise _missing("data folder", raw_root, raw_root)
    categories = CategoryMap.cityscapes()
    out_root.parent.mkdir(parents=True, exist_ok=True)
    for stale in out_root.parent.glob(f".{out_root.name}.work-*"):  # scratch of a killed run
        shutil.rmtree(stale, ignore_errors=True)
    scratch = out_root.parent / f".{out_root.name}.work-{uuid.uuid4().hex[:8]}"
    try:
        per_split: dict[str, list[SourceRecord]] = {}
        for split in splits:
            split_scratch = scratch / split
            split_scratch.mkdir(parents=True)
            png_dir, data, frames = _convert_split(raw_root, split, split_scratch, unannotated_images)
            anns = {a["image_id"]: a for a in data["annotations"]}
            records = []
            for img in data["images"]:
                prefix = img["id"]
                ann = anns[prefix]
                records.append(
                    SourceRecord(
                        image_id=prefix,
                        image_path=frames[prefix]["image"],
                        png_path=png_dir / ann["file_name"],
                        height=int(img["height"]),
                        width=int(img["width"]),
                        segments_info=ann["segments_info"],
                        # convert2panoptic writes "<prefix>_gtFine_leftImg8bit.png"; use the real name
                        file_name=frames[prefix]["image"].name,
                    )
                )
            per_split[split] = records
        png_mode: PngMode = "move"
        return write_ingested(
            out_root,
            categories,
            per_split,
            source=f"{source}:{raw_root}",
            verify_images=verify_images,
            fix_stats=fix_stats,
            png_mode=png_mode,
            workers=workers,
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
