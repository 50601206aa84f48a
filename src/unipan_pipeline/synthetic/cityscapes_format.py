"""Cityscapes' on-disk annotation format: label lookup, rasterisation of ``polygons.json`` and atomic
writers.

The rasterisation follows ``cityscapesscripts.preparation.json2labelImg`` / ``json2instanceImg``
rule for rule (PIL polygon fill in list order; ``...group`` labels are crowd regions of their class and
get the plain label id; thing instances get ``label_id * 1000 + k`` with ``k`` counted per class in list
order; labels with a negative id such as ``license plate`` are not drawn), so rasterising the written
``polygons.json`` with those scripts reproduces the written PNGs exactly.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from cityscapesscripts.helpers.labels import Label, labels, name2label
from PIL import Image, ImageDraw

from unipan_pipeline.fileio.atomic import atomic_write

IntPolygon = list[tuple[int, int]]

COLOUR_LUT = np.zeros((256, 4), dtype=np.uint8)
COLOUR_LUT[:, 3] = 255
for _lab in labels:
    if _lab.id >= 0:
        COLOUR_LUT[_lab.id, :3] = _lab.color


def resolve_label(name: str) -> tuple[Label, bool]:
    """The Cityscapes label of a polygon label name and whether it is a crowd (``...group``) region."""
    if name in name2label:
        return name2label[name], False
    if name.endswith("group") and name[: -len("group")] in name2label:
        return name2label[name[: -len("group")]], True
    raise ValueError(f"unknown Cityscapes label {name!r}")


def rasterize(
    objects: Sequence[tuple[str, IntPolygon]], width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """Label-id image (``uint8``) and instance-id image (``int32``) of polygons in drawing order."""
    label_img = Image.new("L", (width, height), name2label["unlabeled"].id)
    inst_img = Image.new("I", (width, height), name2label["unlabeled"].id)
    ldraw, idraw = ImageDraw.Draw(label_img), ImageDraw.Draw(inst_img)
    counters: dict[str, int] = {}
    for name, poly in objects:
        lab, group = resolve_label(name)
        if lab.id < 0:
            continue
        ident = lab.id
        if lab.hasInstances and not group:
            ident = lab.id * 1000 + counters.get(lab.name, 0)
            counters[lab.name] = counters.get(lab.name, 0) + 1
        ldraw.polygon(poly, fill=lab.id)
        idraw.polygon(poly, fill=ident)
    return np.asarray(label_img).copy(), np.asarray(inst_img).astype(np.int32)


def colour_image(label_ids: np.ndarray) -> np.ndarray:
    """RGBA colour visualisation (``_gtFine_color.png``) of a label-id image."""
    return COLOUR_LUT[label_ids]


def polygons_document(objects: Sequence[tuple[str, IntPolygon]], width: int, height: int) -> dict[str, Any]:
    """The ``_gtFine_polygons.json`` content."""
    return {
        "imgHeight": height,
        "imgWidth": width,
        "objects": [
            {"label": name, "polygon": [[int(x), int(y)] for x, y in poly]} for name, poly in objects
        ],
    }


def _atomic(path: Path, write: Callable[[BinaryIO], object]) -> None:
    with atomic_write(path, "wb") as fh:
        write(fh)


def write_png(path: Path, array: np.ndarray) -> None:
    """Write an array as PNG atomically (``uint16`` arrays become 16-bit PNGs, as Cityscapes' ids)."""
    img = Image.fromarray(array)
    _atomic(path, lambda fh: img.save(fh, format="PNG"))


def write_json(path: Path, document: Any, indent: int | None = 4) -> None:
    """Write JSON atomically (sorted keys are not used: Cityscapes' key order is kept)."""
    data = json.dumps(document, indent=indent).encode("utf-8")
    _atomic(path, lambda fh: fh.write(data))
