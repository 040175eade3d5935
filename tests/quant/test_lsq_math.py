"""The LSQ quantizer computes exactly the paper's forward and gradients.

The reference formulas below are written from Esser et al., "Learned Step
Size Quantization" (ICLR 2020), eq. 1-5, independently of the implementation:

    v   = x / s
    x_q = s * round(clamp(v, Qn, Qp))
    dx_q/dx = 1 if Qn < v < Qp else 0                      (straight-through estimator)
    dx_q/ds = round(v) - v if Qn < v < Qp; Qn if v <= Qn; Qp if v >= Qp
    dL/ds   = g * sum over the elements sharing s of dL/dx_q * dx_q/ds,  g = 1 / sqrt(N * Qp)

with N = the number of elements sharing one step size: the fan-in of an output
channel for weights, the elements of one sample for layer inputs.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gaqat_wrap.quant.lsq import (
    MAX_BITS,
    MIN_BITS,
    SCALE_EPS,
    lsq_fake_quant,
    lsq_grad_scale,
    lsq_init_scale,
    mse_init_scale,
    quant_range,
    validate_bits,
)
from gaqat_wrap.quant.quantizer import LSQQuantizer

BITS = list(range(2, 9))
SIGNS = [True, False]


def paper_range(bits: int, signed: bool) -> tuple[int, int]:
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)


def reference_forward(x: torch.Tensor, s: torch.Tensor, qn: int, qp: int) -> torch.Tensor:
    return s * torch.round(torch.clamp(x / s, qn, qp))


def reference_grads(x, s, qn, qp, grad_out, g):
    """Elementwise LSQ gradients, then summed over the elements that share each step size."""
    v = x / s
    inside = (v > qn) & (v < qp)
    grad_x = torch.where(inside, grad_out, torch.zeros_like(grad_out))
    dxq_ds = torch.where(v <= qn, torch.full_like(v, qn), torch.where(v >= qp, torch.full_like(v, qp), torch.round(v) - v))
    per_element = grad_out * dxq_ds
    summed = per_element.sum() if s.dim() == 0 else per_element.sum(dim=tuple(range(1, x.dim()))).reshape(s.shape)
    return grad_x, g * summed


def ste_autograd_reference(x, s, qn, qp, g):
    """The LSQ paper's own formulation via autograd tricks: scaled step size + detached rounding offset."""
    s_scaled = (s - s * g).detach() + s * g  # value s, gradient scaled by g
    v = torch.clamp(x / s_scaled, qn, qp)
    v_rounded = (torch.round(v) - v).detach() + v
    return v_rounded * s_scaled


