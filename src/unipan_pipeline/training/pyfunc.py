"""Moved to :mod:`unipan_pipeline.tracking.pyfunc`. This alias stays because models logged before the move
pickled their python model as ``unipan_pipeline.training.pyfunc.PanopticPyfuncModel``: it keeps them (and the
registry's champions) loadable. Nothing in the project imports it."""

from __future__ import annotations

from unipan_pipeline.tracking.pyfunc import (  # noqa: F401 - the alias's whole purpose
    IMAGE_COLUMNS,
    PanopticPyfuncModel,
    build_eval_transform,
    decode_image_bytes,
    images_from_frame,
    load_image,
    resize_panoptic,
    resolve_import_path,
)
