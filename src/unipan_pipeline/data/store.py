"""The internal ("ingested") panoptic data form: layout, reader, writer and validator.

Layout of an ingested data set ``<root>/`` (see the project contracts)::

    categories.json               CategoryMap.save()
    panoptic_<split>.json         COCO panoptic json; images carry ``image_path`` (relative to <root>)
    panoptic_<split>/*.png        id maps, id = R + 256 G + 256^2 B, 0 = void
    index_<split>.parquet         one row per image: sizes, segment counts, per-class pixel/instance counts
    class_stats_<split>.parquet   one row per class: pixels, segments, instances, crowd segments, images
    _INGESTED.json                completion marker + summary, written last

The whole folder is built in a temporary sibling directory and renamed into place only when complete
(:func:`~unipan_pipeline.fileio.atomic.atomic_directory`); an earlier good output survives until then, and a
folder without the marker is never trusted by :func:`load_ingested`.

Reading lives in :mod:`.store_read`, writing (with the validation of the source) in :mod:`.store_write`;
this module gathers their names.
"""

from __future__ import annotations

from unipan_pipeline.data.store_read import (
    MARKER,
    IngestedSplit,
    load_ingested,
    read_panoptic_png,
    read_rgb_image,
)
from unipan_pipeline.data.store_write import (
    PngMode,
    SourceRecord,
    VerifyMode,
    check_image,
    portable_path,
    portable_source,
    segment_statistics,
    validate_segments,
    write_ingested,
)
from unipan_pipeline.fileio.atomic import atomic_directory
from unipan_pipeline.fileio.png import id_to_rgb, rgb_to_id, write_id_png

__all__ = [
    "MARKER",
    "IngestedSplit",
    "PngMode",
    "SourceRecord",
    "VerifyMode",
    "atomic_directory",
    "check_image",
    "id_to_rgb",
    "load_ingested",
    "portable_path",
    "portable_source",
    "read_panoptic_png",
    "read_rgb_image",
    "rgb_to_id",
    "segment_statistics",
    "validate_segments",
    "write_id_png",
    "write_ingested",
]
