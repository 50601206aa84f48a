"""Vehicles of a scene: parked cars, moving traffic (cars, trucks, buses) and the tram, as 3-D boxes seen by
the camera (:class:`VehiclesBuilder`, a part of :class:`~.scene.SceneBuilder`).
"""

from __future__ import annotations

import math

import numpy as np

from .geometry import box_corners
from .scene_base import (
    BUS_PAINT,
    CAR_PAINT,
    TRAM_PAINT,
    Colour,
    Detail,
    SceneBase,
    SceneObject,
    scaled,
)


class VehiclesBuilder(SceneBase):
    """Vehicles: parked cars, moving traffic (cars, trucks, buses) and the tram."""

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
