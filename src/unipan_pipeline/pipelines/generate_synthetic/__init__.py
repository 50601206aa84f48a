"""Pipeline ``generate_synthetic``: write the procedural street-scene data set as a Cityscapes tree."""

from __future__ import annotations

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
