"""Nodes of the ``ingest_cityscapes`` pipeline (thin wrappers around :mod:`unipan_pipeline.data`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from unipan_pipeline.data.cityscapes import ingest_cityscapes

log = logging.getLogger(__name__)


def resolve_source(params: dict[str, Any]) -> tuple[str, Path]:
    """``source: auto|synthetic|real`` -> (name, raw root); auto = real if ``<real_root>/gtFine`` exists."""
    source = str(params.get("source", "auto"))
    real, synthetic = Path(params["real_root"]), Path(params["synthetic_root"])
    if source == "auto":
        source = "real" if (real / "gtFine").is_dir() else "synthetic"
    if source not in ("real", "synthetic"):
        raise ValueError(f"ingest_cityscapes.source must be auto, synthetic or real, not {source!r}")
    return source, real if source == "real" else synthetic


def ingest_cityscapes_node(synthetic_manifest: Any, params: dict[str, Any]) -> dict:
    """Ingest Cityscapes into ``params["out_root"]`` and return the ingestion summary.

    ``synthetic_manifest`` (output of ``generate_synthetic``) is only an ordering dependency: the generated
    tree is read from ``params["synthetic_root"]``.
    """
    source, raw_root = resolve_source(params)
    log.info("ingest_cityscapes: using the %s data set at %s", source, raw_root)
    if source == "synthetic" and isinstance(synthetic_manifest, dict) and synthetic_manifest.get("root"):
        manifest_root = Path(str(synthetic_manifest["root"]))
        if manifest_root.absolute() != raw_root.absolute():
            log.warning("synthetic manifest root %s differs from synthetic_root %s", manifest_root, raw_root)
    splits = params.get("splits", ["train", "val"])
    summary = ingest_cityscapes(
        raw_root,
        params["out_root"],
        [splits] if isinstance(splits, str) else list(splits),
        verify_images=params.get("verify_images", "full"),
        source=source,
        workers=int(params.get("workers", 0)),
    )
    log.info("ingest_cityscapes: wrote %s (%s)", params["out_root"], summary["splits"])
    return summary
