"""The building blocks of a scene (:mod:`.scene`): the annotated polygon types, the colour palettes and
:class:`SceneBase`, the state and random helpers that every object family (:mod:`.scene_stuff`,
:mod:`.scene_street`, :mod:`.scene_vehicles`, :mod:`.scene_people`) builds on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .config import SceneConfig
from .geometry import Camera, Polygon

Colour = tuple[float, float, float]


@dataclass
class Detail:
    """Something painted inside an object (window, wheel, marking): never changes the labels."""

    polygon: Polygon
    colour: Colour
    kind: str = "fill"
    """``fill`` (opaque), ``line`` (outline of ``width`` px) or ``shade`` (darken by ``alpha``)."""
    width: int = 1
    alpha: float = 1.0


@dataclass
class SceneObject:
    """One annotated polygon plus how to paint it."""

    label: str
    polygon: Polygon
    colour: Colour
    depth: float = 0.0
    noise: float = 10.0
    """Amplitude of the low-frequency shading (0-255 scale)."""
    noise_cell: int = 16
    """Cell size (px) of the low-frequency shading."""
    grain: float = 4.0
    """Amplitude of the per-pixel texture."""
    gradient: float = 0.0
    """Brightness change from the top to the bottom of the object (0-255 scale)."""
    opacity: float = 1.0
    """Opacity of the base fill (details are always opaque): < 1 for see-through objects (bicycles)."""
    details: list[Detail] = field(default_factory=list)
    length: float = 0.0
    attached: list[SceneObject] = field(default_factory=list)
    """Polygons listed right after this one in ``polygons.json`` (e.g. a ``license plate``)."""
    """Extent in depth (metres) of vehicles, used to line them up."""


# ------------------------------------------------------------------------------------------ palettes
FACADES: list[Colour] = [
    (190, 172, 142),
    (132, 130, 128),
    (150, 84, 64),
    (212, 206, 196),
    (200, 182, 124),
    (92, 88, 84),
    (112, 122, 136),
    (172, 152, 132),
    (160, 160, 150),
    (120, 100, 90),
]
CAR_PAINT: list[Colour] = [
    (222, 222, 222),
    (28, 28, 34),
    (160, 164, 170),
    (98, 98, 104),
    (30, 40, 92),
    (150, 22, 26),
    (42, 72, 142),
    (42, 82, 52),
    (182, 162, 122),
    (120, 122, 110),
    (70, 60, 55),
]
BUS_PAINT: list[Colour] = [(220, 200, 40), (230, 230, 230), (170, 30, 30), (40, 80, 160), (60, 120, 90)]
TRAM_PAINT: list[Colour] = [(230, 230, 225), (210, 190, 50), (170, 40, 40), (50, 90, 150), (80, 140, 90)]
CLOTHES: list[Colour] = [
    (40, 40, 46),
    (52, 62, 92),
    (112, 112, 112),
    (162, 42, 42),
    (172, 152, 122),
    (62, 92, 62),
    (202, 202, 202),
    (92, 62, 42),
    (30, 50, 110),
    (150, 120, 60),
    (128, 64, 128),
]
SKIN: list[Colour] = [(232, 190, 160), (200, 150, 110), (150, 100, 70), (100, 66, 46)]
GREENS: list[Colour] = [
    (62, 92, 42),
    (82, 112, 52),
    (46, 72, 36),
    (102, 122, 62),
    (140, 122, 52),
    (70, 82, 50),
]
TERRAIN: list[Colour] = [(112, 132, 72), (132, 142, 82), (122, 102, 76), (96, 116, 66)]
SIGN: list[Colour] = [(200, 30, 30), (30, 70, 170), (230, 200, 40), (225, 225, 225)]


def scaled(colour: Colour, factor: float) -> Colour:
    """``colour`` with its brightness multiplied by ``factor``."""
    return (colour[0] * factor, colour[1] * factor, colour[2] * factor)


class SceneBase:
    """The state of one scene being drawn and the random helpers; the object families subclass it."""

    # laid out by SceneBuilder.build() and StuffBuilder.ground() before the objects are placed
    road: tuple[float, float]
    """x extent (metres) of the carriageway."""
    lane_w: float
    lanes: int
    walk: tuple[tuple[float, float], tuple[float, float]]
    """x extents of the left and right sidewalks."""
    build_line: tuple[float, float]
    terrain: tuple[tuple[float, float], tuple[float, float]]
    has_train: bool
    track_x: float
    zebra: tuple[float, float] | None
    road_obj: SceneObject
    walk_objs: list[SceneObject]

    def __init__(self, rng: np.random.Generator, width: int, height: int, cfg: SceneConfig) -> None:
        self.rng = rng
        self.cfg = cfg
        self.w, self.h = width, height
        self.cam = Camera(
            width=width,
            height=height,
            focal=width * self.u(0.95, 1.25) * cfg.zoom,
            horizon=height * self.u(0.36, 0.47),
            center_x=width * self.u(0.42, 0.58),
            height_m=self.u(1.25, 1.6),
        )
        self.background: list[SceneObject] = []
        self.street: list[SceneObject] = []
        self.front: list[SceneObject] = []
        self.z_far = 180.0
        self.z_near = 0.4

    # -------------------------------------------------------------------------------- random helpers
    def u(self, a: float, b: float) -> float:
        return float(self.rng.uniform(a, b))

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def pick(self, palette: list[Colour]) -> Colour:
        return palette[int(self.rng.integers(len(palette)))]

    def jitter(self, c: Colour, scale: float = 1.0) -> Colour:
        """Brightness shift plus a smaller hue shift, both bounded to 2 standard deviations."""
        sd = self.cfg.colour_jitter * scale
        d = np.clip(self.rng.normal(0.0, 0.6 * sd, 3), -1.2 * sd, 1.2 * sd) + float(
            np.clip(self.rng.normal(0.0, sd), -2 * sd, 2 * sd)
        )
        return (float(c[0] + d[0]), float(c[1] + d[1]), float(c[2] + d[2]))

    def ti(self, a: int, b: int) -> int:
        """Integer in ``[a, b]``."""
        return int(self.rng.integers(a, b + 1))

    def px_height(self, metres: float, z: float) -> float:
        return metres * self.cam.scale(z)
