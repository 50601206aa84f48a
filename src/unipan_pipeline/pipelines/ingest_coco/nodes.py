"""Nodes of the ``ingest_coco`` pipeline (thin wrappers around :mod:`unipan_pipeline.data`)."""

from __future__ import annotations

import logging
from typing import Any

from unipan_pipeline.data.coco import ingest_coco

log = logging.getLogger(__name__)


def ingest_coco_node(params: dict[str, Any]) -> dict:
    """Ingest COCO panoptic (or any folder in its format, e.g. panopticapi's sample) into ``out_root``."""
    splits = params.get("splits", ["val"])
    log.info("ingest_coco: reading %s", params["raw_root"])
    summary = ingest_coco(
        params["raw_root"],
        params["out_root"],
        [splits] if isinstance(splits, str) else list(splits),
        annotation_json=params["annotation_json"],
        panoptic_dir=params["panoptic_dir"],
        image_dir=params["image_dir"],
        categories_json=params.get("categories_json"),
        verify_images=params.get("verify_images", "full"),
        fix_stats=bool(params.get("fix_stats", True)),
        png_mode=params.get("png_mode", "link"),
        max_images=params.get("max_images"),
        workers=int(params.get("workers", 0)),
        unannotated_images=params.get("unannotated_images", "error"),
    )
    log.info("ingest_coco: wrote %s (%s)", params["out_root"], summary["splits"])
    return summary
