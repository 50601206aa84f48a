"""Procedural composition of one street scene as an ordered list of labelled polygons.

A scene is built in a simple 3-D world (flat ground, pinhole camera, see :mod:`.geometry`) and returned
back to front, exactly as Cityscapes' ``polygons.json`` lists its objects: later polygons overwrite
earlier ones when rasterised. Every polygon carries a Cityscapes label name (``cityscapesscripts``'
``labels``; ``...group`` for crowd regions) and painting hints (colour, texture, details) used by
:mod:`.paint` to render the photograph, so that picture and ground truth agree pixel for pixel.

The builder is one class assembled from the object families, each in its own module: stuff
(:mod:`.scene_stuff`), street objects and void (:mod:`.scene_street`), vehicles (:mod:`.scene_vehicles`) and
people (:mod:`.scene_people`), over the shared state and palettes of :mod:`.scene_base`.
"""

from __future__ import annotations

import numpy as np

from .config import SceneConfig
from .geometry import Camera
from .scene_base import Detail, SceneObject
from .scene_people import PeopleBuilder
from .scene_street import StreetObjectsBuilder
from .scene_stuff import StuffBuilder
from .scene_vehicles import VehiclesBuilder

__all__ = ["Detail", "SceneBuilder", "SceneObject", "compose_scene"]


class SceneBuilder(StuffBuilder, StreetObjectsBuilder, VehiclesBuilder, PeopleBuilder):
    """Draws one random scene. Use :func:`compose_scene`."""

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
