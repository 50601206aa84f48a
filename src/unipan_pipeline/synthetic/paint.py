"""Render the photograph of a composed scene.

Every object is painted inside exactly the pixels its (integer) polygon covers when rasterised the way
``cityscapesscripts`` rasterises ``polygons.json`` (PIL ``ImageDraw.polygon``), back to front, so that
the picture's object boundaries coincide with the label images. The texture is chosen so that colour
alone does not identify the class: per-object colour jitter, low-frequency shading, grain, gradients,
palettes shared between classes, a global blur, illumination change and sensor noise. ``class_tint``
(:class:`.SceneConfig`) pulls the base colours towards the classes' label colours, for data sets that a
model trained from scratch on a CPU must learn in minutes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from cityscapesscripts.helpers.labels import name2label
from PIL import Image, ImageDraw, ImageFilter

from .config import SceneConfig
from .scene import SceneObject

IntPolygon = list[tuple[int, int]]


def polygon_mask(polygon: IntPolygon, width: int, height: int) -> np.ndarray:
    """Boolean ``[H, W]`` mask of ``polygon`` as PIL (and hence ``cityscapesscripts``) rasterises it."""
    img = Image.new("L", (width, height), 0)
    ImageDraw.Draw(img).polygon(polygon, fill=1)
    return np.asarray(img).astype(bool)


def smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Roughly unit-variance, bilinearly interpolated value noise of size ``[h, w]``."""
    cell = max(1, int(cell))
    gh, gw = h // cell + 2, w // cell + 2
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    img = Image.fromarray(grid).resize((gw * cell, gh * cell), Image.Resampling.BILINEAR)
    off_y, off_x = int(rng.integers(0, cell)), int(rng.integers(0, cell))
    return np.asarray(img)[off_y : off_y + h, off_x : off_x + w]


def base_colour(obj: SceneObject, class_tint: float) -> np.ndarray:
    """``obj.colour`` moved ``class_tint`` of the way towards its label's Cityscapes colour."""
    colour = np.asarray(obj.colour, dtype=np.float32)
    label = name2label.get(obj.label)
    if class_tint <= 0 or label is None:
        return colour
    return (1.0 - class_tint) * colour + class_tint * np.asarray(label.color, dtype=np.float32)


def _layer(obj: SceneObject, h: int, w: int, rng: np.random.Generator, cfg: SceneConfig) -> np.ndarray:
    strength = cfg.texture_strength
    layer = np.empty((h, w, 3), dtype=np.float32)
    layer[:] = base_colour(obj, cfg.class_tint)
    if obj.gradient:
        layer += (obj.gradient * np.linspace(-0.5, 0.5, h, dtype=np.float32))[:, None, None]
    if obj.noise > 0 and strength > 0:
        lum = smooth_noise(rng, h, w, obj.noise_cell)
        layer += (strength * obj.noise * lum)[:, :, None]
        chroma = rng.normal(0.0, 0.25, 3).astype(np.float32)
        layer += (strength * obj.noise * smooth_noise(rng, h, w, obj.noise_cell * 2))[:, :, None] * chroma
    if obj.grain > 0 and strength > 0:
        layer += strength * obj.grain * rng.standard_normal((h, w, 1)).astype(np.float32)
    return layer


def paint_scene(
    objects: Sequence[tuple[SceneObject, IntPolygon]],
    width: int,
    height: int,
    rng: np.random.Generator,
    cfg: SceneConfig,
) -> tuple[np.ndarray, list[int]]:
    """Paint the objects back to front.

    Args:
        objects: ``(object, integer polygon clipped to the image)`` pairs in drawing order.
        width, height: image size.
        rng: the image's random generator (used for texture and noise).
        cfg: scene configuration (noise level, texture strength, blur).

    Returns:
        The RGB picture ``uint8 [H, W, 3]`` and, per object, the number of pixels its polygon covers in
        the image before occlusion (for occlusion statistics).
    """
    canvas = np.zeros((height, width, 3), dtype=np.float32)
    areas: list[int] = []
    for obj, poly in objects:
        full = polygon_mask(poly, width, height)
        areas.append(int(full.sum()))
        if not areas[-1]:
            continue
        rows = np.flatnonzero(full.any(axis=1))
        cols = np.flatnonzero(full.any(axis=0))
        y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        sub = full[y0:y1, x0:x1]
        h, w = sub.shape
        layer = _layer(obj, h, w, rng, cfg)
        alpha = np.full((h, w), obj.opacity, dtype=np.float32)
        if obj.details:
            img = Image.fromarray(np.clip(layer, 0, 255).astype(np.uint8))
            draw = ImageDraw.Draw(img)
            cover = Image.new("L", (w, h), 0)
            cdraw = ImageDraw.Draw(cover)
            shade = Image.new("L", (w, h), 0)
            sdraw = ImageDraw.Draw(shade)
            for d in obj.details:
                pts = [(float(px - x0), float(py - y0)) for px, py in d.polygon]
                if len(pts) < 2:
                    continue
                col = tuple(int(min(max(c, 0), 255)) for c in d.colour)
                if d.kind == "shade":
                    if len(pts) >= 3:
                        sdraw.polygon(pts, fill=int(255 * d.alpha))
                elif d.kind == "line":
                    if len(pts) >= 3:
                        draw.polygon(pts, outline=col, width=d.width)
                        cdraw.polygon(pts, outline=255, width=d.width)
                    else:
                        draw.line(pts, fill=col, width=d.width)
                        cdraw.line(pts, fill=255, width=d.width)
                elif len(pts) >= 3:
                    draw.polygon(pts, fill=col)
                    cdraw.polygon(pts, fill=255)
            layer = np.asarray(img).astype(np.float32)
            s = np.asarray(shade).astype(np.float32) / 255.0
            if s.any():
                layer *= (1.0 - s)[:, :, None]
            if obj.opacity < 1.0:
                alpha = np.maximum(alpha, np.asarray(cover).astype(np.float32) / 255.0)
        region = canvas[y0:y1, x0:x1]
        a = (alpha * sub)[:, :, None]
        region[:] = a * layer + (1.0 - a) * region

    img = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
    if cfg.blur > 0:
        img = img.filter(ImageFilter.GaussianBlur(cfg.blur))
    out = np.asarray(img).astype(np.float32)
    gain = rng.uniform(0.8, 1.15) * rng.uniform(0.95, 1.05, 3)
    out = out * gain.astype(np.float32) + np.float32(rng.uniform(-12, 12))
    if cfg.noise_level > 0:
        out += rng.normal(0.0, cfg.noise_level, out.shape).astype(np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8), areas
