"""Exceptions of the evaluation package.

All subclass :class:`EvaluationError`, itself a :class:`ValueError`, and their messages name the image, the
file and the segment concerned. (``panopticapi.evaluation.pq_compute`` raises bare ``KeyError`` /
``Exception`` for some of these and silently ignores others; we fail loudly instead.)
"""

from __future__ import annotations


class EvaluationError(ValueError):
    """Bad input to an evaluation function."""


class MissingFileError(EvaluationError, FileNotFoundError):
    """A json file, folder or PNG that the evaluation needs does not exist."""


class CorruptPNGError(EvaluationError):
    """A PNG exists but cannot be decoded as a panoptic id map (not a PNG, truncated, wrong colour type)."""


class ImageMismatchError(EvaluationError):
    """Ground truth and prediction do not cover the same images (or an image is listed twice)."""


class SegmentMismatchError(EvaluationError):
    """The ``segments_info`` of an image and the ids painted in its id map disagree."""


class UnknownCategoryError(EvaluationError):
    """A segment refers to a category id that is not among the evaluated categories."""


class ShapeMismatchError(EvaluationError):
    """Ground truth and prediction maps of one image have different sizes."""
