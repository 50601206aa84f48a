"""People of a scene: pedestrians, riders on two-wheelers, parked bicycles and motorcycles, and crowds drawn
as ``...group`` regions (:class:`PeopleBuilder`, a part of :class:`~.scene.SceneBuilder`).
"""

from __future__ import annotations

from .geometry import (
    bicycle_rear_template,
    bicycle_side_template,
    circle,
    convex_hull,
    person_template,
    place,
    rider_side_template,
    side_person_template,
)
from .scene_base import (
    CLOTHES,
    SKIN,
    Detail,
    SceneBase,
    SceneObject,
)


class PeopleBuilder(SceneBase):
    """People: pedestrians, riders on bicycles and motorcycles, and crowds (``...group``)."""

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
