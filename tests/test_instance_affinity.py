"""Tests of the dense instance affinity head (eq. 3-4): efficient == explicit, forward and backward."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from unipan_pipeline.model.instance_affinity import (
    DenseInstanceAffinity,
    affinity_matrix,
    explicit_instance_affinity,
    pixel_affinity,
)
from unipan_pipeline.training.schedule import parameter_groups

torch.set_num_threads(1)

C, H, W, K = 6, 5, 7, 4


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(C, H, W, generator=g, dtype=torch.float64)
    psi = torch.rand(K, H, W, generator=g, dtype=torch.float64)
    return q, psi


def _module(activation: str, normalize: str, seed: int = 1) -> DenseInstanceAffinity:
    torch.manual_seed(seed)
    return DenseInstanceAffinity(C, activation=activation, normalize=normalize).double()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("activation", "normalize"),
    list(itertools.product(["relu", "softplus", "none"], ["hw", "sqrt_c_hw", "none", "mass"])),
)
def test_efficient_equals_explicit_forward_and_backward(activation: str, normalize: str) -> None:
    mod = _module(activation, normalize)
    q0, psi0 = _inputs()
    weights = torch.randn(K, H, W, dtype=torch.float64, generator=torch.Generator().manual_seed(3))

    def run(fn: str) -> tuple[torch.Tensor, list[torch.Tensor]]:
        q = q0.clone().requires_grad_(True)
        psi = psi0.clone().requires_grad_(True)
        mod.zero_grad()
        p = mod(q, psi) if fn == "efficient" else explicit_instance_affinity(mod, q, psi)
        (p * weights).sum().backward()
        grads = [q.grad, psi.grad] + [prm.grad for prm in mod.parameters()]
        assert all(gr is not None for gr in grads)
        return p.detach(), [gr.clone() for gr in grads]  # type: ignore[union-attr]

    p_eff, g_eff = run("efficient")
    p_exp, g_exp = run("explicit")
    assert p_eff.shape == (K, H, W)
    torch.testing.assert_close(p_eff, p_exp, rtol=0, atol=1e-5)
    torch.testing.assert_close(p_eff, p_exp, rtol=1e-10, atol=1e-12)  # far tighter in float64
    assert len(g_eff) == 2 + 4  # q, psi, two conv weights + biases
    for ge, gx in zip(g_eff, g_exp, strict=True):
        torch.testing.assert_close(ge, gx, rtol=1e-10, atol=1e-10)
    # the propagated term is not trivially zero
    assert float((p_eff - psi0).abs().max()) > 1e-6


def test_matches_literal_formula() -> None:
    """P = Psi + phi0(Q) phi1(Q)^T Psi / Z with Q as an [HW, C] matrix, written out from eq. 4."""
    mod = _module("relu", "hw")
    q, psi = _inputs(5)
    conv0, conv1 = mod.phi0[0], mod.phi1[0]
    qm = q.reshape(C, -1).T  # [HW, C]
    f0 = torch.relu(qm @ conv0.weight[:, :, 0, 0].T + conv0.bias)
    f1 = torch.relu(qm @ conv1.weight[:, :, 0, 0].T + conv1.bias)
    psim = psi.reshape(K, -1).T  # [HW, K]
    expect = psim + (f0 @ f1.T) @ psim / (H * W)
    torch.testing.assert_close(mod(q, psi).reshape(K, -1).T, expect.detach())


def test_pixel_affinity_is_a_row_of_the_matrix() -> None:
    mod = _module("softplus", "sqrt_c_hw")
    q, _ = _inputs(2)
    a = affinity_matrix(mod, q)
    assert a.shape == (H * W, H * W)
    for y, x in [(0, 0), (2, 3), (4, 6)]:
        torch.testing.assert_close(pixel_affinity(mod, q, y, x), a[y * W + x].reshape(H, W))
    with pytest.raises(ValueError, match="outside"):
        pixel_affinity(mod, q, H, 0)


def test_batched_list_input_equals_per_image() -> None:
    mod = _module("relu", "sqrt_c_hw")
    q1, psi1 = _inputs(1)
    q2, psi2 = _inputs(2)
    outs = mod(torch.stack([q1, q2]), [psi1, psi2[:2]])
    assert isinstance(outs, list) and [o.shape[0] for o in outs] == [K, 2]
    torch.testing.assert_close(outs[0], mod(q1, psi1))
    torch.testing.assert_close(outs[1], mod(q2, psi2[:2]))
    torch.testing.assert_close(mod(q1[None], psi1), mod(q1, psi1))
    with pytest.raises(ValueError, match="list"):
        mod(torch.stack([q1, q2]), psi1)


def test_linear_memory_large_grid() -> None:
    """HW = 62500 pixels: the explicit matrix would need ~15.6 GB in float32; the head must run fast."""
    torch.manual_seed(0)
    mod = DenseInstanceAffinity(8)
    q = torch.randn(8, 250, 250)
    psi = torch.rand(3, 250, 250)
    p = mod(q, psi)
    assert p.shape == (3, 250, 250)
    assert bool(torch.isfinite(p).all())


def test_hw_normalisation_is_size_invariant_and_nonnegative() -> None:
    """With constant Q and Psi the propagated term under Z = HW does not depend on the grid size."""
    mod = _module("relu", "hw").requires_grad_(False)
    vals = []
    for h, w in [(3, 4), (12, 20)]:
        q = torch.ones(C, h, w, dtype=torch.float64)
        psi = torch.full((2, h, w), 0.25, dtype=torch.float64)
        p = mod(q, psi)
        assert bool((p >= 0).all())
        vals.append(float(p[0, 0, 0]))
    assert vals[0] == pytest.approx(vals[1], rel=1e-12)
    mod_none = _module("relu", "none").requires_grad_(False)
    q = torch.ones(C, 3, 4, dtype=torch.float64)
    psi = torch.full((2, 3, 4), 0.25, dtype=torch.float64)
    # Z = 1 grows linearly with HW relative to Z = HW
    prop_none = float(mod_none(q, psi)[0, 0, 0]) - 0.25
    assert prop_none == pytest.approx((vals[0] - 0.25) * 12, rel=1e-12)


def test_bad_options_raise() -> None:
    with pytest.raises(ValueError, match=r"instance_affinity\.py: unknown activation"):
        DenseInstanceAffinity(4, activation="tanh")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown normalize"):
        DenseInstanceAffinity(4, normalize="bogus")  # type: ignore[arg-type]
    mod = DenseInstanceAffinity(4)
    with pytest.raises(ValueError, match="channels"):
        mod(torch.zeros(5, 3, 3), torch.zeros(2, 3, 3))
    with pytest.raises(ValueError, match="psi must be"):
        mod(torch.zeros(4, 3, 3), torch.zeros(2, 3, 4))


def test_without_residual_returns_propagated_term() -> None:
    torch.manual_seed(4)
    with_res = DenseInstanceAffinity(C, residual=True).double()
    no_res = DenseInstanceAffinity(C, residual=False).double()
    no_res.load_state_dict(with_res.state_dict())
    q, psi = _inputs(6)
    torch.testing.assert_close(no_res(q, psi), with_res(q, psi) - psi)
    torch.testing.assert_close(no_res(q, psi), explicit_instance_affinity(no_res, q, psi))


def test_mass_normalisation_is_independent_of_segment_size_and_scale() -> None:
    """``normalize="mass"``: channel k receives phi0(q_i) . (Psi_k-weighted mean of phi1) / sqrt(C), so a
    box 4x larger over a uniform feature, or Psi_k scaled by 10, receives the same propagated term; with a
    global Z (sqrt_c_hw) the term grows with the box (the reason the affinity stayed nearly inert)."""
    h, w = 16, 16
    q = torch.randn(C, 1, 1, dtype=torch.float64).expand(C, h, w).clone()  # one feature everywhere
    psi = torch.zeros(2, h, w, dtype=torch.float64)
    psi[0, 2:4, 2:4] = 0.7  # a 2x2 box
    psi[1, 2:6, 2:6] = 0.7  # a 4x4 box
    for normalize, same in (("mass", True), ("sqrt_c_hw", False)):
        mod = _module("softplus", normalize)
        with torch.no_grad():
            prop = mod(q, psi) - psi  # the propagated term
            scaled = mod(q, 10 * psi) - 10 * psi
        small, large = prop[0, 10, 10], prop[1, 10, 10]  # a pixel outside both boxes
        assert float(small) > 0
        if same:
            torch.testing.assert_close(small, large, rtol=1e-12, atol=0)
            torch.testing.assert_close(scaled, prop, rtol=1e-10, atol=1e-12)
        else:
            torch.testing.assert_close(large, 4 * small, rtol=1e-12, atol=0)


def test_mass_normalisation_leaves_an_empty_channel_unchanged() -> None:
    mod = _module("relu", "mass")
    q, psi = _inputs(7)
    psi[1] = 0.0
    with torch.no_grad():
        p = mod(q, psi)
    assert torch.isfinite(p).all()
    assert float(p[1].abs().max()) == 0.0


@pytest.mark.parametrize("activation", ["relu", "softplus", "none"])
def test_inference_embedding_as_matrix_product_equals_the_convolutions(activation: str) -> None:
    """Without autograd on a CPU, phi0 / phi1 run as ``W q + b`` matrix products instead of oneDNN's 1x1
    convolutions: the same embedding (to fp32 rounding), the same P, and under bf16 autocast the same dtype
    as the convolution gives."""
    torch.manual_seed(2)
    module = DenseInstanceAffinity(16, activation=activation)  # type: ignore[arg-type]
    q = torch.randn(2, 16, 9, 11)
    with torch.no_grad():
        fast = module.embed(q)
    conv = module.embed(q.clone().requires_grad_(True))  # autograd: the convolutions
    for a, b in zip(fast, conv, strict=True):
        assert a.shape == b.shape == (2, 16, 99)
        torch.testing.assert_close(a, b.detach(), rtol=1e-5, atol=1e-5)
    psi = torch.rand(5, 9, 11)
    with torch.no_grad():
        p_fast = module(q[:1], psi)
    p_conv = module(q[:1].clone().requires_grad_(True), psi).detach()
    torch.testing.assert_close(p_fast, p_conv, rtol=1e-5, atol=1e-6)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        fast_bf16 = module.embed(q)[0]
        conv_bf16 = module.phi0(q).reshape(2, 16, -1)
    assert fast_bf16.dtype == conv_bf16.dtype == torch.bfloat16
    torch.testing.assert_close(fast_bf16.float(), conv_bf16.float(), rtol=2e-2, atol=2e-2)


def test_gain_scales_the_propagated_term_and_learns_through_its_log() -> None:
    """``P = Psi + g phi0(Q)(phi1(Q)^T Psi) / Z`` with ``g = exp(log_gain)``: fixed or learnt, the same P;
    learnt, ``dL/dlog_gain`` is the propagated term's share of ``dL/dP``; off, no parameter is added."""
    q, psi = _inputs(3)
    plain = _module("relu", "sqrt_c_hw")
    learnt = DenseInstanceAffinity(C, log_gain=1.5, learn_gain=True).double()
    fixed = DenseInstanceAffinity(C, log_gain=1.5).double()
    for m in (fixed, learnt):
        m.load_state_dict(plain.state_dict(), strict=False)
    assert "log_gain" not in plain.state_dict() and "log_gain" not in fixed.state_dict()
    assert set(learnt.state_dict()) == {*plain.state_dict(), "log_gain"}
    base = plain(q, psi)
    expected = psi + math.exp(1.5) * (base - psi)
    torch.testing.assert_close(fixed(q, psi), expected)
    torch.testing.assert_close(explicit_instance_affinity(fixed, q, psi), expected)
    p = learnt(q, psi)
    torch.testing.assert_close(p.detach(), expected)
    weights = torch.rand(p.shape, dtype=p.dtype, generator=torch.Generator().manual_seed(5))
    (p * weights).sum().backward()
    assert learnt.log_gain.grad is not None
    torch.testing.assert_close(learnt.log_gain.grad, ((expected - psi) * weights).sum())


def test_learnt_gain_gets_no_weight_decay() -> None:
    groups = parameter_groups(DenseInstanceAffinity(C, learn_gain=True), weight_decay=0.1)
    no_decay = next(g for g in groups if g["weight_decay"] == 0.0)
    assert any(p.ndim == 0 for p in no_decay["params"])
    assert all(p.ndim > 0 for g in groups if g["weight_decay"] > 0 for p in g["params"])
