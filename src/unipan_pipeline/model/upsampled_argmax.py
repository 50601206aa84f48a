"""Channel argmax of a stride-``d`` map after bilinear upsampling, without upsampling every pixel.

Inference takes ``argmax(P)`` (sec. 3.4) and the semantic argmax at image resolution, while ``P`` and ``V``
live on the stride-4 grid. Upsampling ``K`` channels to 1024x2048 and taking the argmax costs ``O(K H W)``
in time and memory. The result is the same when computed only where it can differ from the coarse argmax:

* bilinear upsampling (``align_corners=False``) gives each output pixel a convex combination of the (at
  most) 2x2 grid cells around it. If one channel ``k`` is the (first) maximum in each of those cells, it is
  the maximum of the combination too (``sum w_i p_k(i) >= sum w_i p_j(i)``, and rounding is monotone), and
  no lower channel can tie with it. So every pixel whose neighbouring cells agree takes the coarse label;
* the remaining pixels (next to a change of label, typically a few % of the image) are interpolated
  exactly, with the weights of ``torch.nn.functional.interpolate``, for the candidate channels only: an
  interpolated value lies between the channel's min and max over the cell's 3x3 neighbourhood, so a
  channel whose max is below the largest min cannot win there.

:func:`upsampled_argmax` equals ``F.interpolate(x[None], scale_factor=d, mode="bilinear")[0].argmax(0)``
cropped to ``size`` (tested against it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _source_index(n_out: int, n_in: int, stride: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Per output coordinate: the two source cells and the weight of the second (``interpolate``'s rule)."""
    src = ((torch.arange(n_out, device=device, dtype=torch.float32) + 0.5) / stride - 0.5).clamp_min(0.0)
    i0 = src.floor().long().clamp_max(n_in - 1)
    i1 = (i0 + 1).clamp_max(n_in - 1)
    return i0, i1, src - i0.float()


def upsampled_argmax(
    x: Tensor, size: tuple[int, int], stride: int = 4, *, dense_above: float = 0.25
) -> Tensor:
    """``argmax`` over channels of ``x`` [K, h, w] upsampled bilinearly by ``stride`` and cropped to ``size``.

    ``dense_above``: share of cells next to a label change above which the dense computation is used (the
    same result; it is cheaper when labels change almost everywhere, e.g. for an untrained network).
    Returns int64 ``[H, W]`` channel indices of ``x``.
    """
    if x.ndim != 3:
        raise ValueError(f"upsampled_argmax.py: x must be [K, h, w], got {tuple(x.shape)}")
    height, width = size
    k, h, w = x.shape
    if height > h * stride or width > w * stride:
        raise ValueError(f"upsampled_argmax.py: size {size} exceeds the {h}x{w} grid at stride {stride}")
    device = x.device
    coarse = x.argmax(0)  # [h, w]
    # a cell is "uniform" when its 3x3 neighbourhood (clamped at the border) has one label: every output
    # pixel of it interpolates only between cells of that label
    padded = F.pad(coarse[None, None].float(), (1, 1, 1, 1), mode="replicate")[0, 0]
    uniform = torch.ones_like(coarse, dtype=torch.bool)
    for dy in range(3):
        for dx in range(3):
            uniform &= padded[dy : dy + h, dx : dx + w] == coarse
    out = coarse[:, None, :, None].expand(h, stride, w, stride).reshape(h * stride, w * stride)
    out = out[:height, :width].contiguous()
    mixed = ~uniform
    n_mixed = int(mixed.sum())
    if n_mixed == 0:
        return out
    if n_mixed > dense_above * mixed.numel():  # labels change almost everywhere: the dense path is cheaper
        return upsampled_argmax_reference(x, size, stride)
    # candidate channels of a mixed cell: interpolation keeps every channel between its min and max over
    # the corners, so channel j can win a pixel of the cell only if its 3x3 max reaches the best 3x3 min
    hi = F.max_pool2d(x[None], 3, stride=1, padding=1)[0]  # [K, h, w]
    lo = -F.max_pool2d(-x[None], 3, stride=1, padding=1)[0]
    cy, cx = mixed.nonzero(as_tuple=True)
    hi, lo = hi[:, cy, cx], lo[:, cy, cx]  # [K, M]
    floor = lo.max(0).values
    candidate = hi >= floor - 1e-5 * floor.abs() - 1e-12  # margin for rounding  # [K, M]
    n_cand = int(candidate.sum(0).max())
    # per mixed cell, its candidate channels in increasing order (argmax's tie rule), padded with -1
    order = torch.where(candidate, torch.arange(k, device=device)[:, None], k)
    chans = order.sort(0).values[:n_cand].t()  # [M, C]
    valid = chans < k
    chans = chans.clamp_max(k - 1)
    offs = torch.arange(stride, device=device)
    py = (cy[:, None, None] * stride + offs[None, :, None]).expand(-1, stride, stride).reshape(-1)
    px = (cx[:, None, None] * stride + offs[None, None, :]).expand(-1, stride, stride).reshape(-1)
    cell = torch.arange(cy.numel(), device=device).repeat_interleave(stride * stride)
    inside = (py < height) & (px < width)
    py, px, cell = py[inside], px[inside], cell[inside]
    chans_p, valid_p = chans[cell], valid[cell]  # [N, C]
    y0, y1, ly = _source_index(height, h, stride, device)
    x0, x1, lx = _source_index(width, w, stride, device)
    y0, y1, ly = y0[py], y1[py], ly[py].to(x.dtype)[:, None]
    x0, x1, lx = x0[px], x1[px], lx[px].to(x.dtype)[:, None]
    flat = x.permute(1, 2, 0).reshape(-1)  # cell-major: value of channel c at cell i is flat[i * K + c]

    def at(yi: Tensor, xi: Tensor) -> Tensor:
        return flat[(yi * w + xi)[:, None] * k + chans_p]  # [N, C]

    top = (1 - lx) * at(y0, x0) + lx * at(y0, x1)
    bottom = (1 - lx) * at(y1, x0) + lx * at(y1, x1)
    values = ((1 - ly) * top + ly * bottom).masked_fill(~valid_p, float("-inf"))
    out[py, px] = chans_p.gather(1, values.argmax(1, keepdim=True))[:, 0]
    return out


def upsampled_argmax_reference(x: Tensor, size: tuple[int, int], stride: int = 4) -> Tensor:
    """The dense computation :func:`upsampled_argmax` replaces (tests and benchmarks)."""
    up = F.interpolate(x[None], scale_factor=stride, mode="bilinear", align_corners=False)[0]
    return up[:, : size[0], : size[1]].argmax(0)


__all__ = ["upsampled_argmax", "upsampled_argmax_reference"]
