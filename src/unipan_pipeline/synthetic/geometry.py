"""Small 2-D/3-D geometry helpers for the street-scene generator: a pinhole camera over a flat ground
plane, convex hulls, polygon clipping and shape templates.

World coordinates (metres): ``X`` to the right, ``Y`` up from the ground, ``Z`` forward (depth).
Image coordinates: ``x`` to the right, ``y`` down, in pixels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

Point = tuple[float, float]
Polygon = list[Point]


@dataclass(frozen=True)
class Camera:
    """A level pinhole camera at height ``height_m`` looking along ``+Z``.

    A ground point at depth ``Z`` appears ``f * height_m / Z`` pixels below the horizon row ``horizon``;
    an object of height ``h`` metres at that depth is ``f * h / Z`` pixels tall.
    """

    width: int
    height: int
    focal: float
    horizon: float
    center_x: float
    height_m: float

    def project(self, x: float, y: float, z: float) -> Point:
        """Image position of the world point ``(x, y, z)`` (``z`` must be positive)."""
        s = self.focal / z
        return (self.center_x + x * s, self.horizon + (self.height_m - y) * s)

    def scale(self, z: float) -> float:
        """Pixels per metre at depth ``z``."""
        return self.focal / z

    def depth_of_row(self, row: float) -> float:
        """Depth of the ground point seen at image row ``row`` (below the horizon)."""
        return self.focal * self.height_m / max(row - self.horizon, 1e-6)

    def ground_quad(self, x0: float, x1: float, z0: float, z1: float) -> Polygon:
        """Image polygon of the ground rectangle ``x0..x1`` x ``z0..z1``."""
        return [
            self.project(x0, 0.0, z1),
            self.project(x1, 0.0, z1),
            self.project(x1, 0.0, z0),
            self.project(x0, 0.0, z0),
        ]

    def vertical_quad(self, x: float, z0: float, z1: float, y0: float, y1: float) -> Polygon:
        """Image polygon of a vertical wall at lateral position ``x`` (parallel to the road)."""
        return [
            self.project(x, y1, z1),
            self.project(x, y1, z0),
            self.project(x, y0, z0),
            self.project(x, y0, z1),
        ]

    def frontal_quad(self, x0: float, x1: float, y0: float, y1: float, z: float) -> Polygon:
        """Image polygon of a rectangle facing the camera at depth ``z``."""
        return [
            self.project(x0, y1, z),
            self.project(x1, y1, z),
            self.project(x1, y0, z),
            self.project(x0, y0, z),
        ]

    def box_hull(self, corners: Sequence[tuple[float, float, float]]) -> Polygon:
        """Convex hull of the projections of 3-D points (silhouette of a box-like object)."""
        return convex_hull([self.project(*c) for c in corners])


def box_corners(
    cx: float,
    cz: float,
    width: float,
    length: float,
    heights: tuple[float, float],
    *,
    inset_x: float = 0.0,
    z_front: float | None = None,
    z_back: float | None = None,
) -> list[tuple[float, float, float]]:
    """The 8 corners of an axis-aligned box centred laterally at ``cx`` and in depth at ``cz``, spanning
    ``heights = (y0, y1)``."""
    hw = width / 2 - inset_x
    za = cz - length / 2 if z_front is None else z_front
    zb = cz + length / 2 if z_back is None else z_back
    return [(cx + sx * hw, y, z) for sx in (-1, 1) for y in heights for z in (za, zb)]


def convex_hull(points: Sequence[Point]) -> Polygon:
    """Andrew's monotone chain convex hull, counter-clockwise, without repeated points."""
    pts = sorted(set(points))
    if len(pts) <= 2:
        return list(pts)

    def cross(o: Point, a: Point, b: Point) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: Polygon = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    upper: Polygon = []
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return lower[:-1] + upper[:-1]


