"""Procedural composition of one street scene as an ordered list of labelled polygons.

A scene is built in a simple 3-D world (flat ground, pinhole camera, see :mod:`.geometry`) and returned
back to front, exactly as Cityscapes' ``polygons.json`` lists its objects: later polygons overwrite
earlier ones when rasterised. Every polygon carries a Cityscapes label name (``cityscapesscripts``'
``labels``; ``...group`` for crowd regions) and painting hints (colour, texture, details) used by
:mod:`.paint` to render the photograph, so that picture and ground truth agree pixel for pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .config import SceneConfig
from .geometry import (
    Camera,
    Point,
    Polygon,
    bicycle_rear_template,
    bicycle_side_template,
    box_corners,
    circle,
    convex_hull,
    person_template,
    place,
    rider_side_template,
    side_person_template,
)

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


class SceneBuilder:
    """Draws one random scene. Use :func:`compose_scene`."""

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

    # ------------------------------------------------------------------------------------- the scene
    def build(self) -> list[SceneObject]:
        """Compose the whole scene; returns the objects back to front."""
        lanes = self.ti(2, 4)
        lane_w = self.u(3.0, 3.6)
        half = lanes * lane_w / 2
        x0 = self.u(-0.45, 0.45) * half
        self.road = (x0 - half, x0 + half)
        self.lane_w, self.lanes = lane_w, lanes
        sl, sr = self.u(2.0, 5.0), self.u(2.0, 5.0)
        tl = self.u(1.5, 6.0) if self.chance(0.5) else 0.0
        tr = self.u(1.5, 6.0) if self.chance(0.5) else 0.0
        self.walk = ((self.road[0] - sl, self.road[0]), (self.road[1], self.road[1] + sr))
        self.build_line = (self.road[0] - sl - tl, self.road[1] + sr + tr)
        self.terrain = ((self.build_line[0], self.walk[0][0]), (self.walk[1][1], self.build_line[1]))
        self.has_train = self.chance(self.cfg.train_prob)
        self.track_x = x0 + (self.u(-0.3, 0.3) * lane_w if lanes >= 3 else 0.0)
        self.zebra = (self.u(8.0, 30.0), self.u(3.0, 4.5)) if self.chance(0.35) else None

        self.sky()
        self.backdrop()
        self.ground()
        for side in (-1, 1):
            self.side_blocks(side)
        for side in (-1, 1):
            self.trees(side)
            self.poles(side)
            self.fences(side)
            self.parked_cars(side)
        self.moving_traffic()
        if self.has_train:
            self.tram()
        self.pedestrians()
        self.two_wheelers()
        self.crowds()
        if self.chance(self.cfg.void_prob):
            self.street_furniture()
        if self.chance(self.cfg.void_prob * 0.6):
            self.ego_vehicle()
        self.street = [o for o in self.street if o.depth <= self.cfg.max_depth]
        self.shadows()
        self.street.sort(key=lambda o: -o.depth)  # stable: objects at equal depth keep their order
        street = [part for obj in self.street for part in (obj, *obj.attached)]
        return self.background + street + self.front

    # ------------------------------------------------------------------------------------ stuff
    def sky(self) -> None:
        overcast = self.chance(0.5)
        top = self.jitter((176, 182, 190) if overcast else (96, 140, 196), 0.7)
        self.background.append(
            SceneObject(
                "sky",
                [(0, 0), (self.w - 1, 0), (self.w - 1, self.cam.horizon + 4), (0, self.cam.horizon + 4)],
                top,
                noise=14 if overcast else 6,
                noise_cell=max(8, self.w // 10),
                grain=1.5,
                gradient=45 if not overcast else 25,
            )
        )

    def backdrop(self) -> None:
        """Buildings and trees closing the street far away."""
        z = self.u(90.0, 160.0)
        x = -z * 0.9
        while x < z * 0.9:
            wd = self.u(8, 22)
            if self.chance(0.25):
                crown = [self.cam.project(x + wd * k / 10, self.u(4, 10), z) for k in range(11)]
                poly = [self.cam.project(x, 0, z), *crown, self.cam.project(x + wd, 0, z)]
                self.background.append(
                    SceneObject(
                        "vegetation", poly, self.jitter(self.pick(GREENS)), noise=10, noise_cell=3, grain=8
                    )
                )
            else:
                hgt = self.u(8, 30)
                poly = self.cam.frontal_quad(x, x + wd, 0, hgt, z)
                obj = SceneObject(
                    "building", poly, self.jitter(self.pick(FACADES)), noise=6, grain=3, gradient=-10
                )
                self.windows_frontal(obj, x, x + wd, hgt, z)
                self.background.append(obj)
            x += wd

    def ground(self) -> None:
        cam, zf, zn = self.cam, self.z_far, self.z_near
        road_col = self.jitter((96, 96, 100), 0.8)
        walk_col = self.jitter(
            self.pick([(150, 140, 136), (166, 150, 146), (132, 128, 126), (176, 120, 110)]), 0.8
        )
        for (a, b), (ta, tb) in zip(self.walk, self.terrain, strict=True):
            if tb > ta:
                t = SceneObject(
                    "terrain",
                    cam.ground_quad(ta - 0.5, tb + 0.5, zn, zf),
                    self.jitter(self.pick(TERRAIN)),
                    noise=14,
                    noise_cell=6,
                    grain=9,
                )
                self.background.append(t)
            sw = SceneObject(
                "sidewalk",
                cam.ground_quad(a - (0.5 if tb <= ta else 0.0), b, zn, zf),
                walk_col,
                noise=10,
                noise_cell=12,
                grain=6,
                gradient=8,
            )
            self.paving(sw, a, b)
            self.background.append(sw)
        road = SceneObject(
            "road",
            cam.ground_quad(*self.road, zn, zf),
            road_col,
            noise=10,
            noise_cell=20,
            grain=7,
            gradient=12,
        )
        self.markings(road)
        self.background.append(road)
        self.road_obj = road
        self.walk_objs = [o for o in self.background if o.label == "sidewalk"]
        if self.chance(self.cfg.void_prob):
            side = self.ti(0, 1)
            x_edge = self.road[side]
            xs = (x_edge, x_edge + 2.3) if side == 0 else (x_edge - 2.3, x_edge)
            z0 = self.u(2, 20)
            park = SceneObject(
                self.pick_label(["parking", "parking", "ground"]),
                cam.ground_quad(*xs, z0, z0 + self.u(10, 40)),
                self.jitter((120, 112, 110)),
                noise=8,
                grain=6,
            )
            self.background.append(park)
        if self.has_train:
            tx = self.track_x
            track = SceneObject(
                "rail track",
                cam.ground_quad(tx - 1.2, tx + 1.2, zn, zf),
                self.jitter((90, 84, 80)),
                noise=8,
                grain=10,
            )
            for rx in (tx - 0.72, tx + 0.72):
                track.details.append(Detail(cam.ground_quad(rx - 0.04, rx + 0.04, zn, zf), (150, 150, 155)))
            self.background.append(track)

    def pick_label(self, names: list[str]) -> str:
        return names[int(self.rng.integers(len(names)))]

    def paving(self, obj: SceneObject, a: float, b: float) -> None:
        cam = self.cam
        dark = scaled(obj.colour, 0.8)
        step = self.u(0.6, 1.2)
        z = self.z_near + step
        while z < self.z_far and cam.scale(z) * step > 3:
            obj.details.append(Detail(cam.ground_quad(a, b, z, z + 0.03 * z / 5 + 0.02), dark))
            z += step
        kerb = a if a > self.road[0] - 1e-6 else b
        kerb_col = self.jitter((185, 182, 178), 0.5)
        obj.details.append(
            Detail(self.cam.ground_quad(kerb - 0.15, kerb + 0.15, self.z_near, self.z_far), kerb_col)
        )

    def markings(self, road: SceneObject) -> None:
        cam = self.cam
        white = self.jitter((225, 225, 220), 0.4)
        l, r = self.road
        for xe in (l + 0.3, r - 0.3):
            road.details.append(Detail(cam.ground_quad(xe - 0.08, xe + 0.08, self.z_near, self.z_far), white))
        dash, period = self.u(2.5, 4.0), self.u(8.0, 12.0)
        for k in range(1, self.lanes):
            xm = l + k * self.lane_w
            z = self.u(0, period)
            while z < self.z_far * 0.6:
                road.details.append(Detail(cam.ground_quad(xm - 0.07, xm + 0.07, z, z + dash), white))
                z += period
        if self.zebra:
            zc, depth = self.zebra
            x = l + 0.5
            while x < r - 0.5:
                road.details.append(Detail(cam.ground_quad(x, x + 0.5, zc, zc + depth), white))
                x += 1.0
        for _ in range(self.ti(0, 4)):  # asphalt patches
            xa = self.u(l, r - 1)
            za = self.u(3, 40)
            road.details.append(
                Detail(
                    cam.ground_quad(xa, xa + self.u(0.5, 3), za, za + self.u(0.5, 4)),
                    scaled(road.colour, self.u(0.75, 1.1)),
                )
            )

    def windows_frontal(self, obj: SceneObject, x0: float, x1: float, hgt: float, z: float) -> None:
        cam = self.cam
        if cam.scale(z) * 1.2 < 1.5:
            return
        glass = self.jitter((60, 66, 76), 0.5)
        y = 1.2
        while y + 1.5 < hgt:
            x = x0 + 0.8
            while x + 1.2 < x1:
                obj.details.append(
                    Detail(cam.frontal_quad(x, x + 1.1, y, y + 1.4, z), self.jitter(glass, 0.6))
                )
                x += 2.4
            y += 3.1

    def side_blocks(self, side: int) -> None:
        """Building facades (or hedges/parks) along one side of the street, far to near."""
        cam = self.cam
        xb = self.build_line[0] if side < 0 else self.build_line[1]
        z = self.z_far
        blocks: list[SceneObject] = []
        while z > self.z_near:
            length = self.u(8, 28)
            za = max(z - length, self.z_near)
            if self.chance(0.18):
                # a hedge / park instead of a house
                hgt = self.u(2.5, 9)
                top = [cam.project(xb, hgt * self.u(0.7, 1.0), za + (z - za) * k / 8) for k in range(9)]
                poly = [cam.project(xb, 0, za), *top, cam.project(xb, 0, z)]
                blocks.append(
                    SceneObject(
                        "vegetation", poly, self.jitter(self.pick(GREENS)), noise=14, noise_cell=4, grain=12
                    )
                )
                if self.chance(0.6):  # facade visible behind the greenery
                    back = SceneObject(
                        "building",
                        cam.vertical_quad(xb - side * 0.01, za, z, hgt, hgt + self.u(4, 15)),
                        self.jitter(self.pick(FACADES)),
                        noise=6,
                        grain=3,
                    )
                    blocks.insert(len(blocks) - 1, back)
            else:
                hgt = self.u(7, 26)
                col = self.jitter(self.pick(FACADES))
                obj = SceneObject(
                    "building",
                    cam.vertical_quad(xb, za, z, 0, hgt),
                    col,
                    noise=8,
                    noise_cell=10,
                    grain=4,
                    gradient=-12,
                )
                self.facade_windows(obj, xb, za, z, hgt)
                blocks.append(obj)
            z = za
        self.background.extend(blocks)

    def facade_windows(self, obj: SceneObject, xb: float, za: float, zb: float, hgt: float) -> None:
        cam = self.cam
        glass = self.jitter(self.pick([(58, 64, 76), (84, 94, 110), (40, 42, 48)]), 0.5)
        frame = scaled(obj.colour, 0.85)
        floor, spacing = self.u(2.9, 3.4), self.u(2.2, 3.2)
        ww, wh = self.u(0.9, 1.4), self.u(1.2, 1.7)
        # ground floor: shop windows and doors
        z = za + 0.5
        while z + 2.0 < zb:
            if cam.scale(z) * 2 < 1.0:
                break
            obj.details.append(
                Detail(cam.vertical_quad(xb, z, z + self.u(1.5, 3.0), 0.3, 2.5), self.jitter(glass, 0.8))
            )
            z += self.u(3.0, 5.0)
        z = za + 0.6
        while z + ww < zb:
            if cam.scale(z + ww) * ww < 1.2:
                break
            y = floor + 0.9
            while y + wh < hgt - 0.5:
                obj.details.append(
                    Detail(cam.vertical_quad(xb, z - 0.08, z + ww + 0.08, y - 0.1, y + wh + 0.1), frame)
                )
                obj.details.append(
                    Detail(cam.vertical_quad(xb, z, z + ww, y, y + wh), self.jitter(glass, 0.7))
                )
                y += floor
            z += spacing
        roof = scaled(obj.colour, 0.7)
        obj.details.append(Detail(cam.vertical_quad(xb, za, zb, hgt - 0.4, hgt), roof))

    # ------------------------------------------------------------------------------ street objects
    def kerb_x(self, side: int, offset: float) -> float:
        """Lateral position ``offset`` metres onto the sidewalk from the kerb of ``side``."""
        return self.road[0] - offset if side < 0 else self.road[1] + offset

    def trees(self, side: int) -> None:
        cam = self.cam
        for _ in range(self.ti(0, 5)):
            z = self.u(3, 90)
            x = self.kerb_x(side, self.u(0.8, 1.6))
            trunk_h, r = self.u(2.0, 3.5), self.u(1.4, 3.0)
            tw = self.u(0.2, 0.4)
            bark = self.jitter((74, 60, 48))
            self.street.append(
                SceneObject(
                    "vegetation",
                    cam.frontal_quad(x - tw / 2, x + tw / 2, 0, trunk_h + r * 0.5, z),
                    bark,
                    depth=z,
                    noise=6,
                    noise_cell=4,
                    grain=6,
                )
            )
            cy = trunk_h + r * 0.8
            n = 18
            blob = []
            for k in range(n):
                a = 2 * math.pi * k / n
                rr = r * self.u(0.75, 1.1)
                blob.append(cam.project(x + rr * math.cos(a), cy + rr * math.sin(a) * 0.9, z))
            self.street.append(
                SceneObject(
                    "vegetation",
                    blob,
                    self.jitter(self.pick(GREENS)),
                    depth=z - 0.01,
                    noise=18,
                    noise_cell=3,
                    grain=14,
                    gradient=-20,
                )
            )

    def poles(self, side: int) -> None:
        cam = self.cam
        for _ in range(self.ti(1, 5)):
            z = self.u(2.5, 90)
            x = self.kerb_x(side, self.u(0.3, 0.6))
            hgt, pw = self.u(3.5, 9.0), self.u(0.1, 0.25)
            grey = self.jitter(self.pick([(120, 122, 126), (80, 84, 80), (150, 150, 146)]), 0.6)
            self.street.append(
                SceneObject(
                    "pole",
                    cam.frontal_quad(x - pw / 2, x + pw / 2, 0, hgt, z),
                    grey,
                    depth=z,
                    noise=4,
                    grain=3,
                    gradient=-15,
                )
            )
            if self.chance(self.cfg.sign_prob):
                self.sign(x, z - 0.05, self.u(2.0, min(hgt, 3.4)))
            if self.chance(self.cfg.traffic_light_prob):
                if hgt > 5.5 and self.chance(0.5):  # light on an arm over the road
                    arm = self.u(2.5, 5.0)
                    xa = x - side * arm
                    y = hgt - 0.3
                    self.street.append(
                        SceneObject(
                            "pole",
                            cam.frontal_quad(min(x, xa), max(x, xa), y - 0.12, y, z - 0.02),
                            grey,
                            depth=z - 0.02,
                            noise=3,
                            grain=2,
                        )
                    )
                    self.traffic_light(xa, y - 0.1, z - 0.04)
                else:
                    self.traffic_light(x, min(hgt, self.u(2.4, 4.0)), z - 0.04)

    def sign(self, x: float, z: float, y: float) -> None:
        cam = self.cam
        s = self.u(0.5, 0.9)
        shape = self.ti(0, 3)
        if shape == 0:
            poly = [cam.project(x + px * s / 2, y + py * s / 2, z) for px, py in circle(0, 0, 1, n=10)]
        elif shape == 1:
            poly = [
                cam.project(x + px, y + py, z)
                for px, py in [(-s / 2, s * 0.4), (s / 2, s * 0.4), (0, -s * 0.5)]
            ]
        elif shape == 2:
            poly = cam.frontal_quad(x - s / 2, x + s / 2, y - s * 0.35, y + s * 0.35, z)
        else:
            poly = [
                cam.project(x + px, y + py, z)
                for px, py in [(0, s / 2), (s / 2, 0), (0, -s / 2), (-s / 2, 0)]
            ]
        back = self.chance(0.25)
        col = self.jitter((150, 150, 150) if back else self.pick(SIGN), 0.6)
        obj = SceneObject("traffic sign", poly, col, depth=z, noise=4, grain=3)
        if not back and shape in (0, 1):
            c = self.cam.project(x, y, z)
            k = self.cam.scale(z) * s * 0.28
            obj.details.append(Detail(circle(c[0], c[1], k, n=10), (230, 230, 230)))
        self.street.append(obj)

    def traffic_light(self, x: float, y: float, z: float) -> None:
        cam = self.cam
        wd, hg = self.u(0.28, 0.4), self.u(0.8, 1.0)
        obj = SceneObject(
            "traffic light",
            cam.frontal_quad(x - wd / 2, x + wd / 2, y - hg, y, z),
            self.jitter((40, 42, 40), 0.5),
            depth=z,
            noise=3,
            grain=3,
        )
        lit = self.ti(0, 2)
        for k, col in enumerate([(230, 40, 30), (240, 180, 30), (40, 220, 90)]):
            c = cam.project(x, y - hg * (0.2 + 0.3 * k), z)
            r = cam.scale(z) * wd * 0.3
            obj.details.append(Detail(circle(c[0], c[1], r, n=8), col if k == lit else (70, 70, 66)))
        self.street.append(obj)

    def fences(self, side: int) -> None:
        cam = self.cam
        for _ in range(self.ti(0, 2)):
            if not self.chance(self.cfg.fence_prob):
                continue
            wall = self.chance(self.cfg.wall_share)
            x = (self.build_line[0] if side < 0 else self.build_line[1]) + side * -0.3
            if self.terrain[0 if side < 0 else 1][1] > self.terrain[0 if side < 0 else 1][0] and self.chance(
                0.5
            ):
                x = self.walk[0][0] if side < 0 else self.walk[1][1]
            za = self.u(2, 60)
            zb = za + self.u(4, 30)
            hgt = self.u(0.8, 2.2)
            if wall:
                col = self.jitter(self.pick([(150, 146, 140), (112, 108, 104), (170, 160, 140)]))
                obj = SceneObject(
                    "wall",
                    cam.vertical_quad(x, za, zb, 0, hgt),
                    col,
                    depth=za,
                    noise=10,
                    noise_cell=6,
                    grain=6,
                )
                obj.details.append(Detail(cam.vertical_quad(x, za, zb, hgt - 0.12, hgt), scaled(col, 0.8)))
            else:
                col = self.jitter(self.pick([(110, 110, 100), (90, 120, 90), (140, 120, 90)]))
                obj = SceneObject(
                    "fence",
                    cam.vertical_quad(x, za, zb, 0, hgt),
                    col,
                    depth=za,
                    noise=8,
                    grain=10,
                    opacity=0.35,
                )
                step = self.u(0.15, 0.4)
                z = za
                while z < zb and cam.scale(z) * step > 2.0:
                    obj.details.append(
                        Detail([cam.project(x, 0, z), cam.project(x, hgt, z)], col, kind="line", width=1)
                    )
                    z += step
                for yy in (0.05, hgt * 0.5, hgt - 0.05):
                    obj.details.append(
                        Detail([cam.project(x, yy, za), cam.project(x, yy, zb)], col, kind="line", width=1)
                    )
            self.street.append(obj)

    # ------------------------------------------------------------------------------------ vehicles
    def vehicle(
        self,
        label: str,
        cx: float,
        z_front: float,
        facing_camera: bool,
        *,
        colour: Colour | None = None,
        dims: tuple[float, float, float] | None = None,
    ) -> SceneObject | None:
        """A car / truck / bus / train as the silhouette of its 3-D body, with painted details."""
        cam = self.cam
        rng_dims = {
            "car": (self.u(1.65, 1.9), self.u(3.8, 4.9), self.u(1.4, 1.65)),
            "truck": (self.u(2.2, 2.55), self.u(5.5, 9.0), self.u(2.6, 3.8)),
            "bus": (2.55, self.u(10.5, 13.0), self.u(3.0, 3.3)),
            "train": (2.65, self.u(22.0, 36.0), self.u(3.3, 3.6)),
        }
        w, l, h = dims or rng_dims[label]
        if self.px_height(h, z_front) < self.cfg.min_object_px:
            return None
        zc = z_front + l / 2
        zb = z_front + l
        if label == "car":
            belt = h * self.u(0.56, 0.64)
            c0, c1 = (z_front + 0.8, zb - 1.4) if not facing_camera else (z_front + 1.3, zb - 0.7)
            pts = box_corners(cx, zc, w, l, (0.05, belt)) + box_corners(
                cx, zc, w, l, (h, h), inset_x=0.16, z_front=c0 + 0.3, z_back=c1 - 0.3
            )
            pts += box_corners(
                cx, zc, w, l, (0.0, 0.0), inset_x=0.12, z_front=z_front + 0.35, z_back=zb - 0.35
            )
        elif label == "truck":
            cab = self.u(1.8, 2.3)
            box_h = h
            cab_h = h * self.u(0.75, 0.9)
            pts = box_corners(cx, zc, w, l, (0.0, cab_h), z_front=z_front, z_back=zb)
            pts += box_corners(
                cx,
                zc,
                w,
                l,
                (0.0, box_h),
                z_front=(z_front + cab + 0.2) if facing_camera else z_front,
                z_back=zb if facing_camera else zb - cab - 0.2,
            )
        else:
            pts = box_corners(cx, zc, w, l, (0.0, h))
        hull = cam.box_hull(pts)
        colour = colour or self.jitter(
            self.pick(
                {"car": CAR_PAINT, "truck": CAR_PAINT + BUS_PAINT, "bus": BUS_PAINT, "train": TRAM_PAINT}[
                    label
                ]
            )
        )
        obj = SceneObject(
            label, hull, colour, depth=z_front, noise=8, noise_cell=8, grain=3, gradient=-18, length=l
        )
        side_x = None
        if cx - w / 2 > 0:
            side_x = cx - w / 2
        elif cx + w / 2 < 0:
            side_x = cx + w / 2
        glass = self.jitter((44, 50, 60), 0.5)
        dark = (24, 24, 26)
        if label == "car":
            glass_pts = box_corners(
                cx, zc, w, l, (belt + 0.04, belt + 0.04), inset_x=0.05, z_front=c0 - 0.1, z_back=c1 + 0.1
            )
            glass_pts += box_corners(
                cx, zc, w, l, (h - 0.07, h - 0.07), inset_x=0.2, z_front=c0 + 0.35, z_back=c1 - 0.35
            )
            obj.details.append(Detail(cam.box_hull(glass_pts), glass))
        elif label == "truck" and facing_camera:
            obj.details.append(
                Detail(
                    cam.frontal_quad(
                        cx - w / 2 + 0.15, cx + w / 2 - 0.15, cab_h * 0.55, cab_h * 0.9, z_front
                    ),
                    glass,
                )
            )
        elif label == "truck":  # cargo box seen from behind: doors and bumper
            seam = scaled(colour, 0.6)
            obj.details.append(Detail(cam.frontal_quad(cx - 0.03, cx + 0.03, 0.55, h - 0.15, z_front), seam))
            obj.details.append(
                Detail(cam.frontal_quad(cx - w / 2, cx + w / 2, 0.2, 0.5, z_front), (35, 35, 38))
            )
            obj.details.append(
                Detail(
                    cam.frontal_quad(cx - w / 2 + 0.05, cx + w / 2 - 0.05, 0.5, h - 0.08, z_front),
                    seam,
                    kind="line",
                )
            )
        elif label in ("bus", "train"):
            obj.details.append(
                Detail(cam.frontal_quad(cx - w / 2 + 0.12, cx + w / 2 - 0.12, 1.1, h - 0.35, z_front), glass)
            )
            if side_x is not None:
                obj.details.append(
                    Detail(cam.vertical_quad(side_x, z_front + 0.6, zb - 0.6, 1.2, h - 0.5), glass)
                )
                step = 1.6 if label == "bus" else 2.2
                z = z_front + 0.6 + step
                while z < zb - 0.6 and cam.scale(z) * 0.1 > 0.5:
                    obj.details.append(Detail(cam.vertical_quad(side_x, z, z + 0.12, 1.2, h - 0.5), colour))
                    z += step
        # wheels on the visible side
        if side_x is not None:
            r = 0.33 if label == "car" else 0.5
            axles = [z_front + 0.8, zb - 0.8] if label != "train" else [z_front + 2.5, zb - 2.5]
            for za in axles:
                ring = [
                    cam.project(side_x, r + r * math.sin(a), za + r * math.cos(a))
                    for a in np.linspace(0, 2 * math.pi, 12, endpoint=False)
                ]
                obj.details.append(Detail(ring, dark))
        # lights and plate on the near face
        light = (235, 235, 210) if facing_camera else (190, 30, 30)
        yl = 0.75 if label == "car" else 0.9
        for s in (-1, 1):
            xl = cx + s * (w / 2 - 0.2)
            obj.details.append(Detail(cam.frontal_quad(xl - 0.13, xl + 0.13, yl, yl + 0.14, z_front), light))
        if label != "train":
            plate = cam.frontal_quad(cx - 0.26, cx + 0.26, 0.35, 0.46, z_front)
            if cam.scale(z_front) * 0.52 >= 8:  # annotated like Cityscapes: label id -1, never rasterised
                obj.attached.append(
                    SceneObject("license plate", plate, (215, 215, 210), depth=z_front, noise=2, grain=2)
                )
            else:
                obj.details.append(Detail(plate, (215, 215, 210)))
        obj.details.append(
            Detail(
                cam.frontal_quad(cx - w / 2, cx + w / 2, 0.0, 0.25, z_front),
                (30, 30, 32),
                kind="shade",
                alpha=0.5,
            )
        )
        return obj

    def parked_cars(self, side: int) -> None:
        if not self.chance(self.cfg.parked_row_prob):
            return
        x = self.road[0] + 1.05 if side < 0 else self.road[1] - 1.05
        z = self.u(1.5, 25.0)
        for _ in range(self.ti(1, self.cfg.max_row_length)):
            if self.count("car") >= self.cfg.max_cars:
                break
            label = "truck" if self.chance(0.07) else "car"
            dims = (self.u(1.9, 2.1), self.u(4.8, 5.6), self.u(2.1, 2.6)) if label == "truck" else None
            obj = self.vehicle(label, x + self.u(-0.15, 0.15), z, self.chance(0.5), dims=dims)
            if obj is None:
                break
            self.street.append(obj)
            gap = self.u(0.2, 0.9) if self.chance(self.cfg.overlap_prob) else self.u(1.5, 8.0)
            z += obj.length + gap

    def count(self, label: str) -> int:
        return sum(o.label == label for o in self.street)

    def lane_centres(self) -> list[float]:
        l = self.road[0]
        out = [l + (k + 0.5) * self.lane_w for k in range(self.lanes)]
        if self.has_train:
            out = [x for x in out if abs(x - self.track_x) > 2.2]
        return out

    def moving_traffic(self) -> None:
        lanes = self.lane_centres()
        if not lanes:
            return
        occupied: list[tuple[float, float, float]] = []
        wanted = self.ti(0, self.cfg.max_moving_vehicles)
        extra = []
        if self.chance(self.cfg.bus_prob):
            extra.append("bus")
        if self.chance(self.cfg.truck_prob):
            extra.append("truck")
        kinds = extra + ["car"] * wanted
        for label in kinds:
            if label == "car" and self.count("car") >= self.cfg.max_cars:
                continue
            for _ in range(6):
                x = lanes[self.ti(0, len(lanes) - 1)] + self.u(-0.4, 0.4)
                z = self.u(4.0, 70.0)
                length = {"car": 5.0, "truck": 9.0, "bus": 13.0}[label]
                if all(
                    abs(x - ox) > 2.2 or z + length + 1 < oz or z > oz + ol + 1 for ox, oz, ol in occupied
                ):
                    oncoming = x < 0 and self.lanes >= 2 and x < self.road[0] + self.lanes * self.lane_w / 2
                    obj = self.vehicle(label, x, z, oncoming)
                    if obj is not None:
                        self.street.append(obj)
                        occupied.append((x, z, length))
                    break

    def tram(self) -> None:
        z = self.u(5.0, 45.0)
        obj = self.vehicle("train", self.track_x, z, self.chance(0.5))
        if obj is not None:
            self.street.append(obj)

    # ------------------------------------------------------------------------------------ people
    def person(
        self,
        x: float,
        z: float,
        *,
        label: str = "person",
        height: float | None = None,
        side_view: bool | None = None,
        y_base: float = 0.0,
        depth: float | None = None,
    ) -> SceneObject | None:
        cam = self.cam
        hgt = (
            height if height is not None else (self.u(1.55, 1.95) if self.chance(0.9) else self.u(1.0, 1.35))
        )
        if self.px_height(hgt, z) < self.cfg.min_object_px:
            return None
        side_view = self.chance(0.4) if side_view is None else side_view
        if side_view:
            tmpl = side_person_template(hgt, self.u(0.0, 0.12))
        else:
            tmpl = person_template(hgt, self.u(0.85, 1.2), self.u(0.0, 0.06), self.u(0.0, 0.05))
        foot = cam.project(x, y_base, z)
        s = cam.scale(z)
        poly = place(tmpl, foot[0], foot[1], s, mirror=self.chance(0.5))
        top = self.jitter(self.pick(CLOTHES))
        obj = SceneObject(
            label,
            poly,
            top,
            depth=z if depth is None else depth,
            noise=8,
            noise_cell=4,
            grain=6,
            gradient=-10,
        )
        legs = self.jitter(self.pick(CLOTHES))
        xs = [p[0] for p in poly]
        obj.details.append(
            Detail(
                [
                    (min(xs) - 1, foot[1] + 1),
                    (max(xs) + 1, foot[1] + 1),
                    (max(xs) + 1, foot[1] - 0.47 * hgt * s),
                    (min(xs) - 1, foot[1] - 0.47 * hgt * s),
                ],
                legs,
            )
        )
        head_y = foot[1] - 0.93 * hgt * s
        obj.details.append(
            Detail(circle(foot[0], head_y, 0.075 * hgt * s + 0.3, n=8), self.jitter(self.pick(SKIN), 0.4))
        )
        obj.details.append(
            Detail(
                circle(foot[0], head_y - 0.04 * hgt * s, 0.07 * hgt * s + 0.2, 0.035 * hgt * s + 0.2, n=8),
                self.jitter(self.pick([(30, 24, 20), (90, 60, 30), (170, 140, 90), (60, 60, 60)]), 0.4),
            )
        )
        return obj

    def pedestrians(self) -> None:
        placed = 0
        for _ in range(self.ti(0, 5)):
            side = -1 if self.chance(0.5) else 1
            a, b = self.walk[0] if side < 0 else self.walk[1]
            zc = self.u(2.5, 60)
            xc = self.u(a + 0.4, b - 0.4)
            n = self.ti(2, 6) if self.chance(self.cfg.person_group_prob) else 1
            tight = self.chance(self.cfg.overlap_prob)
            for _k in range(n):
                if placed >= self.cfg.max_persons:
                    return
                spread = 0.35 if tight else 1.2
                x = min(max(xc + self.u(-spread, spread) * n**0.5, a + 0.2), b + 0.3)  # on the walk
                obj = self.person(x, zc + self.u(-spread, spread) * 1.5)
                if obj is not None:
                    self.street.append(obj)
                    placed += 1
        if self.zebra and placed < self.cfg.max_persons:
            zc, depth = self.zebra
            for _ in range(self.ti(0, 4)):
                obj = self.person(self.u(*self.road), zc + self.u(0.3, depth - 0.3), side_view=True)
                if obj is not None:
                    self.street.append(obj)

    def two_wheeler(
        self, x: float, z: float, motor: bool, *, side_view: bool, ridden: bool, mirror: bool
    ) -> None:
        cam = self.cam
        label = "motorcycle" if motor else "bicycle"
        if self.px_height(1.0, z) < self.cfg.min_object_px:
            return
        foot = cam.project(x, 0, z)
        s = cam.scale(z)
        tmpl = bicycle_side_template(motor) if side_view else bicycle_rear_template(motor)
        poly = place(tmpl, foot[0], foot[1], s, mirror=mirror)
        frame = self.jitter(
            self.pick([(30, 30, 34), (150, 30, 30), (40, 60, 130), (180, 180, 180), (40, 90, 60)])
        )
        obj = SceneObject(
            label,
            poly,
            (34, 34, 36) if not motor else frame,
            depth=z,
            noise=6,
            grain=5,
            opacity=self.cfg.bicycle_opacity if not motor else 0.95,
        )
        sx = -s if mirror else s
        if side_view:
            base = 0.7 if motor else 0.54
            r = 0.31 if motor else 0.34
            for cxw in (-base, base):
                c = (foot[0] + cxw * sx, foot[1] - r * s)
                obj.details.append(
                    Detail(
                        circle(c[0], c[1], r * s * 0.92, n=14),
                        (20, 20, 20),
                        kind="line",
                        width=max(1, round(0.07 * s)),
                    )
                )
            if not motor:
                bb = (foot[0], foot[1] - 0.36 * s)
                for p in [(base - 0.06, 0.95), (-0.24, 0.86), (-base, 0.34)]:
                    obj.details.append(
                        Detail(
                            [bb, (foot[0] + p[0] * sx, foot[1] - p[1] * s)],
                            frame,
                            kind="line",
                            width=max(1, round(0.05 * s)),
                        )
                    )
        if not side_view:  # tyre and handlebar seen from behind
            tw = (0.16 if motor else 0.035) * s
            obj.details.append(
                Detail(
                    [
                        (foot[0] - tw, foot[1]),
                        (foot[0] + tw, foot[1]),
                        (foot[0] + tw, foot[1] - 0.62 * s),
                        (foot[0] - tw, foot[1] - 0.62 * s),
                    ],
                    (22, 22, 22),
                )
            )
            bar = (0.4 if motor else 0.3) * s
            top = (1.05 if motor else 1.0) * s
            obj.details.append(
                Detail(
                    [(foot[0] - bar, foot[1] - top), (foot[0] + bar, foot[1] - top)],
                    frame,
                    kind="line",
                    width=max(1, round(0.05 * s)),
                )
            )
            obj.details.append(
                Detail(
                    [(foot[0], foot[1] - 0.6 * s), (foot[0], foot[1] - top)],
                    frame,
                    kind="line",
                    width=max(1, round(0.05 * s)),
                )
            )
        self.street.append(obj)
        if ridden:
            if side_view:
                rtmpl = rider_side_template(1.1 if motor else 0.95)
                rp = place(rtmpl, foot[0], foot[1], s * self.u(0.92, 1.08), mirror=mirror)
                rider = SceneObject(
                    "rider",
                    rp,
                    self.jitter(self.pick(CLOTHES)),
                    depth=z - 0.01,
                    noise=8,
                    noise_cell=4,
                    grain=6,
                )
                head = (foot[0] + 0.04 * sx, foot[1] - (1.72 + (0.15 if motor else 0.0)) * s)
                rider.details.append(
                    Detail(
                        circle(head[0], head[1], 0.12 * s + 0.3, n=8),
                        self.jitter((40, 40, 44) if motor else self.pick(SKIN), 0.5),
                    )
                )
            else:
                r2 = self.person(
                    x,
                    z - 0.05,
                    label="rider",
                    height=self.u(1.35, 1.5),
                    side_view=False,
                    y_base=0.35,
                    depth=z - 0.01,
                )
                if r2 is None:
                    return
                rider = r2
            self.street.append(rider)

    def two_wheelers(self) -> None:
        if self.chance(self.cfg.rider_prob):
            for _ in range(self.ti(1, 3)):
                motor = self.chance(self.cfg.motorcycle_share)
                if self.chance(0.5):  # along the road, seen from behind, near the kerb or in a lane
                    side = 1 if self.chance(0.7) else -1
                    x = (self.road[1] - self.u(0.6, 1.8)) if side > 0 else (self.road[0] + self.u(0.6, 1.8))
                    self.two_wheeler(x, self.u(4, 45), motor, side_view=False, ridden=True, mirror=False)
                else:  # crossing
                    z = self.zebra[0] + 1.0 if self.zebra else self.u(6, 40)
                    self.two_wheeler(
                        self.u(*self.road), z, motor, side_view=True, ridden=True, mirror=self.chance(0.5)
                    )
        if self.chance(self.cfg.parked_bicycle_prob):  # a bicycle rack: parked bikes side by side
            side = -1 if self.chance(0.5) else 1
            a, b = self.walk[0] if side < 0 else self.walk[1]
            x = (a + b) / 2
            z = self.u(3, 30)
            mirror = self.chance(0.5)
            motor = self.chance(0.15)
            for _ in range(self.ti(1, 5)):
                self.two_wheeler(x + self.u(-0.1, 0.1), z, motor, side_view=True, ridden=False, mirror=mirror)
                z += self.u(0.45, 0.8)

    def crowds(self) -> None:
        """Crowd annotations: a far cluster that annotators would not split into instances."""
        if not self.chance(self.cfg.crowd_prob):
            return
        kind = self.pick_label(["persongroup", "persongroup", "cargroup", "bicyclegroup"])
        side = -1 if self.chance(0.5) else 1
        z = self.u(35, 80)
        members: list[SceneObject] = []
        if kind == "cargroup":
            x = self.road[0] + 1.05 if side < 0 else self.road[1] - 1.05
            for k in range(self.ti(3, 6)):
                m = self.vehicle("car", x, z + k * 4.8, self.chance(0.5))
                if m is not None:
                    members.append(m)
        else:
            a, b = self.walk[0] if side < 0 else self.walk[1]
            for _ in range(self.ti(4, 9)):
                if kind == "persongroup":
                    m = self.person(self.u(a, b), z + self.u(-1.5, 1.5))
                else:
                    m = None
                    self.two_wheeler(
                        self.u(a, b),
                        z + self.u(-1, 1),
                        False,
                        side_view=True,
                        ridden=False,
                        mirror=self.chance(0.5),
                    )
                    m = self.street.pop() if self.street and self.street[-1].label == "bicycle" else None
                if m is not None:
                    members.append(m)
        if len(members) < 2:
            return
        members.sort(key=lambda o: -o.depth)
        hull = convex_hull([p for m in members for p in m.polygon])
        group = SceneObject(
            kind, hull, self.jitter((110, 108, 104)), depth=min(m.depth for m in members), noise=6, grain=5
        )
        for m in members:
            group.details.append(Detail(m.polygon, m.colour))
            group.details.extend(d for d in m.details if d.kind == "fill")
        self.street.append(group)

    # ------------------------------------------------------------------------------------ void
    def street_furniture(self) -> None:
        cam = self.cam
        for _ in range(self.ti(1, 3)):
            side = -1 if self.chance(0.5) else 1
            x = self.kerb_x(side, self.u(0.5, 2.0))
            z = self.u(3, 40)
            w, d, h = self.u(0.4, 1.0), self.u(0.4, 1.0), self.u(0.6, 1.3)
            hull = cam.box_hull(box_corners(x, z + d / 2, w, d, (0, h)))
            col = self.jitter(self.pick([(60, 90, 60), (90, 90, 96), (150, 120, 40), (40, 40, 44)]))
            self.street.append(
                SceneObject(
                    self.pick_label(["static", "static", "dynamic"]), hull, col, depth=z, noise=6, grain=4
                )
            )

    def ego_vehicle(self) -> None:
        w, h = self.w, self.h
        hood = h * self.u(0.05, 0.12)
        n = 16
        pts: list[Point] = [(0, h - 1)]
        for k in range(n + 1):
            x = (w - 1) * k / n
            t = (x - w / 2) / (w * 0.6)
            pts.append((x, h - 1 - hood * (1 - t * t)))
        pts.append((w - 1, h - 1))
        self.front.append(
            SceneObject(
                "ego vehicle",
                pts,
                self.jitter(self.pick([(30, 30, 34), (160, 160, 166), (60, 60, 70)])),
                noise=10,
                noise_cell=12,
                grain=2,
                gradient=30,
            )
        )

    def shadows(self) -> None:
        """Contact shadows of things on the road and sidewalk (painted only)."""
        cam = self.cam
        for obj in self.street:
            if obj.label not in ("car", "truck", "bus", "train", "person", "rider", "bicycle", "motorcycle"):
                continue
            xs = [p[0] for p in obj.polygon]
            ys = [p[1] for p in obj.polygon]
            bottom = max(ys)
            if bottom <= cam.horizon:
                continue
            hh = max(1.5, (bottom - cam.horizon) * 0.04)
            cx, rx = (min(xs) + max(xs)) / 2, (max(xs) - min(xs)) / 2 + hh
            poly = circle(cx, bottom - hh * 0.3, rx, hh, n=16)
            for ground in (self.road_obj, *self.walk_objs):
                ground.details.append(Detail(poly, (15, 15, 15), kind="shade", alpha=0.35))


def compose_scene(
    rng: np.random.Generator, width: int, height: int, cfg: SceneConfig
) -> tuple[Camera, list[SceneObject]]:
    """Compose one random street scene.

    Returns the camera and the objects in drawing (back-to-front) order, polygons in float image
    coordinates, not yet clipped to the image.
    """
    builder = SceneBuilder(rng, width, height, cfg)
    objects = builder.build()
    return builder.cam, objects
