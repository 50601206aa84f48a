"""What the dense instance affinity (sec. 3.4.2, eq. 3-4) changes: P against Psi, on the evaluation images.

Over the valid stride-4 cells of every image (the padded grid cropped to ``ceil(H/4) x ceil(W/4)``):

* ``affinity/cells_changed``: share of cells where argmax(P) differs from argmax(Psi);
* ``affinity/thing_cells_changed``: the same among the cells where argmax(P) is a thing channel (a detection);
* ``affinity/relative_change``: mean |P - Psi| / mean |Psi| (all channels and cells of all images).

The PQ of argmax(Psi) on the same weights (``pq_without_affinity``) is a second ``PQAccumulator`` fed with the
network's ``potential_panoptic`` output (see ``PanopticNetwork.return_potentials``).
"""

from __future__ import annotations

import math

from torch import Tensor

STRIDE = 4

KEYS = ("affinity/cells_changed", "affinity/thing_cells_changed", "affinity/relative_change")


class AffinityEffect:
    """Accumulates the effect of the affinity term over images; :meth:`compute` gives :data:`KEYS`."""

    def __init__(self, num_stuff: int) -> None:
        self.num_stuff = num_stuff
        self.cells = 0
        self.changed = 0
        self.thing_cells = 0
        self.thing_changed = 0
        self.abs_change = 0.0
        self.abs_potential = 0.0

    def update(self, potential: Tensor, logits: Tensor, image_size: tuple[int, int]) -> None:
        """Add one image: ``potential`` Psi and ``logits`` P, both ``[N_st + D, h, w]`` at stride 4 (padded
        grid), ``image_size`` (H, W) the valid input size."""
        if potential.shape != logits.shape:
            raise ValueError(f"Psi {tuple(potential.shape)} and P {tuple(logits.shape)} differ in shape")
        hv, wv = math.ceil(image_size[0] / STRIDE), math.ceil(image_size[1] / STRIDE)
        psi = potential[:, :hv, :wv].detach().float()
        p = logits[:, :hv, :wv].detach().float()
        winner_p, winner_psi = p.argmax(0), psi.argmax(0)
        differs = winner_p != winner_psi
        thing = winner_p >= self.num_stuff
        self.cells += differs.numel()
        self.changed += int(differs.sum())
        self.thing_cells += int(thing.sum())
        self.thing_changed += int((differs & thing).sum())
        self.abs_change += float((p - psi).abs().sum())
        self.abs_potential += float(psi.abs().sum())

    def compute(self) -> dict[str, float | None]:
        """The three fractions (``None`` where undefined: no cell, no thing cell, Psi all zero)."""

        def ratio(a: float, b: float) -> float | None:
            return a / b if b > 0 else None

        return {
            "affinity/cells_changed": ratio(self.changed, self.cells),
            "affinity/thing_cells_changed": ratio(self.thing_changed, self.thing_cells),
            "affinity/relative_change": ratio(self.abs_change, self.abs_potential),
        }
