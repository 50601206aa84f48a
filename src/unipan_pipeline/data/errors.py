"""The errors on bad input data: re-exported from :mod:`unipan_pipeline.fileio.errors` (one hierarchy)."""

from __future__ import annotations

from unipan_pipeline.fileio.errors import (
    CorruptFileError,
    DataError,
    IncompleteDatasetError,
    MissingDataError,
    SegmentMismatchError,
    UnknownCategoryError,
)

__all__ = [
    "CorruptFileError",
    "DataError",
    "IncompleteDatasetError",
    "MissingDataError",
    "SegmentMismatchError",
    "UnknownCategoryError",
]
