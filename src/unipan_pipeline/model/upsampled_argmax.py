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

Two ways to evaluate the mixed pixels, both exact:

* **sparse** (few mixed cells, a trained network): per mixed pixel, gather the four corners of each candidate;
* **candidate-dense** (labels change almost everywhere, e.g. an untrained network): per cell, the (at most
  ``C``, a dozen in practice) candidate channels are gathered once over the cell's 3x3 neighbourhood, then
  interpolated separably (columns, then rows, as ``interpolate`` does) for each of the ``d x d`` sub-pixel
  positions with whole-grid tensor operations: ``O(C h w d^2)`` instead of ``O(K H W)``.

:func:`upsampled_argmax` equals ``F.interpolate(x[None], scale_factor=d, mode="bilinear")[0].argmax(0)``
cropped to ``size`` (tested against it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

_STRIP = 32
"""Cell rows per strip of the candidate-dense evaluation (a few MB of temporaries at 2048 columns)."""


def _source_index(n_out: int, n_in: int, stride: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Per output coordinate: the two source cells and the weight of the second (``interpolate``'s rule)."""
    src = ((torch.arange(n_out, device=device, dtype=torch.float32) + 0.5) / stride - 0.5).clamp_min(0.0)
    i0 = src.floor().long().clamp_max(n_in - 1)
    i1 = (i0 + 1).clamp_max(n_in - 1)
    return i0, i1, src - i0.float()


def upsampled_argmax(
    x: Tensor,
    size: tuple[int, int],
    stride: int = 4,
    *,
    dense_above: float = 0.25,
    coarse: Tensor | None = None,
) -> Tensor:
    """``argmax`` over channels of ``x`` [K, h, w] upsampled bilinearly by ``stride`` and cropped to ``size``.

    ``dense_above``: share of cells next to a label change above which the dense computation is used (the
    same result; it is cheaper when labels change almost everywhere, e.g. for an untrained network).
    ``coarse``: ``first_argmax(x)`` when the caller has it already.
    Returns int64 ``[H, W]`` channel indices of ``x``.
    """
    if x.ndim != 3:
        raise ValueError(f"upsampled_argmax.py: x must be [K, h, w], got {tuple(x.shape)}")
    height, width = size
    k, h, w = x.shape
    if height > h * stride or width > w * stride:
        raise ValueError(f"upsampled_argmax.py: size {size} exceeds the {h}x{w} grid at stride {stride}")
    device = x.device
    coarse = first_argmax(x) if coarse is None else coarse  # [h, w]
    # a cell is "uniform" when its 3x3 neighbourhood (clamped at the border) has one label: every output
    # pixel of it interpolates only between cells of that label
    labels = _replicate_pad(coarse[None])[0]
    uniform = torch.ones_like(coarse, dtype=torch.bool)
    for dy in range(3):
        for dx in range(3):
            uniform &= labels[dy : dy + h, dx : dx + w] == coarse
    mixed = ~uniform
    n_mixed = int(mixed.sum())
    if n_mixed > dense_above * mixed.numel():  # labels change almost everywhere: evaluate every cell
        return _candidate_dense_argmax(x, size=size, stride=stride)
    out = coarse[:, None, :, None].expand(h, stride, w, stride).reshape(h * stride, w * stride)
    out = out[:height, :width].contiguous()
    if n_mixed == 0:
        return out
    # candidate channels of a cell: interpolation keeps every channel between its min and max over the
    # corners, so channel j can win a pixel of the cell only if its 3x3 max reaches the best 3x3 min
    hi, lo = neighbourhood_range(x)  # [K, h, w]
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


def first_argmax(x: Tensor) -> Tensor:
    """``x.argmax(0)`` for ``x`` [K, ...] (the first maximal channel), as a running maximum over channels.

    Equal to ``argmax(0)`` (ties go to the lowest channel) and several times faster on CPU for a few dozen
    channels, where the reduction over the outer dimension is memory-bound.
    """
    best = x[0].clone()
    index = torch.zeros(x.shape[1:], dtype=torch.long, device=x.device)
    for c in range(1, x.shape[0]):
        wins = x[c] > best
        torch.maximum(best, x[c], out=best)
        index.masked_fill_(wins, c)
    return index


def _replicate_pad(x: Tensor, *, sentinel: bool = False, rows: tuple[int, int] | None = None) -> Tensor:
    """``x`` [K, h, w] padded by one cell on each side (border replicated), with an extra channel of -inf
    at index ``K`` when ``sentinel``: one allocation, written once. ``rows=(first, stop)``: only the cell
    rows ``first .. stop - 1`` and their neighbouring rows (the same as cutting the whole padded map)."""
    k, h, w = x.shape
    first, stop = rows or (0, h)
    out = x.new_empty(k + int(sentinel), stop - first + 2, w + 2)
    out[:k, 1:-1, 1:-1] = x[:, first:stop]
    out[:k, 0, 1:-1], out[:k, -1, 1:-1] = x[:, max(first - 1, 0)], x[:, min(stop, h - 1)]
    out[:k, :, 0], out[:k, :, -1] = out[:k, :, 1], out[:k, :, -2]
    if sentinel:
        out[k] = float("-inf")
    return out


def neighbourhood_range(x: Tensor, padded: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Per channel of ``x`` [K, h, w], the max and min over each cell's 3x3 neighbourhood (clamped).

    ``padded``: ``x`` already padded by :func:`_replicate_pad` (to share it with the caller)."""
    padded = _replicate_pad(x) if padded is None else padded
    hi, lo = torch.empty_like(x), torch.empty_like(x)
    for c in range(x.shape[0]):  # one cache-sized plane at a time
        plane = padded[c]
        rows = torch.maximum(torch.maximum(plane[:, :-2], plane[:, 1:-1]), plane[:, 2:])
        torch.maximum(torch.maximum(rows[:-2], rows[1:-1]), rows[2:], out=hi[c])
        rows = torch.minimum(torch.minimum(plane[:, :-2], plane[:, 1:-1]), plane[:, 2:])
        torch.minimum(torch.minimum(rows[:-2], rows[1:-1]), rows[2:], out=lo[c])
    return hi, lo


def _lerp_neighbours(
    near: Tensor, dim: int, first: Tensor, second: Tensor, weight: Tensor, *, axis: int
) -> Tensor:
    """``(1 - w) * near[first] + w * near[second]`` along ``dim`` of ``near``, the neighbour index and the
    weight varying along ``axis`` (the cells' row or column axis of the result); ``interpolate``'s rule."""
    shape = [1] * (near.ndim - 1)
    shape[axis] = -1
    mid = first.numel() // 2
    a, b = int(first[mid]), int(second[mid])
    w = weight.view(shape)
    out = (1 - w) * near.select(dim, a) + w * near.select(dim, b)
    for j in ((first != a) | (second != b)).nonzero()[:, 0].tolist():  # the border cells
        wj, edge = weight[j], near.select(axis + 1, j)  # ``axis`` of the result is ``axis + 1`` of ``near``
        blend = (1 - wj) * edge.select(dim, int(first[j])) + wj * edge.select(dim, int(second[j]))
        out.select(axis, j).copy_(blend)
    return out


def _candidate_dense_argmax(x: Tensor, *, size: tuple[int, int], stride: int) -> Tensor:
    """Every cell's pixels from its candidate channels only (see the module docstring); exact.

    Works through the grid :data:`_STRIP` cell rows at a time (each strip padded with its neighbouring
    rows), so that its temporaries stay a few MB - cache-sized and reused - instead of ~50 MB tensors the
    size of the whole map, each faulted in afresh per call. Loops run over channels."""
    k, h, w = x.shape
    strip = _STRIP
    device = x.device
    # per sub-pixel offset and cell: the two source cells (offsets 0/1/2 into ``near``) and the weight of
    # the second, exactly as ``interpolate`` computes them (borders included)
    y0, y1, ly = _source_index(h * stride, h, stride, device)
    x0, x1, lx = _source_index(w * stride, w, stride, device)
    cells_y = torch.arange(h, device=device)[:, None]
    cells_x = torch.arange(w, device=device)[:, None]
    dy0, dy1 = y0.view(h, stride) - cells_y + 1, y1.view(h, stride) - cells_y + 1
    dx0, dx1 = x0.view(w, stride) - cells_x + 1, x1.view(w, stride) - cells_x + 1
    ly, lx = ly.view(h, stride).to(x.dtype), lx.view(w, stride).to(x.dtype)
    out = torch.empty(h, stride, w, stride, dtype=torch.long, device=device)
    for first in range(0, h, strip):
        stop = min(h, first + strip)
        rows = slice(first, stop)
        padded = _replicate_pad(x, sentinel=True, rows=(first, stop))  # [K + 1, n + 2, w + 2]
        hi, lo = neighbourhood_range(x[:, rows], padded[:k])
        _candidate_dense_strip(
            padded, hi, lo, (dy0[rows], dy1[rows], ly[rows]), (dx0, dx1, lx), out=out[rows]
        )
    height, width = size
    out = out.view(h * stride, w * stride)
    return out if (height, width) == out.shape else out[:height, :width].contiguous()


def _candidate_dense_strip(
    padded: Tensor,
    hi: Tensor,
    lo: Tensor,
    rows_lerp: tuple[Tensor, Tensor, Tensor],
    cols_lerp: tuple[Tensor, Tensor, Tensor],
    *,
    out: Tensor,
) -> None:
    """:func:`_candidate_dense_argmax` of one strip of ``n`` cell rows: ``padded`` [K + 1, n + 2, w + 2] (the
    sentinel channel last), ``hi``/``lo`` [K, n, w] its :func:`neighbourhood_range`, the interpolation's
    (first, second, weight) per cell row and column; writes the labels into ``out``, int64
    [n, stride, w, stride]."""
    k, h, w = hi.shape
    stride = out.shape[1]
    device = hi.device
    floor = lo[0].clone()
    for c in range(1, k):
        torch.maximum(floor, lo[c], out=floor)
    candidate = hi >= floor - 1e-5 * floor.abs() - 1e-12  # margin for rounding  # [K, n, w]
    count = torch.zeros(h, w, dtype=torch.long, device=device)
    for c in range(k):
        count += candidate[c]
    n_cand = int(count.max())
    # the candidates of each cell in increasing channel order (argmax's tie rule); empty slots point at the
    # sentinel channel k of -inf, which never wins (slot 0 always holds a real candidate)
    slots = torch.full((n_cand + 1, h, w), k, dtype=torch.long, device=device)
    count.zero_()
    for c in range(k):
        slots.scatter_(0, torch.where(candidate[c], count, n_cand)[None], c)
        count += candidate[c]
    chans = slots[:n_cand]  # [C, n, w]
    # the candidates' values over the 3x3 neighbourhood: near[dy + 1, dx + 1] is [C, n, w]
    near = padded.new_empty(3, 3, n_cand, h, w)
    for dy in range(3):
        for dx in range(3):
            torch.gather(padded[:, dy : dy + h, dx : dx + w], 0, chans, out=near[dy, dx])
    (dy0, dy1, ly), (dx0, dx1, lx) = rows_lerp, cols_lerp
    for s in range(stride):  # columns first: ``interpolate`` blends each source row horizontally
        rows = _lerp_neighbours(near, 1, dx0[:, s], dx1[:, s], lx[:, s], axis=3)  # [3, C, n, w]
        for r in range(stride):
            values = _lerp_neighbours(rows, 0, dy0[:, r], dy1[:, r], ly[:, r], axis=1)  # [C, n, w]
            out[:, r, :, s] = chans.gather(0, first_argmax(values)[None])[0]


def upsampled_argmax_reference(x: Tensor, size: tuple[int, int], stride: int = 4) -> Tensor:
    """The dense computation :func:`upsampled_argmax` replaces (tests and benchmarks)."""
    up = F.interpolate(x[None], scale_factor=stride, mode="bilinear", align_corners=False)[0]
    return up[:, : size[0], : size[1]].argmax(0)


__all__ = ["first_argmax", "neighbourhood_range", "upsampled_argmax", "upsampled_argmax_reference"]
