"""Nodes of the ``generate_synthetic`` pipeline."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from unipan_pipeline.synthetic import generate_cityscapes_tree

_KEYS = {
    "output_dir",
    "splits",
    "height",
    "width",
    "seed",
    "images_per_city",
    "reuse",
    "progress",
    "scene",
    "workers",
}


def generate_street_scenes(params: Mapping[str, Any]) -> dict[str, Any]:
    """Generate the street-scene data set in Cityscapes layout and return its manifest.

    Args:
        params: ``params:generate_synthetic``: ``output_dir``, ``splits`` (images per split), ``height``,
            ``width``, ``seed``, ``images_per_city``, ``reuse``, ``progress``, ``workers`` and ``scene`` (the
            :class:`~unipan_pipeline.synthetic.SceneConfig` knobs).

    Returns:
        The manifest written by :func:`~unipan_pipeline.synthetic.generate_cityscapes_tree`.
    """
    unknown = sorted(set(params) - _KEYS)
    if unknown:
        raise ValueError(f"params:generate_synthetic has unknown key(s) {unknown}; known: {sorted(_KEYS)}")
    if "output_dir" not in params:
        raise ValueError("params:generate_synthetic needs 'output_dir'")
    return generate_cityscapes_tree(
        root=params["output_dir"],
        splits=dict(params.get("splits", {"train": 160, "val": 40})),
        height=int(params.get("height", 256)),
        width=int(params.get("width", 512)),
        seed=int(params.get("seed", 0)),
        scene=dict(params.get("scene") or {}),
        images_per_city=int(params.get("images_per_city", 20)),
        reuse=bool(params.get("reuse", True)),
        progress=bool(params.get("progress", True)),
        workers=int(params.get("workers", 1)),
    )
