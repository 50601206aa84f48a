"""Dynamic potential head (paper sec. 3.4.1, eq. 1-2, Fig. 4).

The head is parameter-free. For one image it turns the semantic output ``V`` and a *dynamic* number ``D`` of
detections into a potential ``Psi`` with ``N_st + D`` channels:

* channels ``0 .. N_st - 1``: one per stuff class (channel ``k`` = stuff train id ``k``), a dummy full-image
  box with score 1, i.e. ``Psi(k) = V(k)`` everywhere;
* channels ``N_st .. N_st + D - 1``: one per detection ``k`` (same order as ``boxes``), eq. 1 / eq. 2 inside
  the box region ``B_k`` and 0 outside.

Variants (Fig. 4):

* ``"A"`` (UPSNet [24]): no score. ``V(c_k)`` (+ mask term when masks are given) inside the box.
* ``"B"``: ``s_k * (V(c_k) * M_k)`` inside the box (eq. 2 with ``⊙`` = multiplication).
* ``"C"``: ``s_k * (V(c_k) + M_k)`` inside the box (eq. 2 with ``⊙`` = summation).
* Without masks B == C == ``s_k * V(c_k)`` (eq. 1).

Decisions (OPEN in the design notes), all documented here:

* **Space of V.** ``space="auto"`` (default) uses *softmax probabilities* of the semantic logits for variants
  B and C (the paper: "V_i(l) denotes the probability"), which makes ``Psi >= 0`` and lets the affinity head
  and :func:`unipan_pipeline.model.panoptic_matching_loss.panoptic_matching_loss` treat ``P`` as
  un-normalised probabilities (``input_kind="probabilities"``). For variant A, ``"auto"`` uses the raw
  *logits* as UPSNet does, and the mask term is then the mask *logit* ``log(M / (1 - M))`` (masks come as
  probabilities; they are clamped to ``[mask_eps, 1 - mask_eps]``); the matching loss must then use
  ``input_kind="logits"``. ``space="probabilities"`` / ``"logits"`` force one space for any variant.
* **Gradients.** Gradients always flow into ``semantic_logits`` and ``masks``. Scores are used as given:
  nothing is detached here, so gradients reach ``s_k`` iff the caller passes scores that require grad
  (torchvision's postprocessed scores usually don't); pass ``detach_scores=True`` to cut that path.
* **Box region on the feature grid.** Feature cell ``(y, x)`` at stride ``d`` has its centre at image pixel
  coordinates ``((x + 0.5) d, (y + 0.5) d)``. A cell belongs to box ``(x1, y1, x2, y2)`` iff
  ``x1 <= cx < x2`` and ``y1 <= cy < y2`` (half-open, so adjacent boxes do not share cells). The region is
  the outer product of a column mask and a row mask. A box thinner than a cell may contain no cell centre
  along an axis; along such an axis the cell holding the box centre is used instead (a 2-px-wide, tall box
  owns one column of cells; a tiny box owns one cell), so every detection owns at least one cell.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from .cpu_inference import cpu_inference

Variant = Literal["A", "B", "C"]
Space = Literal["auto", "probabilities", "logits"]

_WHERE = "dynamic_potential.py"


def potential_space(variant: Variant, space: Space = "auto") -> Literal["probabilities", "logits"]:
    """Return the space (``"probabilities"`` or ``"logits"``) the potential of ``variant`` lives in.

    Use it to pick ``input_kind`` of the panoptic matching loss consistently with the potential.
    """
    if space == "auto":
        return "logits" if variant == "A" else "probabilities"
    if space not in ("probabilities", "logits"):
        raise ValueError(f"{_WHERE}: unknown space {space!r} (expected 'auto', 'probabilities' or 'logits')")
    return space


def _axis_cells(boxes: Tensor, height: int, width: int, stride: int) -> tuple[Tensor, Tensor]:
    """Per box, the rows ``[D, h]`` and columns ``[D, w]`` of its region (see :func:`box_region_mask`)."""
    if boxes.ndim != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"{_WHERE}: boxes must have shape [D, 4], got {tuple(boxes.shape)}")
    device = boxes.device
    b = boxes.detach().to(torch.float32)
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) * stride  # [w]
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) * stride  # [h]
    x1, y1, x2, y2 = (b[:, i, None] for i in range(4))  # each [D, 1]
    in_x = (xs[None, :] >= x1) & (xs[None, :] < x2)  # [D, w]
    in_y = (ys[None, :] >= y1) & (ys[None, :] < y2)  # [D, h]
    # Per axis: when no cell centre falls inside the box extent, use the cell holding the box centre.
    cx = torch.floor((x1 + x2) * 0.5 / stride).long().clamp_(0, width - 1)  # [D, 1]
    cy = torch.floor((y1 + y2) * 0.5 / stride).long().clamp_(0, height - 1)
    in_x |= (torch.arange(width, device=device)[None, :] == cx) & ~in_x.any(dim=1, keepdim=True)
    in_y |= (torch.arange(height, device=device)[None, :] == cy) & ~in_y.any(dim=1, keepdim=True)
    return in_y, in_x


def box_region_mask(boxes: Tensor, height: int, width: int, stride: int = 4) -> Tensor:
    """Boolean ``[D, h, w]`` mask of the feature cells inside each box (vectorised over ``D``).

    Args:
        boxes: ``[D, 4]`` boxes ``(x1, y1, x2, y2)`` in image pixel coordinates.
        height, width: feature grid size ``(h, w)``.
        stride: feature stride ``d`` (image pixels per feature cell).

    Cell ``(y, x)`` is inside iff its centre ``((x + .5) d, (y + .5) d)`` satisfies ``x1 <= cx < x2`` and
    ``y1 <= cy < y2``; along an axis with no centre inside, the cell holding the box centre is used.
    """
    in_y, in_x = _axis_cells(boxes, height, width, stride)
    return in_y[:, :, None] & in_x[:, None, :]


def box_region_bounds(boxes: Tensor, height: int, width: int, stride: int = 4) -> Tensor:
    """The region of :func:`box_region_mask` as a rectangle per box: ``[D, 4]`` int64 ``(y0, y1, x0, x1)``,
    rows ``y0 <= y < y1`` and columns ``x0 <= x < x1`` (the cell centres inside an interval are contiguous,
    and the fallback is a single cell)."""
    bounds = []
    for cells in _axis_cells(boxes, height, width, stride):
        first = cells.to(torch.uint8).argmax(dim=1)  # the first True (every row has one)
        bounds += [first, first + cells.sum(dim=1)]
    return torch.stack(bounds, dim=1)


def dynamic_potential(  # noqa: PLR0917 - positional signature fixed by the model contract
    semantic_logits: Tensor,
    boxes: Tensor,
    scores: Tensor,
    classes: Tensor,
    masks: Tensor | None,
    num_stuff: int,
    variant: Variant = "C",
    stride: int = 4,
    *,
    space: Space = "auto",
    detach_scores: bool = False,
    mask_eps: float = 1e-4,
) -> Tensor:
    """Build the dynamic potential ``Psi`` of one image (eq. 1-2).

    Args:
        semantic_logits: ``[N_cls, h, w]`` semantic head logits ``V`` at stride ``stride`` (train ids).
        boxes: ``[D, 4]`` detection boxes, xyxy, image pixel coordinates.
        scores: ``[D]`` detection scores ``s_k`` (ignored by variant A).
        classes: ``[D]`` detection classes as TRAIN ids (``num_stuff <= c < N_cls``).
        masks: ``[D, h, w]`` instance mask probabilities pasted at stride ``stride``, or ``None``.
        num_stuff: ``N_st``; channels ``0..N_st-1`` of ``V`` are the stuff classes.
        variant: ``"A"``, ``"B"`` or ``"C"`` (see module docstring).
        stride: feature stride ``d``.
        space: ``"auto"`` (B/C: softmax probabilities, A: logits), ``"probabilities"`` or ``"logits"``.
        detach_scores: cut the gradient into ``scores``.
        mask_eps: clamp for the mask logit of the logit space.

    Returns:
        ``Psi``: ``[N_st + D, h, w]``, stuff channels first, then the detections in input order. With
        ``D == 0`` only the stuff channels are returned.
    """
    if semantic_logits.ndim != 3:
        raise ValueError(f"{_WHERE}: semantic_logits must be [N_cls,h,w], got {tuple(semantic_logits.shape)}")
    if variant not in ("A", "B", "C"):
        raise ValueError(f"{_WHERE}: unknown variant {variant!r} (expected 'A', 'B' or 'C')")
    n_cls, h, w = semantic_logits.shape
    if not 0 <= num_stuff <= n_cls:
        raise ValueError(f"{_WHERE}: num_stuff={num_stuff} outside [0, N_cls={n_cls}]")
    if boxes.ndim != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"{_WHERE}: boxes must have shape [D, 4], got {tuple(boxes.shape)}")
    d = boxes.shape[0]
    if scores.shape != (d,) or classes.shape != (d,):
        raise ValueError(
            f"{_WHERE}: scores and classes must be [D={d}], got {tuple(scores.shape)} and "
            f"{tuple(classes.shape)}"
        )
    if masks is not None and masks.shape != (d, h, w):
        raise ValueError(f"{_WHERE}: masks must be [D={d}, h={h}, w={w}], got {tuple(masks.shape)}")
    if d > 0:
        cmin, cmax = int(classes.min()), int(classes.max())
        if cmin < num_stuff or cmax >= n_cls:
            raise ValueError(
                f"{_WHERE}: detection classes must be thing train ids in [{num_stuff}, {n_cls}), "
                f"got range [{cmin}, {cmax}]"
            )

    sp = potential_space(variant, space)
    v = torch.softmax(semantic_logits, dim=0) if sp == "probabilities" else semantic_logits
    stuff = v[:num_stuff]
    if d == 0:
        return stuff

    s = scores.detach() if detach_scores else scores
    s = s.to(v.dtype)
    cls = classes.to(device=v.device, dtype=torch.long)
    if cpu_inference(v, s, masks):  # box by box, over the boxes' area only
        return _potential_in_boxes(v, stuff, boxes, s, cls, masks, variant, sp, stride, mask_eps)
    # training / GPU: one dense [D, h, w] computation
    region = box_region_mask(boxes, h, w, stride)  # [D, h, w] bool
    vc = v.index_select(0, cls)  # [D, h, w]
    m = None if masks is None else masks.to(v.dtype)
    val = _thing_term(vc, s[:, None, None], m, variant=variant, space=sp, mask_eps=mask_eps)
    things = torch.where(region, val, torch.zeros((), dtype=val.dtype, device=val.device))
    return torch.cat([stuff, things], dim=0)


def _thing_term(
    vc: Tensor, s: Tensor, m: Tensor | None, *, variant: Variant, space: str, mask_eps: float
) -> Tensor:
    """Eq. 1-2 inside a box: ``V(c_k)`` combined with the score and the mask term of ``variant``."""
    if m is None:
        return vc if variant == "A" else s * vc
    if space == "logits":
        mc = m.clamp(mask_eps, 1.0 - mask_eps)
        m = torch.log(mc) - torch.log1p(-mc)
    if variant == "A":
        return vc + m
    if variant == "B":
        return s * (vc * m)
    return s * (vc + m)


def _potential_in_boxes(  # noqa: PLR0917 - the pieces of dynamic_potential
    v: Tensor,
    stuff: Tensor,
    boxes: Tensor,
    s: Tensor,
    classes: Tensor,
    masks: Tensor | None,
    variant: Variant,
    space: str,
    stride: int,
    mask_eps: float,
) -> Tensor:
    """Psi with each thing channel computed only over its box region (zero elsewhere): the same values as
    the dense computation, element for element, at the cost of the boxes' area instead of ``D x h x w``."""
    n_st, (h, w), d = stuff.shape[0], v.shape[-2:], boxes.shape[0]
    out = v.new_zeros((n_st + d, h, w))
    out[:n_st] = stuff
    m_all = None if masks is None else masks.to(v.dtype)
    bounds = box_region_bounds(boxes, h, w, stride).tolist()
    for k, (c, (y0, y1, x0, x1)) in enumerate(zip(classes.tolist(), bounds, strict=True)):
        m = None if m_all is None else m_all[k, y0:y1, x0:x1]
        val = _thing_term(v[c, y0:y1, x0:x1], s[k], m, variant=variant, space=space, mask_eps=mask_eps)
        out[n_st + k, y0:y1, x0:x1] = val
    return out


def filter_detections(keep: Tensor, *tensors: Tensor | None) -> tuple[Tensor | None, ...]:
    """Index every given per-detection tensor (``[D, ...]``) with the boolean ``keep`` mask (``None`` passes).

    Convenience for applying :class:`~unipan_pipeline.model.panoptic_matching_loss.PanopticMatch.keep`
    before building the potential.
    """
    return tuple(None if t is None else t[keep] for t in tensors)
