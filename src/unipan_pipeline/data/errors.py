"""Exceptions raised on bad input data.

Every message names the offending file (and image / segment where relevant) and the problem, so that a
failed ingestion can be fixed without reading the code.
"""

from __future__ import annotations


class DataError(ValueError):
    """Input data exist but are inconsistent or malformed."""


class MissingDataError(FileNotFoundError):
    """An expected input file or folder does not exist."""


class CorruptFileError(DataError):
    """A file exists but cannot be decoded (truncated image, broken PNG, invalid JSON)."""


class SegmentMismatchError(DataError):
    """The segments listed in a panoptic json and the ids painted in its PNG disagree."""


class UnknownCategoryError(DataError):
    """A segment refers to a category id that is not part of the data set's categories."""


class IncompleteDatasetError(MissingDataError):
    """A folder is not a complete ingested data set (no completion marker: interrupted or never run)."""
