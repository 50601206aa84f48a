"""Dense instance affinity head (paper sec. 3.4.2, eq. 3-4, Fig. 5 and Fig. 6).

Given the affinity feature ``Q`` (``[C, h, w]``, collapsed to ``[HW, C]``) and the dynamic potential ``Psi``
(``[K, h, w]`` with ``K = N_st + D``, collapsed to ``[HW, K]``) the head computes eq. 4::

    P = Psi + phi0(Q) (phi1(Q)^T Psi) / Z

right to left (eq. 3): ``phi1(Q)^T Psi`` is a tiny ``[C, K]`` matrix, so time and memory are linear in
``HW`` and the ``HW x HW`` affinity matrix ``A = phi0(Q) phi1(Q)^T`` is never formed.
``phi0`` / ``phi1`` are each a 1x1 convolution followed by an activation.

Decisions (OPEN in the design notes), all exposed as constructor options:

* ``activation`` (default ``"relu"``): ``"relu"``, ``"softplus"`` or ``"none"``. ReLU / softplus keep
  ``phi >= 0`` so every affinity ``A_ij >= 0`` (a "probability-like" pairwise affinity, as the paper
  describes it) and ``P >= 0`` whenever ``Psi >= 0``; this is what makes the probability reading of ``P``
  in the matching loss valid. ReLU additionally allows exact zero affinity between pixels of different
  instances (orthogonal non-negative features). ``"none"`` gives signed affinities: then ``P`` must be
  treated as logits by the loss.
* ``normalize`` (default ``"sqrt_c_hw"``): the divisor ``Z``. ``"hw"``: ``Z = HW`` (the propagated term is
  a *mean* over pixels, so its magnitude does not grow with image size: a 1024x2048 test image and a
  512x1024 training crop see the same scale); ``"sqrt_c_hw"``: ``Z = sqrt(C) HW`` (additionally keeps the
  dot product of two ``C``-dim features O(1) at initialisation, as in scaled dot-product attention, so the
  residual ``Psi`` dominates at the start of training); ``"none"``: ``Z = 1`` (the paper's literal eq. 4;
  grows with ``HW``); ``"mass"``: a divisor per channel, ``Z_k = sqrt(C) sum_j |Psi_kj|``, so that channel
  ``k`` receives ``phi0(q_i) . mean_k(phi1) / sqrt(C)``, the affinity of pixel ``i`` to the ``Psi_k``-weighted
  mean feature of segment ``k``. With a global ``Z`` the propagated term of a thing channel scales with the
  share of the grid its box covers (a box of 1 % of the cells gets 1 % of a stuff class's term), which keeps
  the affinity nearly inert for small objects; ``mass`` makes it independent of the segment's size and of
  the scale of ``Psi`` (a diagonal ``[K, K]`` rescaling of eq. 3's ``phi1(Q)^T Psi``, still linear in
  ``HW``; ``A`` itself is unchanged).
* ``log_gain`` (default 0) / ``learn_gain`` (default off): a gain ``g = exp(log_gain)`` on the propagated
  term, ``P = Psi + g phi0(Q) (phi1(Q)^T Psi) / Z``; learnable, it lets training set the term's scale
  (one scalar parameter, ``log_gain``) instead of growing phi0 . phi1 by orders of magnitude. Off, the
  head has no such parameter (state dicts of earlier models load unchanged).
* Psi may be probabilities or logits: the head is linear in ``Psi`` and agnostic to that; the choice is made
  by :func:`unipan_pipeline.model.dynamic_potential.dynamic_potential` (``space``) and must match
  ``input_kind`` of the matching loss. With the defaults (variant B/C, probabilities, ReLU) ``P >= 0`` and
  the loss reads ``P`` as un-normalised probabilities.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, overload

import torch
from torch import Tensor, nn

from .cpu_inference import cpu_inference

Activation = Literal["relu", "softplus", "none"]
Normalize = Literal["hw", "sqrt_c_hw", "none", "mass"]

_WHERE = "instance_affinity.py"
_MASS_EPS = 1e-6  # below it a channel counts as empty (fp32 sums of probabilities)


def _make_activation(name: str) -> nn.Module:
    if name == "relu":
        return nn.ReLU(inplace=True)  # after a conv: saves one [C, h, w] allocation
    if name == "softplus":
        return nn.Softplus()
    if name == "none":
        return nn.Identity()
    raise ValueError(f"{_WHERE}: unknown activation {name!r} (expected 'relu', 'softplus' or 'none')")


class DenseInstanceAffinity(nn.Module):
    """Dense instance affinity applier ``P = Psi + phi0(Q) (phi1(Q)^T Psi) / Z`` (eq. 3-4).

    Args:
        feature_channels: ``C`` of the affinity feature ``Q`` (paper: 128).
        activation: activation after each 1x1 convolution (see module docstring).
        normalize: divisor ``Z`` of the propagated term (see module docstring).
        residual: add ``Psi`` back (eq. 4). ``False`` returns only the propagated term.
        log_gain: log of the gain on the propagated term (its initial value when learnt).
        learn_gain: make ``log_gain`` a parameter.
    """

    def __init__(
        self,
        feature_channels: int = 128,
        activation: Activation = "relu",
        normalize: Normalize = "sqrt_c_hw",
        residual: bool = True,
        *,
        log_gain: float = 0.0,
        learn_gain: bool = False,
    ) -> None:
        super().__init__()
        if feature_channels <= 0:
            raise ValueError(f"{_WHERE}: feature_channels must be positive, got {feature_channels}")
        if normalize not in ("hw", "sqrt_c_hw", "none", "mass"):
            raise ValueError(
                f"{_WHERE}: unknown normalize {normalize!r} (expected 'hw', 'sqrt_c_hw', 'none' or 'mass')"
            )
        self.feature_channels = feature_channels
        self.activation = activation
        self.normalize = normalize
        self.residual = residual
        c = feature_channels
        self.phi0 = nn.Sequential(nn.Conv2d(c, c, 1), _make_activation(activation))
        self.phi1 = nn.Sequential(nn.Conv2d(c, c, 1), _make_activation(activation))
        self.log_gain: nn.Parameter | float = (
            nn.Parameter(torch.tensor(float(log_gain))) if learn_gain else float(log_gain)
        )

    @property
    def learn_gain(self) -> bool:
        """Whether ``log_gain`` is a learnt parameter."""
        return isinstance(self.log_gain, nn.Parameter)

    def gain(self) -> float:
        """The gain ``exp(log_gain)`` on the propagated term, as a number."""
        log_gain = self.log_gain
        return math.exp(float(log_gain.detach()) if isinstance(log_gain, Tensor) else log_gain)

    def scale(self, num_pixels: int) -> float:
        """The factor ``g / Z`` applied to the propagated term for ``num_pixels = h * w`` (for ``mass``: its
        part shared by all channels, ``g / sqrt(C)``; see :meth:`channel_mass`)."""
        return self.gain() * self._inverse_z(num_pixels)

    def _inverse_z(self, num_pixels: int) -> float:
        if self.normalize == "hw":
            return 1.0 / num_pixels
        if self.normalize == "sqrt_c_hw":
            return 1.0 / (math.sqrt(self.feature_channels) * num_pixels)
        if self.normalize == "mass":
            return 1.0 / math.sqrt(self.feature_channels)
        return 1.0

    def channel_mass(self, psi: Tensor) -> Tensor | None:
        """For ``normalize="mass"``: ``sum_j |Psi_kj|`` per channel of ``psi`` (``[K, HW]``), clamped away
        from 0 (an empty channel then receives no propagated term); ``None`` for a global ``Z``."""
        if self.normalize != "mass":
            return None
        return psi.abs().sum(dim=1).clamp_min(_MASS_EPS)

    def embed(self, q: Tensor) -> tuple[Tensor, Tensor]:
        """``phi0(Q)`` and ``phi1(Q)`` flattened to ``[B, C, HW]`` (``q`` is ``[B, C, h, w]``).

        On a CPU without autograd (inference) each 1x1 convolution is taken as the matrix product it is,
        ``W q + b`` on ``[C, HW]`` (oneDNN's convolution reorders the large NCHW tensors to its blocked
        layout and back, ~1.5x the cost); the values agree to fp32 rounding (tested)."""
        b, c = q.shape[:2]
        if cpu_inference(q):  # phi0 / phi1 as matrix products; training keeps the convolutions
            flat = q.reshape(b, c, -1)
            return self._pointwise(self.phi0, flat), self._pointwise(self.phi1, flat)
        return self.phi0(q).reshape(b, c, -1), self.phi1(q).reshape(b, c, -1)

    @torch.no_grad()
    def live_channels(self, q: Tensor) -> tuple[Tensor, Tensor]:
        """Which of the ``C`` channels of ``phi0(Q)`` and ``phi1(Q)`` are non-zero at some cell of ``q``
        (``[C, h, w]`` or ``[B, C, h, w]``): two bool ``[C]`` masks.

        Only channels alive in both carry eq. 4's propagated term, ``sum_c phi0_c (phi1_c^T Psi)``: with
        ReLU, a channel whose pre-activation is negative everywhere (a "dead" unit) contributes nothing, and
        with no channel alive in both, ``P == Psi`` exactly."""
        f0, f1 = self.embed(q if q.ndim == 4 else q[None])  # [B, C, HW]
        return (f0 != 0).any(dim=2).any(dim=0), (f1 != 0).any(dim=2).any(dim=0)

    def _pointwise(self, phi: nn.Sequential, flat: Tensor) -> Tensor:
        """``phi`` (a 1x1 convolution and its activation) applied to ``[B, C, HW]`` as ``W x + b``."""
        conv, activation = phi[0], phi[1]
        assert isinstance(conv, nn.Conv2d) and conv.bias is not None
        weight = conv.weight.reshape(1, conv.out_channels, -1).expand(flat.shape[0], -1, -1)
        # under autocast, baddbmm runs in the autocast dtype, as the convolution does
        return activation(torch.baddbmm(conv.bias[None, :, None], weight, flat))

    @overload
    def forward(self, q: Tensor, psi: Tensor) -> Tensor: ...

    @overload
    def forward(self, q: Tensor, psi: Sequence[Tensor]) -> list[Tensor]: ...

    def forward(self, q: Tensor, psi: Tensor | Sequence[Tensor]) -> Tensor | list[Tensor]:
        """Apply the affinity.

        Args:
            q: ``[C, h, w]`` with ``psi`` a ``[K, h, w]`` tensor, or ``[B, C, h, w]`` with ``psi`` a
                sequence of ``B`` tensors ``[K_b, h, w]`` (``K_b`` may differ per image), or
                ``[1, C, h, w]`` with a tensor.
        Returns:
            ``P`` shaped like ``psi`` (a tensor, or a list for a sequence input).
        """
        if isinstance(psi, Tensor):
            if q.ndim == 4:
                if q.shape[0] != 1:
                    raise ValueError(f"{_WHERE}: batched q [B={q.shape[0]}, ...] needs a list of psi tensors")
                q = q[0]
            if q.ndim != 3:
                raise ValueError(f"{_WHERE}: q must be [C, h, w] or [B, C, h, w], got {tuple(q.shape)}")
            return self._propagate(q[None], [psi])[0]
        if q.ndim != 4 or q.shape[0] != len(psi):
            raise ValueError(
                f"{_WHERE}: with a list of {len(psi)} psi tensors q must be [B={len(psi)}, C, h, w], "
                f"got {tuple(q.shape)}"
            )
        return self._propagate(q, list(psi))

    def _propagate(self, q: Tensor, psis: list[Tensor]) -> list[Tensor]:
        _, c, h, w = q.shape
        if c != self.feature_channels:
            raise ValueError(f"{_WHERE}: q has {c} channels, the head expects {self.feature_channels}")
        for p in psis:
            if p.ndim != 3 or p.shape[-2:] != (h, w):
                raise ValueError(f"{_WHERE}: psi must be [K, h={h}, w={w}], got {tuple(p.shape)}")
        f0, f1 = self.embed(q)  # [B, C, HW] each
        # a learnt gain multiplies the tiny [C, K] factor below (with its gradient); a fixed one the scale
        scale = self._inverse_z(h * w) if self.learn_gain else self.scale(h * w)
        out = []
        # phi1(Q)^T Psi sums over all h*w cells: under fp16/bf16 autocast that sum overflows (fp16) or loses
        # the small propagated term (bf16), so the products and the residual are taken in fp32
        with torch.autocast(device_type=q.device.type, enabled=False):
            dtype = torch.promote_types(f0.dtype, torch.float32)  # at least fp32 (float64 stays)
            f0, f1 = f0.to(dtype), f1.to(dtype)
            for i, p in enumerate(psis):
                k = p.shape[0]
                pf = p.reshape(k, h * w).to(dtype)  # [K, HW]
                t = f1[i] @ pf.transpose(0, 1)  # [C, K]: phi1(Q)^T Psi, tiny
                mass = self.channel_mass(pf)
                if mass is not None:
                    t = t / mass  # per channel: the Psi_k-weighted mean of phi1 over the segment
                if self.learn_gain:
                    t = t * self.log_gain.to(dtype).exp()
                # [K, HW] = Psi^T + scale * (phi0(Q) (phi1(Q)^T Psi))^T, one fused [K, HW] allocation
                if self.residual:
                    res = torch.addmm(pf, t.transpose(0, 1), f0[i], alpha=scale)
                else:
                    res = (t.transpose(0, 1) * scale) @ f0[i]
                out.append(res.reshape(k, h, w))
        return out


def affinity_matrix(module: DenseInstanceAffinity, q: Tensor) -> Tensor:
    """The explicit ``[HW, HW]`` affinity ``A = phi0(Q) phi1(Q)^T / Z`` (tests / tiny inputs only).

    ``A[i, j]`` (row-major flattened pixels) is the affinity with which pixel ``j`` feeds pixel ``i``.
    """
    if q.ndim == 3:
        q = q[None]
    if q.ndim != 4 or q.shape[0] != 1:
        raise ValueError(f"{_WHERE}: affinity_matrix expects q [C,h,w] or [1,C,h,w], got {tuple(q.shape)}")
    f0, f1 = module.embed(q)
    h, w = q.shape[-2:]
    # scale the small [C, HW] factor, not the [HW, HW] product (one HW x HW allocation only)
    return (f0[0] * module.scale(h * w)).transpose(0, 1) @ f1[0]


def explicit_instance_affinity(module: DenseInstanceAffinity, q: Tensor, psi: Tensor) -> Tensor:
    """Reference implementation of eq. 4 computing ``(phi0(Q) phi1(Q)^T) Psi`` with the explicit matrix.

    Same result as ``module(q, psi)`` (same parameters, normalisation and residual flag) but with
    ``O((HW)^2)`` time and memory. For tests and the benchmark only.
    """
    if q.ndim == 4:
        q = q[0] if q.shape[0] == 1 else q
    if q.ndim != 3 or psi.ndim != 3 or psi.shape[-2:] != q.shape[-2:]:
        raise ValueError(
            f"{_WHERE}: explicit_instance_affinity expects q [C, h, w] and psi [K, h, w], "
            f"got {tuple(q.shape)} and {tuple(psi.shape)}"
        )
    k, h, w = psi.shape
    a = affinity_matrix(module, q)  # [HW, HW]
    pf = psi.reshape(k, h * w).to(a.dtype)
    prop = pf @ a.transpose(0, 1)  # [K, HW]: prop[k, i] = sum_j A[i, j] psi[k, j]
    mass = module.channel_mass(pf)
    if mass is not None:
        prop = prop / mass[:, None]
    res = pf + prop if module.residual else prop
    return res.reshape(k, h, w)


def pixel_affinity(module: DenseInstanceAffinity, q: Tensor, y: int, x: int) -> Tensor:
    """Affinities of pixel ``(y, x)`` to every pixel (row ``i = y * w + x`` of ``A``), as a ``[h, w]`` map.

    This is the heat map of Fig. 1e / Fig. 6: ``A[i, j] = phi0(q_i) . phi1(q_j) / Z`` -- how strongly pixel
    ``j`` feeds pixel ``(y, x)``. Computed from one feature vector, without forming ``A``.
    ``q`` is ``[C, h, w]`` (or ``[1, C, h, w]``).
    """
    if q.ndim == 3:
        q = q[None]
    if q.ndim != 4 or q.shape[0] != 1:
        raise ValueError(f"{_WHERE}: pixel_affinity expects q [C,h,w] or [1,C,h,w], got {tuple(q.shape)}")
    h, w = q.shape[-2:]
    if not (0 <= y < h and 0 <= x < w):
        raise ValueError(f"{_WHERE}: pixel ({y}, {x}) outside the {h}x{w} feature grid")
    f0, f1 = module.embed(q)
    row = f0[0, :, y * w + x] @ f1[0]  # [HW]
    return (row * module.scale(h * w)).reshape(h, w)


__all__ = [
    "DenseInstanceAffinity",
    "affinity_matrix",
    "explicit_instance_affinity",
    "pixel_affinity",
]
