"""Data: ingestion of Cityscapes / COCO panoptic into the internal form, and the training Dataset.

* :func:`ingest_cityscapes`, :func:`ingest_coco` - raw data set -> ingested folder (see :mod:`.store`).
* :class:`PanopticDataset`, :func:`collate_panoptic` - ingested folder -> training batches.
* :class:`TransformConfig`, :class:`PanopticTransform` - augmentation (paper / Panoptic FPN protocol).
* :mod:`.errors` - the exceptions raised on bad input.
"""

from __future__ import annotations

from unipan_pipeline.data.cityscapes import ingest_cityscapes
from unipan_pipeline.data.coco import PANOPTICAPI_SAMPLE, ingest_coco, ingest_panopticapi_sample
from unipan_pipeline.data.dataset import PanopticDataset, build_target, collate_panoptic
from unipan_pipeline.data.errors import (
    CorruptFileError,
    DataError,
    IncompleteDatasetError,
    MissingDataError,
    SegmentMismatchError,
    UnknownCategoryError,
)
from unipan_pipeline.data.store import IngestedSplit, load_ingested, read_panoptic_png, rgb_to_id
from unipan_pipeline.data.transforms import PanopticTransform, TransformConfig

__all__ = [
    "PANOPTICAPI_SAMPLE",
    "CorruptFileError",
    "DataError",
    "IncompleteDatasetError",
    "IngestedSplit",
    "MissingDataError",
    "PanopticDataset",
    "PanopticTransform",
    "SegmentMismatchError",
    "TransformConfig",
    "UnknownCategoryError",
    "build_target",
    "collate_panoptic",
    "ingest_cityscapes",
    "ingest_coco",
    "ingest_panopticapi_sample",
    "load_ingested",
    "read_panoptic_png",
    "rgb_to_id",
]
