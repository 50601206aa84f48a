"""Street objects of a scene: trees, poles with signs and traffic lights, fences, and the void ones (street
furniture, the ego vehicle, shadows) (:class:`StreetObjectsBuilder`, a part of :class:`~.scene.SceneBuilder`).
"""

from __future__ import annotations

import math

from .geometry import (
    Point,
    box_corners,
    circle,
)
from .scene_base import (
    GREENS,
    SIGN,
    Detail,
    SceneBase,
    SceneObject,
    scaled,
)


class StreetObjectsBuilder(SceneBase):
    """Street objects (trees, poles, signs, traffic lights, fences) and void (furniture, ego car, shadows)."""

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