def clip_polygon(poly: Sequence[Point], x0: float, y0: float, x1: float, y1: float) -> Polygon:
    """Sutherland-Hodgman clipping of ``poly`` to the rectangle ``[x0, x1] x [y0, y1]``."""

    def clip(
        points: Polygon, inside: Callable[[Point], bool], intersect: Callable[[Point, Point], Point]
    ) -> Polygon:
        out: Polygon = []
        n = len(points)
        for i in range(n):
            cur, prev = points[i], points[i - 1]
            if inside(cur):
                if not inside(prev):
                    out.append(intersect(prev, cur))
                out.append(cur)
            elif inside(prev):
                out.append(intersect(prev, cur))
        return out

    def at_x(xc: float) -> Callable[[Point, Point], Point]:
        def f(a: Point, b: Point) -> Point:
            t = (xc - a[0]) / (b[0] - a[0])
            return (xc, a[1] + t * (b[1] - a[1]))

        return f

    def at_y(yc: float) -> Callable[[Point, Point], Point]:
        def f(a: Point, b: Point) -> Point:
            t = (yc - a[1]) / (b[1] - a[1])
            return (a[0] + t * (b[0] - a[0]), yc)

        return f

    pts: Polygon = list(poly)
    for inside, inter in (
        (lambda p: p[0] >= x0, at_x(x0)),
        (lambda p: p[0] <= x1, at_x(x1)),
        (lambda p: p[1] >= y0, at_y(y0)),
        (lambda p: p[1] <= y1, at_y(y1)),
    ):
        if not pts:
            break
        pts = clip(pts, inside, inter)
    return pts


def to_int_polygon(poly: Sequence[Point], width: int, height: int) -> list[tuple[int, int]]:
    """Clip to the image, round to integer pixels (as Cityscapes' polygons are) and drop repeats."""
    clipped = clip_polygon(poly, 0.0, 0.0, float(width - 1), float(height - 1))
    out: list[tuple[int, int]] = []
    for x, y in clipped:
        p = (min(max(round(x), 0), width - 1), min(max(round(y), 0), height - 1))
        if not out or out[-1] != p:
            out.append(p)
    if len(out) > 1 and out[0] == out[-1]:
        out.pop()
    return out


def circle(
    cx: float, cy: float, rx: float, ry: float | None = None, *, n: int = 12, phase: float = 0.0
) -> Polygon:
    """A regular ``n``-gon approximating an ellipse."""
    ry = rx if ry is None else ry
    return [
        (cx + rx * math.cos(phase + 2 * math.pi * k / n), cy + ry * math.sin(phase + 2 * math.pi * k / n))
        for k in range(n)
    ]


def place(template: Sequence[Point], x: float, y: float, scale: float, mirror: bool = False) -> Polygon:
    """Place a template given in metres (``x`` right, ``y`` up, origin on the ground) at image point
    ``(x, y)`` with ``scale`` pixels per metre."""
    sx = -scale if mirror else scale
    return [(x + px * sx, y - py * scale) for px, py in template]


# --------------------------------------------------------------------------- silhouette templates (metres)
def person_template(height: float, width_factor: float, stride: float, arms: float) -> Polygon:
    """Front/back view of a standing or walking pedestrian, feet at the origin."""
    h = height
    sw, hw = 0.24 * width_factor, 0.17 * width_factor
    s = stride
    pts = [
        (-hw - s, 0.0),
        (-0.03 - 0.3 * s, 0.0),
        (0.0, 0.45),
        (0.03 + 0.3 * s, 0.0),
        (hw + s, 0.0),
        (hw, 0.48),
        (sw + arms + 0.02, 0.42),
        (sw - 0.03 + arms, 0.42),
        (sw - 0.07, 0.62),
        (sw, 0.79),
        (0.07, 0.835),
        (0.065, 0.875),
        (0.075, 0.93),
        (0.055, 0.975),
        (0.0, 1.0),
        (-0.055, 0.975),
        (-0.075, 0.93),
        (-0.065, 0.875),
        (-0.07, 0.835),
        (-sw, 0.79),
        (-sw + 0.07, 0.62),
        (-sw + 0.03 - arms, 0.42),
        (-sw - arms - 0.02, 0.42),
        (-hw, 0.48),
    ]
    return [(x * h / 1.75, y * h) for x, y in pts]


