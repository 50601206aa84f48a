"""Knobs of the procedural street-scene generator."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class SceneConfig:
    """Content and difficulty of the generated scenes.

    The defaults give Cityscapes-like street scenes with all 11 stuff and 8 thing training classes, and
    the hard cases the paper's panoptic head is designed for (sec. 3.3-3.4): touching and mutually
    occluding instances of one class (rows of parked cars, groups of pedestrians, bicycle racks), small
    and thin objects, and objects cut by the image border.
    """

    max_cars: int = 16
    """Upper bound on cars per image (parked rows plus moving traffic)."""
    parked_row_prob: float = 0.75
    """Probability of a row of parked cars along each kerb."""
    max_row_length: int = 6
    """Most cars in one parked row."""
    overlap_prob: float = 0.6
    """Probability that a new car of a row / person of a group is placed so that it touches or partly
    hides its neighbour in the image (otherwise it keeps a clear gap)."""
    max_moving_vehicles: int = 4
    """Most moving vehicles in the driving lanes."""
    max_persons: int = 14
    """Upper bound on pedestrians per image (not counting crowd groups)."""
    person_group_prob: float = 0.6
    """Probability that a pedestrian cluster has 2-6 members instead of one."""
    rider_prob: float = 0.55
    """Probability of cyclists / motorcyclists (rider + bicycle/motorcycle instances) in an image."""
    motorcycle_share: float = 0.35
    """Share of ridden two-wheelers that are motorcycles."""
    parked_bicycle_prob: float = 0.35
    """Probability of a bicycle rack (1-5 parked bicycles side by side)."""
    bicycle_opacity: float = 0.3
    """Opacity of a bicycle's body between its painted frame and wheels (bicycles are see-through)."""
    bus_prob: float = 0.22
    truck_prob: float = 0.3
    train_prob: float = 0.15
    """Probability of a tram (Cityscapes ``train``) on tracks in the street."""
    sign_prob: float = 0.55
    """Probability that a pole carries a traffic sign."""
    traffic_light_prob: float = 0.35
    """Probability that a pole carries a traffic light."""
    fence_prob: float = 0.45
    """Probability of each of up to two fence-or-wall segments per side of the street."""
    wall_share: float = 0.45
    """Share of those segments that are walls (the rest are see-through fences)."""
    crowd_prob: float = 0.2
    """Probability of a crowd annotation (``cargroup``/``persongroup``/``bicyclegroup``) per image."""
    void_prob: float = 0.35
    """Probability of void regions (``ego vehicle`` bonnet, ``static`` street furniture, ``parking``)."""
    min_object_px: float = 4.0
    """Things whose image height would be below this many pixels are not placed."""
    zoom: float = 1.0
    """Multiplier of the camera's focal length: > 1 narrows the field of view, so that everything in view
    appears larger (a longer lens)."""
    max_depth: float = 200.0
    """Street objects (vehicles, persons, two-wheelers, poles, signs, lights, fences, trees) farther than
    this many metres from the camera are not placed; the default keeps the whole street (180 m)."""
    class_tint: float = 0.0
    """How far each object's base colour is pulled towards its class's Cityscapes label colour (0 = the
    realistic palettes only, where colour alone does not identify the class; 1 = the label colour, jittered
    and textured). Painted details (windows, wheels, markings) keep their own colours."""
    noise_level: float = 5.0
    """Standard deviation of the per-pixel sensor noise (0-255 scale)."""
    colour_jitter: float = 16.0
    """Standard deviation of the per-object colour jitter (0-255 scale)."""
    texture_strength: float = 1.0
    """Multiplier of the per-object texture (low-frequency shading and grain)."""
    blur: float = 0.6
    """Radius of the Gaussian blur applied to the whole picture (optics); 0 disables it."""

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> SceneConfig:
        """Build from a mapping (e.g. Kedro parameters); unknown keys raise ``ValueError``."""
        if values is None:
            return cls()
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown scene parameter(s) {unknown}; known: {sorted(known)}")
        cfg = cls(**dict(values))
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Raise ``ValueError`` for out-of-range values."""
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name.endswith(("_prob", "_share", "_tint", "_opacity")) and not 0.0 <= v <= 1.0:
                raise ValueError(f"scene parameter {f.name}={v} must lie in [0, 1]")
            if isinstance(v, (int, float)) and v < 0:
                raise ValueError(f"scene parameter {f.name}={v} must not be negative")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-serialisable)."""
        return asdict(self)