def values_with_edges(scale: torch.Tensor, qn: int, qp: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Random values spanning beyond the range, plus points exactly on Qn*s, Qp*s and half-steps."""
    gen = torch.Generator().manual_seed(qp * 7 + qn)
    span = (qp - qn + 4) / 2
    s_view = scale.reshape((-1,) + (1,) * (len(shape) - 1)) if scale.dim() else scale
    x = (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) * span * s_view
    flat = x.reshape(shape[0], -1) if scale.dim() else x.reshape(1, -1)
    s_rows = scale.reshape(-1, 1) if scale.dim() else scale.reshape(1, 1)
    edges = torch.tensor([qn, qp, qn - 1, qp + 1, 0.5, -0.5 if qn < 0 else 1.5, qp - 0.5], dtype=torch.float64)
    flat[:, : edges.numel()] = edges * s_rows
    return flat.reshape(shape)


@pytest.mark.parametrize("signed", SIGNS)
@pytest.mark.parametrize("bits", BITS)
def test_quant_range_matches_paper(bits, signed):
    assert quant_range(bits, signed) == paper_range(bits, signed)


@pytest.mark.parametrize("bad", [1, 9, 0, -4, 16])
def test_validate_bits_rejects_out_of_range(bad):
    with pytest.raises(ValueError, match=f"between {MIN_BITS} and {MAX_BITS}, got {bad}"):
        validate_bits(bad)


@pytest.mark.parametrize("bad", [4.0, "4", None, True, False, torch.tensor(4)])
def test_validate_bits_rejects_non_int(bad):
    with pytest.raises(TypeError, match="must be an int"):
        validate_bits(bad, "act_bits")


def test_validate_bits_names_the_argument():
    with pytest.raises(ValueError, match=r"^act_bits must be"):
        validate_bits(12, "act_bits")


@pytest.mark.parametrize("signed", SIGNS)
@pytest.mark.parametrize("bits", BITS)
def test_forward_and_gradients_per_tensor(bits, signed):
    qn, qp = paper_range(bits, signed)
    s = torch.tensor(0.37, dtype=torch.float64)
    x = values_with_edges(s, qn, qp, (4, 32))
    grad_out = torch.randn(x.shape, generator=torch.Generator().manual_seed(bits), dtype=torch.float64)
    g = 1 / math.sqrt(x[0].numel() * qp)

    xv = x.clone().requires_grad_(True)
    sv = s.clone().requires_grad_(True)
    y = lsq_fake_quant(xv, sv, qn, qp, g)
    y.backward(grad_out)

    assert torch.equal(y.detach(), reference_forward(x, s, qn, qp))
    ref_gx, ref_gs = reference_grads(x, s, qn, qp, grad_out, g)
    assert torch.equal(xv.grad, ref_gx)
    torch.testing.assert_close(sv.grad, ref_gs, rtol=1e-6, atol=1e-9)  # reduced in float32 by design


@pytest.mark.parametrize("signed", SIGNS)
@pytest.mark.parametrize("bits", BITS)
def test_forward_and_gradients_per_channel(bits, signed):
    qn, qp = paper_range(bits, signed)
    s = torch.tensor([0.05, 0.2, 1.3], dtype=torch.float64)
    x = values_with_edges(s, qn, qp, (3, 5, 2, 2))  # conv weight: 3 output channels, fan-in 20
    grad_out = torch.randn(x.shape, generator=torch.Generator().manual_seed(bits + 100), dtype=torch.float64)
    g = 1 / math.sqrt(20 * qp)

    xv = x.clone().requires_grad_(True)
    sv = s.clone().requires_grad_(True)
    y = lsq_fake_quant(xv, sv.view(-1, 1, 1, 1), qn, qp, g)
    y.backward(grad_out)

    assert torch.equal(y.detach(), reference_forward(x, s.view(-1, 1, 1, 1), qn, qp))
    ref_gx, ref_gs = reference_grads(x, s.view(-1, 1, 1, 1), qn, qp, grad_out, g)
    assert torch.equal(xv.grad, ref_gx)
    torch.testing.assert_close(sv.grad, ref_gs.reshape(3), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_gradients_match_the_papers_autograd_formulation(bits):
    """Away from the exact range ends (where the STE convention differs) the two formulations agree."""
    qn, qp = paper_range(bits, True)
    gen = torch.Generator().manual_seed(bits)
    s = torch.tensor([0.1, 0.3], dtype=torch.float64)
    x = torch.randn(2, 50, generator=gen, dtype=torch.float64) * qp * 0.2
    g = lsq_grad_scale(50, qp)
    ours = [x.clone().requires_grad_(True), s.clone().requires_grad_(True)]
    lsq_fake_quant(ours[0], ours[1].view(-1, 1), qn, qp, g).pow(2).sum().backward()
    ref = [x.clone().requires_grad_(True), s.clone().requires_grad_(True)]
    ste_autograd_reference(ref[0], ref[1].view(-1, 1), qn, qp, g).pow(2).sum().backward()
    torch.testing.assert_close(ours[0].grad, ref[0].grad, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours[1].grad, ref[1].grad, rtol=1e-6, atol=1e-9)


def test_scale_gradient_matches_finite_differences_where_clipped():
    """Fully clipped inputs make x_q = s*Qn or s*Qp, smooth in s: the LSQ gradient is the true derivative."""
    qn, qp = quant_range(4, signed=True)
    x = torch.tensor([-50.0, -20.0, 9.0, 30.0, 44.0], dtype=torch.float64).requires_grad_(True)
    s = torch.tensor(0.5, dtype=torch.float64).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x_, s_: lsq_fake_quant(x_, s_, qn, qp, 1.0), (x, s))


def test_scale_gradient_in_range_is_true_derivative_minus_x_over_s():
    """Inside the range round(x/s) is locally constant, so d(s*round(x/s))/ds = round(x/s); LSQ subtracts x/s (the STE)."""
    qn, qp = quant_range(8, signed=True)
    x = torch.tensor([0.33, -1.21, 2.74, 0.07], dtype=torch.float64)
    s = torch.tensor(0.1, dtype=torch.float64)
    eps = 1e-7
    for i in range(x.numel()):
        xi = x[i : i + 1]
        numeric = (lsq_fake_quant(xi, s + eps, qn, qp) - lsq_fake_quant(xi, s - eps, qn, qp)) / (2 * eps)
        sv = s.clone().requires_grad_(True)
        lsq_fake_quant(xi, sv, qn, qp, 1.0).sum().backward()
        torch.testing.assert_close(sv.grad, (numeric - xi / s).sum(), rtol=1e-6, atol=1e-6)


def test_scale_gradient_reduces_over_broadcast_leading_dimensions():
    """A scale of shape (C,) against x of shape (B, C) (the docstring's "broadcastable") gets a (C,) gradient."""
    qn, qp = quant_range(4, signed=True)
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    s = torch.tensor([0.2, 0.4, 0.8], dtype=torch.float64, requires_grad=True)
    lsq_fake_quant(x, s, qn, qp, 1.0).sum().backward()
    s2 = s.detach().clone().requires_grad_(True)
    lsq_fake_quant(x, s2.view(1, 3), qn, qp, 1.0).sum().backward()
    assert s.grad.shape == (3,)
    torch.testing.assert_close(s.grad, s2.grad)


def test_step_size_is_clamped_positive_in_the_forward():
    x = torch.tensor([0.0, 3e-8, -5.0])
    y = lsq_fake_quant(x, torch.tensor(-1.0), -8, 7)
    torch.testing.assert_close(y, reference_forward(x, torch.tensor(SCALE_EPS), -8, 7))


@pytest.mark.parametrize(("shape", "n_per_scale"), [((2, 3, 4, 4), 48), ((2, 7, 5), 35), ((2, 9), 9), ((9,), 9)])
def test_input_quantizer_grad_scale_uses_elements_per_sample(shape, n_per_scale):
    q = LSQQuantizer(4, kind="input", signed=True)
    q.initialize_from(torch.ones(1))
    q.scale.data.fill_(0.25)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    grad_out = torch.randn(shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    q.double()(x).backward(grad_out)
    qn, qp = q.qrange
    _, expected = reference_grads(x, torch.tensor(0.25, dtype=torch.float64), qn, qp, grad_out, 1 / math.sqrt(n_per_scale * qp))
    assert q.scale.shape == (1,)  # one number, kept as a 1-element vector (FSDP refuses 0-d parameters)
    torch.testing.assert_close(q.scale.grad, expected.reshape(1), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("bits", [3, 8])
def test_weight_quantizer_is_per_output_channel_with_fan_in_grad_scale(bits):
    weight = torch.randn(4, 3, 3, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    q = LSQQuantizer(bits, kind="weight", num_channels=4).double()
    q.initialize_from_weight(weight)
    scales = q.scale.detach().clone()
    grad_out = torch.randn(weight.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    wv = weight.clone().requires_grad_(True)
    y = q(wv)
    y.backward(grad_out)
    qn, qp = quant_range(bits, signed=True)
    assert q.is_signed and q.qrange == (qn, qp)
    assert torch.equal(y.detach(), reference_forward(weight, scales.view(-1, 1, 1, 1), qn, qp))
    ref_gx, ref_gs = reference_grads(weight, scales.view(-1, 1, 1, 1), qn, qp, grad_out, 1 / math.sqrt(27 * qp))
    assert torch.equal(wv.grad, ref_gx)
    torch.testing.assert_close(q.scale.grad, ref_gs.reshape(4), rtol=1e-6, atol=1e-9)


def test_lsq_init_rule_is_two_mean_abs_over_sqrt_qp():
    w = torch.tensor([[1.0, -3.0], [0.5, 0.5]])
    torch.testing.assert_close(lsq_init_scale(w, qp=7, dim=0), torch.tensor([4.0, 1.0]) / math.sqrt(7))
    torch.testing.assert_close(lsq_init_scale(w, qp=7), torch.tensor(2.5 / math.sqrt(7)))


@pytest.mark.parametrize("bits", [3, 4, 8])
def test_mse_init_is_no_worse_than_lsq_init(bits):
    qn, qp = quant_range(bits, signed=True)
    w = torch.randn(8, 64, generator=torch.Generator().manual_seed(bits))
    def err(s):
        return (reference_forward(w, s.view(-1, 1), qn, qp) - w).pow(2).sum(dim=1)
    mse, lsq = mse_init_scale(w, qn, qp, dim=0), lsq_init_scale(w, qp, dim=0)
    assert (mse > 0).all() and (lsq > 0).all()
    assert (err(mse) <= err(lsq) + 1e-6).all()


# -- properties -----------------------------------------------------------------------------------------------------

finite = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, allow_infinity=False, width=32)


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(finite, min_size=1, max_size=40),
    scale=st.floats(min_value=0.001953125, max_value=50.0, width=32),
    bits=st.integers(MIN_BITS, MAX_BITS),
    signed=st.booleans(),
)
def test_outputs_lie_on_the_grid_within_range_and_quantization_is_idempotent(values, scale, bits, signed):
    qn, qp = quant_range(bits, signed)
    x = torch.tensor(values)
    s = torch.tensor(scale)
    y = lsq_fake_quant(x, s, qn, qp)
    levels = y / s
    assert torch.allclose(levels, torch.round(levels), atol=1e-3, rtol=0), "outputs are integer multiples of s"
    assert (torch.round(levels) >= qn).all() and (torch.round(levels) <= qp).all()
    assert (y >= qn * s - 1e-4 * scale).all() and (y <= qp * s + 1e-4 * scale).all()
    assert torch.equal(lsq_fake_quant(y, s, qn, qp), y), "q(q(x)) == q(x)"


@settings(max_examples=40, deadline=None)
@given(
    values=st.lists(finite, min_size=2, max_size=24).filter(lambda v: len(v) % 2 == 0),
    scales=st.tuples(st.floats(0.001953125, 10.0, width=32), st.floats(0.001953125, 10.0, width=32)),
    bits=st.integers(MIN_BITS, MAX_BITS),
)
def test_per_channel_outputs_lie_on_each_channels_grid(values, scales, bits):
    qn, qp = quant_range(bits, signed=True)
    x = torch.tensor(values).reshape(2, -1)
    s = torch.tensor(scales).view(2, 1)
    y = lsq_fake_quant(x, s, qn, qp)
    assert torch.equal(y, reference_forward(x, s, qn, qp))
    assert torch.equal(lsq_fake_quant(y, s, qn, qp), y)


@settings(max_examples=40, deadline=None)
@given(values=st.lists(finite, min_size=1, max_size=30), bits=st.integers(MIN_BITS, MAX_BITS), signed=st.booleans())
def test_quantization_error_is_at_most_half_a_step_inside_the_range(values, bits, signed):
    qn, qp = quant_range(bits, signed)
    s = torch.tensor(0.5)
    x = torch.tensor(values)
    inside = (x / s > qn) & (x / s < qp)
    err = (lsq_fake_quant(x, s, qn, qp) - x).abs()
    assert (err[inside] <= s / 2 + 1e-4).all()
