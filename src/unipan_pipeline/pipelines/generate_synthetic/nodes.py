"""Nodes of the ``generate_synthetic`` pipeline."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from unipan_pipeline.params import from_params
from unipan_pipeline.synthetic import generate_cityscapes_tree


@dataclass
class GenerateParams:
    """``params:generate_synthetic``. A key left out takes the default of
    :func:`~unipan_pipeline.synthetic.generate_cityscapes_tree` (the one place defaults live; the YAML holds
    the demo's values)."""

    output_dir: str
    splits: dict[str, int] | None = None
    height: int | None = None
    width: int | None = None
    seed: int | None = None
    images_per_city: int | None = None
    reuse: bool | None = None
    progress: bool | None = None
    workers: int | None = None
    scene: dict[str, Any] = field(default_factory=dict)
    """:class:`~unipan_pipeline.synthetic.SceneConfig` knobs."""


def generate_street_scenes(params: Mapping[str, Any]) -> dict[str, Any]:
    """Generate the street-scene data set in Cityscapes layout and return its manifest.

    Args:
        params: ``params:generate_synthetic`` (:class:`GenerateParams`).

    Returns:
        The manifest written by :func:`~unipan_pipeline.synthetic.generate_cityscapes_tree`.
    """
    spec = from_params(GenerateParams, params, "params:generate_synthetic")
    given = {
        f.name: getattr(spec, f.name)
        for f in dataclasses.fields(spec)
        if f.name != "output_dir" and getattr(spec, f.name) is not None
    }
    return generate_cityscapes_tree(root=spec.output_dir, **given)
