"""Procedural street scenes written in the genuine Cityscapes layout (``leftImg8bit`` + ``gtFine``).

The data set stands in for Cityscapes in the CPU demo: same files, same label ids, same crowd and void
conventions, and the hard cases the paper's panoptic head addresses (touching and overlapping instances
of one class, occlusion, small and thin objects, objects cut by the border).

Public API: :func:`generate_cityscapes_tree`, :class:`SceneConfig`, :func:`render_image`.
"""

from __future__ import annotations

from .config import SceneConfig
from .tree import MANIFEST_NAME, city_of, generate_cityscapes_tree, render_image

__all__ = ["MANIFEST_NAME", "SceneConfig", "city_of", "generate_cityscapes_tree", "render_image"]
