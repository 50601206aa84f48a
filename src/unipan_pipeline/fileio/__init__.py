"""Files: atomic writes of files and folders, the panoptic PNG codec, and the errors on bad input.

* :mod:`.atomic` - :func:`atomic_write`, :func:`write_text_atomic`, :func:`write_json_atomic`,
  :func:`write_bytes_atomic`, :func:`atomic_directory`, :func:`link_or_copy`;
* :mod:`.png` - :func:`decode_id_png` (pywuffs, else pyspng, else Pillow), :func:`write_id_png`,
  :func:`id_to_rgb`, :func:`rgb_to_id`;
* :mod:`.errors` - :class:`DataError` (= ``EvaluationError``), :class:`MissingDataError` and their subclasses.

Every module of the project that writes a file or reads a panoptic PNG goes through here.
"""

from __future__ import annotations

from unipan_pipeline.fileio.atomic import (
    atomic_directory,
    atomic_write,
    link_or_copy,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)
from unipan_pipeline.fileio.errors import (
    CorruptFileError,
    CorruptPNGError,
    DataError,
    EvaluationError,
    ImageMismatchError,
    IncompleteDatasetError,
    MissingDataError,
    MissingFileError,
    PanopticPNGError,
    SegmentMismatchError,
    ShapeMismatchError,
    UnknownCategoryError,
)
from unipan_pipeline.fileio.png import (
    available_backends,
    decode_id_png,
    decode_pixel_words,
    id_to_rgb,
    rgb_to_id,
    write_id_png,
)

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
    "atomic_directory",
    "atomic_write",
    "available_backends",
    "decode_id_png",
    "decode_pixel_words",
    "id_to_rgb",
    "link_or_copy",
    "rgb_to_id",
    "write_bytes_atomic",
    "write_id_png",
    "write_json_atomic",
    "write_text_atomic",
]
