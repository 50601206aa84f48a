"""Reading the internal ("ingested") panoptic data form: :func:`load_ingested` -> :class:`IngestedSplit`,
and the readers of its files (layout: :mod:`.store`)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from unipan_pipeline.categories import CategoryMap
from unipan_pipeline.fileio.errors import CorruptFileError, IncompleteDatasetError, MissingDataError
from unipan_pipeline.fileio.png import decode_id_png

__all__ = ["MARKER", "IngestedSplit", "load_ingested", "read_panoptic_png", "read_rgb_image"]

MARKER = "_INGESTED.json"
"""The completion marker, written last: a folder without it is never trusted."""


def read_panoptic_png(path: str | os.PathLike) -> np.ndarray:
    """Decode a panoptic PNG to a uint32 ``[H, W]`` id map (:func:`unipan_pipeline.fileio.png.decode_id_png`);
    bad files raise errors naming the file (:class:`MissingDataError`, :class:`CorruptFileError`)."""
    path = Path(path)
    if not path.is_file():
        raise MissingDataError(f"panoptic PNG {path} does not exist")
    return decode_id_png(path)  # its PanopticPNGError is a CorruptFileError


def read_rgb_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image as uint8 ``[H, W, 3]`` RGB; bad files raise errors naming the file."""
    path = Path(path)
    if not path.is_file():
        raise MissingDataError(f"image {path} does not exist")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (OSError, SyntaxError, ValueError) as err:
        raise CorruptFileError(f"image {path} cannot be decoded (truncated or corrupt?): {err}") from None


@dataclass
class IngestedSplit:
    """One split of an ingested data set, as read back from disk."""

    root: Path
    split: str
    categories: CategoryMap
    images: list[dict]
    annotations: dict[str, dict]
    """image id -> annotation (``file_name``, ``segments_info``)."""

    def image_path(self, i: int) -> Path:
        p = Path(self.images[i]["image_path"])
        return p if p.is_absolute() else self.root / p

    def png_path(self, i: int) -> Path:
        return self.root / f"panoptic_{self.split}" / self.annotations[self.images[i]["id"]]["file_name"]

    def segments(self, i: int) -> list[dict]:
        return self.annotations[self.images[i]["id"]]["segments_info"]

    @property
    def json_path(self) -> Path:
        return self.root / f"panoptic_{self.split}.json"

    @property
    def png_folder(self) -> Path:
        return self.root / f"panoptic_{self.split}"

    def index(self) -> pd.DataFrame:
        return pd.read_parquet(self.root / f"index_{self.split}.parquet")

    def class_stats(self) -> pd.DataFrame:
        return pd.read_parquet(self.root / f"class_stats_{self.split}.parquet")


def load_ingested(root: str | os.PathLike, split: str) -> IngestedSplit:
    """Read one split of an ingested data set; refuses folders without the completion marker."""
    root = Path(root).absolute()
    if not root.is_dir():
        raise MissingDataError(
            f"ingested data set {root} does not exist: run `kedro run --pipelines=ingest_cityscapes` "
            f"(or ingest_coco) first"
        )
    if not (root / MARKER).is_file():
        raise IncompleteDatasetError(
            f"{root} is not a complete ingested data set (no {MARKER}: ingestion interrupted or never run)"
        )
    json_path = root / f"panoptic_{split}.json"
    if not json_path.is_file():
        raise MissingDataError(f"{json_path} does not exist: split {split!r} was not ingested into {root}")
    try:
        data = json.loads(json_path.read_text())
    except json.JSONDecodeError as err:
        raise CorruptFileError(f"{json_path} is not valid JSON: {err}") from None
    categories = CategoryMap.load(root / "categories.json")
    annotations = {str(a["image_id"]): a for a in data["annotations"]}
    return IngestedSplit(root, split, categories, data["images"], annotations)
