"""Nodes of the ``ingest`` stage, one per data set (thin wrappers around :mod:`unipan_pipeline.data`):
Cityscapes (real or generated) and COCO panoptic -> the ingested form."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from unipan_pipeline.data.cityscapes import ingest_cityscapes
from unipan_pipeline.data.coco import ingest_coco
from unipan_pipeline.data.errors import MissingDataError

log = logging.getLogger(__name__)


def resolve_source(params: dict[str, Any]) -> tuple[str, Path]:
    """``source: auto|synthetic|real`` -> (name, raw root); auto = real if ``<real_root>/gtFine`` exists."""
    source = str(params.get("source", "auto"))
    real, synthetic = Path(params["real_root"]), Path(params["synthetic_root"])
    if source == "auto":
        source = "real" if (real / "gtFine").is_dir() else "synthetic"
    if source not in ("real", "synthetic"):
        raise ValueError(f"ingest_cityscapes.source must be auto, synthetic or real, not {source!r}")
    if source == "synthetic" and not synthetic.is_dir():
        raise MissingDataError(
            f"Neither a real Cityscapes tree ({real}/gtFine) nor the generated one ({synthetic}) exists.\n"
            f"Place Cityscapes under {real}/ (leftImg8bit/ and gtFine/, as distributed), or generate the "
            "street scenes first: `kedro run --pipelines=generate_synthetic` (or the demo: `kedro run`)."
        )
    return source, real if source == "real" else synthetic


def ingest_cityscapes_node(params: dict[str, Any]) -> dict:
    """Ingest the real or generated Cityscapes tree (``params["source"]``) into ``params["out_root"]``."""
    source, raw_root = resolve_source(params)
    log.info("ingest_cityscapes: using the %s data set at %s", source, raw_root)
    splits = params.get("splits", ["train", "val"])
    summary = ingest_cityscapes(
        raw_root,
        params["out_root"],
        [splits] if isinstance(splits, str) else list(splits),
        verify_images=params.get("verify_images", "full"),
        source=source,
        workers=int(params.get("workers", 0)),
        unannotated_images=params.get("unannotated_images", "error"),
    )
    log.info("ingest_cityscapes: wrote %s (%s)", params["out_root"], summary["splits"])
    return summary


def ingest_after_generation(synthetic_manifest: dict[str, Any], params: dict[str, Any]) -> dict:
    """:func:`ingest_cityscapes_node` run after ``generate_synthetic`` (the demo's ordering).

    ``synthetic_manifest`` only orders the two nodes; the generated tree is read from
    ``params["synthetic_root"]``, which should be where the manifest says it was written.
    """
    root = synthetic_manifest.get("root") if isinstance(synthetic_manifest, dict) else None
    if root and Path(str(root)).absolute() != Path(params["synthetic_root"]).absolute():
        log.warning(
            "generated tree %s is not ingest_cityscapes.synthetic_root %s", root, params["synthetic_root"]
        )
    return ingest_cityscapes_node(params)


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
