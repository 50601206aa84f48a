"""The single source of truth for category ids.

Three id spaces exist and must never be mixed up (detectron2 #1201, #1691, #4098 are all this bug):

* **dataset id** - the ``category_id`` written in panoptic json files (Cityscapes ``label.id``, e.g. 26 for
  car; COCO category ids 1..200 with gaps).
* **train id** - the contiguous channel of the semantic output ``V`` (sec. 3.2): stuff classes first,
  ``0 .. N_st - 1``, then thing classes, ``N_st .. N_st + N_th - 1``. For Cityscapes this is exactly its
  official ``trainId``. Pixels to ignore carry :data:`IGNORE_INDEX`.
* **detector label** - the class index of torchvision's RoI heads, ``1 .. N_th`` (0 is background):
  ``detector_label = train_id - N_st + 1``.

:class:`CategoryMap` converts between them and is built once per data set, from Cityscapes' own label
definitions or from a COCO panoptic ``categories`` list.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from cityscapesscripts.helpers.labels import labels as cityscapes_labels

from unipan_pipeline.fileio.atomic import write_json_atomic

IGNORE_INDEX = 255
"""Label of pixels that carry no training signal (void, crowd, unmatched ground truth)."""


@dataclass(frozen=True)
class Category:
    """One class of a panoptic data set."""

    id: int
    """Dataset id, as written in panoptic json files."""
    name: str
    isthing: bool
    color: tuple[int, int, int]
    train_id: int
    """Contiguous channel in the semantic output ``V``."""
    supercategory: str = ""


class CategoryMap:
    """Bidirectional mapping between dataset ids, train ids and detector labels.

    Args:
        name: short name of the data set (``"cityscapes"``, ``"coco"``).
        categories: the evaluated categories. Their ``train_id`` must be ``0..N-1`` with all stuff classes
            before all thing classes.
    """

    def __init__(self, name: str, categories: Sequence[Category]) -> None:
        cats = sorted(categories, key=lambda c: c.train_id)
        if not cats:
            raise ValueError(f"category map {name!r} has no categories")
        if [c.train_id for c in cats] != list(range(len(cats))):
            raise ValueError(f"category map {name!r}: train ids must be 0..{len(cats) - 1} without gaps")
        flags = [c.isthing for c in cats]
        if flags != sorted(flags):
            raise ValueError(f"category map {name!r}: stuff classes must come before thing classes")
        ids = [c.id for c in cats]
        if len(set(ids)) != len(ids):
            raise ValueError(f"category map {name!r}: duplicate dataset ids")
        self.name = name
        self.categories: tuple[Category, ...] = tuple(cats)
        self._by_id = {c.id: c for c in cats}

    # ------------------------------------------------------------------ constructors
    @classmethod
    def cityscapes(cls) -> CategoryMap:
        """The 19 evaluated Cityscapes classes (11 stuff, 8 things), from ``cityscapesscripts``' labels."""
        cats = [
            Category(
                id=label.id,
                name=label.name,
                isthing=bool(label.hasInstances),
                color=tuple(int(v) for v in label.color),
                train_id=int(label.trainId),
                supercategory=label.category,
            )
            for label in cityscapes_labels
            if not label.ignoreInEval and 0 <= label.trainId < IGNORE_INDEX
        ]
        return cls("cityscapes", cats)

    @classmethod
    def from_coco(cls, categories: Iterable[dict], name: str = "coco") -> CategoryMap:
        """Build from a COCO panoptic ``categories`` list (``id``, ``name``, ``isthing``, ``color``).

        Train ids are assigned stuff first, then things, each group in increasing dataset id.
        """
        entries = list(categories)
        for entry in entries:
            missing = {"id", "name", "isthing"} - set(entry)
            if missing:
                raise ValueError(f"category entry {entry!r} lacks {sorted(missing)}")
        ordered = sorted(entries, key=lambda c: (bool(c["isthing"]), int(c["id"])))
        cats = [
            Category(
                id=int(c["id"]),
                name=str(c["name"]),
                isthing=bool(c["isthing"]),
                color=tuple(int(v) for v in c.get("color", (0, 0, 0))),
                train_id=i,
                supercategory=str(c.get("supercategory", "")),
            )
            for i, c in enumerate(ordered)
        ]
        return cls(name, cats)

    # ------------------------------------------------------------------ sizes
    @property
    def num_classes(self) -> int:
        return len(self.categories)

    @property
    def num_stuff(self) -> int:
        return sum(not c.isthing for c in self.categories)

    @property
    def num_things(self) -> int:
        return sum(c.isthing for c in self.categories)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.categories]

    # ------------------------------------------------------------------ conversions
    def __contains__(self, dataset_id: object) -> bool:
        return dataset_id in self._by_id

    def by_dataset_id(self, dataset_id: int) -> Category:
        try:
            return self._by_id[int(dataset_id)]
        except KeyError:
            raise ValueError(
                f"unknown category id {dataset_id} for data set {self.name!r} "
                f"(known ids: {sorted(self._by_id)})"
            ) from None

    def train_id(self, dataset_id: int) -> int:
        return self.by_dataset_id(dataset_id).train_id

    def dataset_id(self, train_id: int) -> int:
        if not 0 <= int(train_id) < self.num_classes:
            raise ValueError(f"train id {train_id} out of range 0..{self.num_classes - 1} for {self.name!r}")
        return self.categories[int(train_id)].id

    def is_thing_train_id(self, train_id: int) -> bool:
        return int(train_id) >= self.num_stuff

    def detector_label(self, train_id: int) -> int:
        """Train id of a thing class -> torchvision RoI-head label (1..N_th)."""
        if not self.is_thing_train_id(train_id) or train_id >= self.num_classes:
            raise ValueError(f"train id {train_id} is not a thing class of {self.name!r}")
        return int(train_id) - self.num_stuff + 1

    def dataset_to_train_lut(self) -> np.ndarray:
        """``lut[dataset_id] -> train_id`` (``IGNORE_INDEX`` for ids that are not evaluated)."""
        lut = np.full(max(self._by_id) + 1, IGNORE_INDEX, dtype=np.int64)
        for c in self.categories:
            lut[c.id] = c.train_id
        return lut

    # ------------------------------------------------------------------ (de)serialisation
    def to_coco(self) -> list[dict]:
        """The COCO panoptic ``categories`` list (dataset ids), with ``train_id`` kept as an extra key."""
        return [
            {
                "id": c.id,
                "name": c.name,
                "isthing": int(c.isthing),
                "color": list(c.color),
                "supercategory": c.supercategory,
                "train_id": c.train_id,
            }
            for c in self.categories
        ]

    def to_dict(self) -> dict:
        return {"name": self.name, "categories": [asdict(c) for c in self.categories]}

    @classmethod
    def from_dict(cls, data: dict) -> CategoryMap:
        cats = [
            Category(**{**c, "color": tuple(c["color"]), "isthing": bool(c["isthing"])})
            for c in data["categories"]
        ]
        return cls(data["name"], cats)

    def save(self, path: str | os.PathLike) -> None:
        """Write as JSON, atomically (temporary file, then rename)."""
        write_json_atomic(path, self.to_dict(), newline=False, indent=1)

    @classmethod
    def load(cls, path: str | os.PathLike) -> CategoryMap:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"category file {path} does not exist: run the ingestion first") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"category file {path} is not valid JSON: {err}") from None
        return cls.from_dict(data)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CategoryMap):
            return False
        return (self.name, self.categories) == (other.name, other.categories)

    def __hash__(self) -> int:
        return hash((self.name, self.categories))

    def __repr__(self) -> str:
        return f"CategoryMap({self.name!r}, stuff={self.num_stuff}, things={self.num_things})"
