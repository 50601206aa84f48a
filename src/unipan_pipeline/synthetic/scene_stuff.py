"""Stuff of a street scene: the sky, the backdrop, the ground (road, sidewalk, terrain, markings) and the
building blocks with their windows (:class:`StuffBuilder`, a part of :class:`~.scene.SceneBuilder`).
"""

from __future__ import annotations

from .scene_base import (
    FACADES,
    GREENS,
    TERRAIN,
    Detail,
    SceneBase,
    SceneObject,
    scaled,
)


class StuffBuilder(SceneBase):
    """Stuff: sky, the backdrop, road / sidewalk / terrain (markings, paving) and the buildings."""

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
