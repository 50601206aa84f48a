"""The project's errors on bad input: one hierarchy for ingestion, data sets, prediction and evaluation.

Every message names the file (and the image / segment where relevant) and the problem, so that a failed
run can be fixed without reading the code. (``panopticapi.evaluation.pq_compute`` raises bare ``KeyError``
/ ``Exception`` for some of these and silently ignores others; we fail loudly instead.)

::

    ValueError
     +-- DataError  (= EvaluationError)        inconsistent or malformed input
          +-- CorruptFileError                 a file exists but cannot be decoded
          |    +-- CorruptPNGError (= PanopticPNGError)   ... a panoptic PNG
          +-- SegmentMismatchError             segments_info and the id map disagree
          +-- UnknownCategoryError             a category id outside the evaluated / known categories
          +-- ImageMismatchError               ground truth and prediction cover different images
          +-- ShapeMismatchError               two maps of one image have different sizes
          +-- MissingFileError  (also a MissingDataError)
    FileNotFoundError
     +-- MissingDataError                      an expected file or folder does not exist
          +-- MissingFileError                 ... one the evaluation needs (also a DataError)
          +-- IncompleteDatasetError           a folder without its completion marker

``data.errors`` and ``evaluation.errors`` re-export these names.
"""

from __future__ import annotations

__all__ = [
    "CorruptFileError",
    "CorruptPNGError",
    "DataError",
    "EvaluationError",
    "ImageMismatchError",
    "IncompleteDatasetError",
    "MissingDataError",
    "MissingFileError",
    "PanopticPNGError",
    "SegmentMismatchError",
    "ShapeMismatchError",
    "UnknownCategoryError",
]


class DataError(ValueError):
    """Input data exist but are inconsistent or malformed."""


EvaluationError = DataError
"""Bad input to an evaluation function (the evaluation's name for :class:`DataError`)."""


class MissingDataError(FileNotFoundError):
    """An expected input file or folder does not exist."""


class MissingFileError(MissingDataError, DataError):
    """A json file, folder or PNG that the evaluation needs does not exist (a ``ValueError`` too, so that
    callers of the evaluation catch every bad input with one ``except ValueError``)."""


class IncompleteDatasetError(MissingDataError):
    """A folder is not a complete ingested data set (no completion marker: interrupted or never run)."""


class CorruptFileError(DataError):
    """A file exists but cannot be decoded (truncated image, broken PNG, invalid JSON)."""


class CorruptPNGError(CorruptFileError):
    """A panoptic PNG cannot be decoded as an id map (missing, not a PNG, truncated, wrong colour type)."""


PanopticPNGError = CorruptPNGError
"""What the PNG decoder (:mod:`unipan_pipeline.fileio.png`) raises."""


class SegmentMismatchError(DataError):
    """The ``segments_info`` of an image and the ids painted in its id map (PNG) disagree."""


class UnknownCategoryError(DataError):
    """A segment refers to a category id that is not among the data set's / evaluated categories."""


class ImageMismatchError(DataError):
    """Ground truth and prediction do not cover the same images (or an image is listed twice)."""


class ShapeMismatchError(DataError):
    """Ground truth and prediction maps of one image have different sizes."""
