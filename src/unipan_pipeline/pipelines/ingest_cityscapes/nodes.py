"""Nodes of the ``ingest_cityscapes`` pipeline (thin wrappers around :mod:`unipan_pipeline.data`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from unipan_pipeline.data.cityscapes import ingest_cityscapes
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
