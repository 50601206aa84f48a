"""The evaluation's errors: re-exported from :mod:`unipan_pipeline.fileio.errors` (one hierarchy).

All are ``ValueError`` s (:class:`EvaluationError` is :class:`~unipan_pipeline.fileio.errors.DataError`), and
their messages name the image, the file and the segment concerned.
"""

from __future__ import annotations

from unipan_pipeline.fileio.errors import (
    CorruptPNGError,
    EvaluationError,
    ImageMismatchError,
    MissingFileError,
    SegmentMismatchError,
    ShapeMismatchError,
    UnknownCategoryError,
)

__all__ = [
    "CorruptPNGError",
    "EvaluationError",
    "ImageMismatchError",
    "MissingFileError",
    "SegmentMismatchError",
    "ShapeMismatchError",
    "UnknownCategoryError",
]