def side_person_template(height: float, stride: float) -> Polygon:
    """Side view of a walking pedestrian facing ``+x``, feet at the origin."""
    h = height
    s = stride
    pts = [
        (-0.10 - s, 0.0),
        (-0.02 - s, 0.0),
        (0.0, 0.40),
        (0.06 + s, 0.0),
        (0.16 + s, 0.0),
        (0.07, 0.47),
        (0.10, 0.62),
        (0.11, 0.78),
        (0.06, 0.83),
        (0.075, 0.9),
        (0.06, 0.975),
        (0.0, 1.0),
        (-0.06, 0.975),
        (-0.07, 0.9),
        (-0.05, 0.83),
        (-0.11, 0.78),
        (-0.11, 0.55),
        (-0.08, 0.47),
    ]
    return [(x * h, y * h) for x, y in pts]


def bicycle_side_template(motor: bool) -> Polygon:
    """Side view of a bicycle (or motorcycle) facing ``+x``, contact points around the origin."""
    r = 0.31 if motor else 0.34
    base = 0.70 if motor else 0.54
    rear, front = -base, base

    def arc(cx: float, a0: float, a1: float, n: int) -> Polygon:
        return [
            (
                cx + r * math.cos(math.radians(a0 + (a1 - a0) * k / n)),
                r + r * math.sin(math.radians(a0 + (a1 - a0) * k / n)),
            )
            for k in range(n + 1)
        ]

    pts = arc(rear, 90, 300, 7) + arc(front, 240, 450, 7)
    if motor:
        pts += [
            (front - 0.05, 0.98),
            (front - 0.12, 1.08),
            (front - 0.2, 1.02),
            (0.25, 0.92),
            (-0.1, 0.86),
            (-0.55, 0.88),
            (-0.8, 0.8),
            (rear - 0.05, 0.68),
        ]
    else:
        pts += [
            (front - 0.06, 0.95),
            (front - 0.1, 1.03),
            (front - 0.2, 1.0),
            (front - 0.14, 0.93),
            (-0.12, 0.84),
            (-0.18, 0.92),
            (-0.36, 0.94),
            (-0.34, 0.88),
            (-0.24, 0.84),
            (-0.05, 0.36),
            (-0.3, 0.42),
        ]
    return pts


def bicycle_rear_template(motor: bool) -> Polygon:
    """Rear view of a bicycle/motorcycle: thin wheel, wider handlebar."""
    t = 0.16 if motor else 0.035
    bar = 0.4 if motor else 0.3
    top = 1.05 if motor else 1.0
    body = 0.28 if motor else t
    return [
        (-t, 0.0),
        (t, 0.0),
        (t, 0.3),
        (body, 0.45),
        (body, 0.78),
        (bar, top - 0.08),
        (bar, top),
        (-bar, top),
        (-bar, top - 0.08),
        (-body, 0.78),
        (-body, 0.45),
        (-t, 0.3),
    ]


def rider_side_template(seat: float) -> Polygon:
    """A seated rider facing ``+x``; ``seat`` is the seat height in metres."""
    d = seat - 0.92
    pts = [
        (-0.36, 0.92),
        (-0.31, 1.12),
        (-0.17, 1.48),
        (-0.06, 1.58),
        (-0.08, 1.66),
        (-0.04, 1.76),
        (0.04, 1.79),
        (0.11, 1.74),
        (0.12, 1.64),
        (0.07, 1.57),
        (0.13, 1.44),
        (0.40, 1.07),
        (0.38, 0.99),
        (0.14, 1.27),
        (0.09, 1.14),
        (0.22, 0.86),
        (0.24, 0.72),
        (0.10, 0.31),
        (0.15, 0.27),
        (-0.02, 0.26),
        (0.07, 0.70),
        (-0.2, 0.84),
    ]
    return [(x, y + d if y > 0.5 else y + 0.3 * d) for x, y in pts]
