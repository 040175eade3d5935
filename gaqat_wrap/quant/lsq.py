"""LSQ fake quantization (Esser et al., "Learned Step Size Quantization", ICLR 2020).

For a tensor ``x``, a positive step size ``s`` and an integer range
``[Qn, Qp]`` the forward is::

    x_q = s * round(clamp(x / s, Qn, Qp))

with straight-through rounding. The gradients are the LSQ ones (paper eq. 3
and 5), with the paper's strict inequalities at the range ends::

    dL/dx = dL/dx_q                   if Qn < x/s < Qp, else 0
    dL/ds = g * sum(dL/dx_q * t)      t = round(x/s) - x/s   if Qn < x/s < Qp
                                      t = Qn                 if x/s <= Qn
                                      t = Qp                 if x/s >= Qp

where ``g`` is the gradient scale ``1 / sqrt(N * Qp)`` and the sum runs over
the elements that share one step size. ``round`` is round-half-to-even, as in
``torch.round`` and ONNX ``QuantizeLinear``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

MIN_BITS = 2
MAX_BITS = 8
SCALE_EPS = 1e-8
"""Step sizes are clamped to at least this value in the forward."""


def validate_bits(bits: object, what: str = "bits") -> int:
    """Return ``bits`` if it is an int in [2, 8], else raise a clear error.

    Examples:
        >>> validate_bits(4)
        4
    """
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise TypeError(f"{what} must be an int between {MIN_BITS} and {MAX_BITS}, got {bits!r} ({type(bits).__name__})")
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"{what} must be between {MIN_BITS} and {MAX_BITS}, got {bits}")
    return bits


def quant_range(bits: int, signed: bool) -> tuple[int, int]:
    """Integer range ``(Qn, Qp)`` for ``bits`` bits.

    Signed: ``(-2^(b-1), 2^(b-1) - 1)``; unsigned: ``(0, 2^b - 1)``.

    Examples:
        >>> quant_range(4, signed=True), quant_range(4, signed=False)
        ((-8, 7), (0, 15))
    """
    validate_bits(bits)
    if signed:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def lsq_grad_scale(elements_per_scale: int, qp: int) -> float:
    """LSQ gradient scale ``g = 1 / sqrt(N * Qp)``.

    Examples:
        >>> round(lsq_grad_scale(100, 7), 6)
        0.037796
    """
    return 1.0 / math.sqrt(max(elements_per_scale, 1) * qp)


def _reduce_to(t: Tensor, shape: torch.Size, dtype: torch.dtype) -> Tensor:
    """Sum ``t`` over the dimensions that ``shape`` broadcasts, accumulating in ``dtype``."""
    lead = t.dim() - len(shape)  # broadcast over leading dimensions, e.g. scale (C,) against x (B, C)
    dims = [*range(lead), *(lead + i for i, n in enumerate(shape) if n == 1 and t.shape[lead + i] != 1)]
    if not dims:  # an empty dim list would sum everything
        return t.to(dtype)
    return t.sum(dim=dims, dtype=dtype).reshape(shape)


def fake_quant_values(x: Tensor, scale: Tensor, qn: int, qp: int) -> Tensor:
    """The forward ``s * round(clamp(x / s, Qn, Qp))`` in one division and three in-place ops (no autograd).

    ``scale`` must already be positive and of ``x``'s dtype.

    Examples:
        >>> fake_quant_values(torch.tensor([0.26, 9.0]), torch.tensor(0.5), -4, 3)
        tensor([0.5000, 1.5000])
    """
    return torch.div(x, scale).round_().clamp_(qn, qp).mul_(scale)


def step_size_derivative(v: Tensor, qn: int, qp: int, rounded: Tensor | None = None) -> Tensor:
    """``dx_q/ds`` for ``v = x / s`` (module docstring), in a fresh buffer.

    ``round(v) - v`` inside the range, ``Qn`` / ``Qp`` outside, computed as
    ``clamp(round(v), Qn, Qp) - (v inside, 0 outside)``. ``rounded`` is
    ``clamp(round(v), Qn, Qp)`` if the caller has it; without it ``v`` is
    rounded in place (and so overwritten) to save a buffer.

    Examples:
        >>> step_size_derivative(torch.tensor([0.25, -9.0, 7.0]), -8, 7)
        tensor([-0.2500, -8.0000,  7.0000])
    """
    # hardtanh_backward(a, v, Qn, Qp) is a where Qn < v < Qp and 0 elsewhere: the strict LSQ mask
    # without bool tensors (slow on CPU).
    v_inside = torch.ops.aten.hardtanh_backward(v, v, qn, qp)
    if rounded is None:
        rounded = v.round_().clamp_(qn, qp)
    return torch.sub(rounded, v_inside, out=v_inside)


def reduce_step_size_grad(per_element: Tensor, scale_shape: torch.Size, scale_dtype: torch.dtype,
                          grad_scale: float) -> Tensor:
    """``g * sum(per_element)`` over the elements sharing each step size, accumulated in float32 (float64 inputs: float64).

    Examples:
        >>> reduce_step_size_grad(torch.ones(2, 3), torch.Size([2, 1]), torch.float32, 0.5).flatten().tolist()
        [1.5, 1.5]
    """
    accumulate = torch.float64 if per_element.dtype == torch.float64 else torch.float32
    return _reduce_to(per_element, scale_shape, accumulate).mul_(grad_scale).to(scale_dtype)


class _LSQFakeQuant(torch.autograd.Function):
    """The LSQ forward and gradients of the module docstring in few, vectorised passes.

    Only ``x`` and the step size are saved; the backward recomputes ``v = x / s``.
    Each elementwise op is a pass over memory and, on a busy machine, a wait for
    every thread, so the backward uses seven full-size ops and three fresh
    buffers: ``hardtanh_backward(a, v, Qn, Qp)`` is ``a`` where ``Qn < v < Qp``
    and 0 elsewhere (the strict LSQ mask, without bool tensors, which are slow
    on CPU). Reductions accumulate in float32 (float64 for float64 inputs).
    """

    @staticmethod
    def forward(ctx, x: Tensor, scale: Tensor, qn: int, qp: int, grad_scale: float) -> Tensor:  # type: ignore[override]
        s = scale.to(x.dtype)
        ctx.save_for_backward(x, s)
        ctx.qn, ctx.qp, ctx.grad_scale = qn, qp, grad_scale
        ctx.scale_shape, ctx.scale_dtype = scale.shape, scale.dtype
        return fake_quant_values(x, s, qn, qp)

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, s = ctx.saved_tensors
        qn, qp = ctx.qn, ctx.qp
        v = torch.div(x, s)
        grad_x = torch.ops.aten.hardtanh_backward(grad_out, v, qn, qp) if ctx.needs_input_grad[0] else None
        grad_scale = None
        if ctx.needs_input_grad[1]:
            step_term = step_size_derivative(v, qn, qp)  # rounds v in place: last use of v
            grad_scale = reduce_step_size_grad(step_term.mul_(grad_out), ctx.scale_shape, ctx.scale_dtype,
                                               ctx.grad_scale)
        return grad_x, grad_scale, None, None, None


class FakeQuantArgs(NamedTuple):
    """The arguments of one fake quantization after ``x``: step size (broadcastable to ``x``), ``Qn``, ``Qp``, ``g``.

    Examples:
        >>> args = FakeQuantArgs(torch.tensor(0.5), -4, 3, 1.0)
        >>> lsq_fake_quant(torch.tensor([0.26, 9.0]), *args)
        tensor([0.5000, 1.5000])
    """

    scale: Tensor
    qn: int
    qp: int
    grad_scale: float


def lsq_fake_quant(x: Tensor, scale: Tensor, qn: int, qp: int, grad_scale: float = 1.0) -> Tensor:
    """Fake-quantize ``x`` with step size ``scale`` (broadcastable to ``x``).

    The scale is clamped to at least :data:`SCALE_EPS`; the gradient w.r.t.
    ``scale`` is multiplied by ``grad_scale`` (the LSQ ``g``).

    Examples:
        >>> x = torch.tensor([-1.0, 0.26, 0.74, 5.0])
        >>> lsq_fake_quant(x, torch.tensor(0.5), -4, 3)
        tensor([-1.0000,  0.5000,  0.5000,  1.5000])
    """
    return _LSQFakeQuant.apply(x, scale.clamp(min=SCALE_EPS), qn, qp, grad_scale)


def lsq_init_scale(x: Tensor, qp: int, dim: int | None = None) -> Tensor:
    """LSQ step-size initialisation ``2 * mean|x| / sqrt(Qp)``.

    With ``dim`` given, one value per index of that dimension (per-channel).

    Examples:
        >>> lsq_init_scale(torch.ones(4), qp=4)
        tensor(1.)
    """
    x = x.detach().float()
    if dim is None:
        mean_abs = x.abs().mean()
    else:
        mean_abs = x.transpose(0, dim).reshape(x.shape[dim], -1).abs().mean(dim=1)
    return (2 * mean_abs / math.sqrt(qp)).clamp(min=SCALE_EPS)


def _squared_errors(rows: Tensor, scale: Tensor, qn: int, qp: int) -> Tensor:
    """Per-row ``||rows - q(rows)||^2`` for per-row step sizes ``scale`` of shape (rows, 1)."""
    err = rows / scale
    err.round_().clamp_(qn, qp).mul_(scale).sub_(rows)
    return err.square_().sum(dim=1)


def mse_init_scale(x: Tensor, qn: int, qp: int, dim: int | None = None, grid: int = 80) -> Tensor:
    """Step size minimising ``||x - x_q||^2`` over a grid of clipping ranges.

    Candidates are ``max|x| * k / grid / Qp`` for ``k = 1..grid``; better than the
    LSQ rule at 3 bits. With ``dim`` given, one search per index of that dim.
    The search is coarse-to-fine: every 8th ``k`` first, then the 15 values of ``k``
    around the best one (the error is close to unimodal in ``k``), about a third
    of the work of trying all ``grid`` values.

    Examples:
        >>> s = mse_init_scale(torch.linspace(-1, 1, 101), -4, 3)
        >>> 0.2 < float(s) < 0.4
        True
    """
    x = x.detach().float()
    rows = x.reshape(1, -1) if dim is None else x.transpose(0, dim).reshape(x.shape[dim], -1)
    max_abs = rows.abs().amax(dim=1, keepdim=True).clamp(min=SCALE_EPS)
    unit = max_abs / (grid * qp)  # step size for k = 1
    best_err = torch.full((rows.shape[0],), float("inf"), device=x.device)
    best_k = torch.full((rows.shape[0],), grid, dtype=torch.long, device=x.device)

    def try_k(k: Tensor) -> None:
        nonlocal best_err, best_k
        k = k.clamp(1, grid)
        err = _squared_errors(rows, unit * k.unsqueeze(1).to(unit.dtype), qn, qp)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_k = torch.where(better, k, best_k)

    stride = 8
    for k in range(grid, 0, -stride):  # coarse pass, largest range first
        try_k(torch.full_like(best_k, k))
    centre = best_k.clone()
    for offset in range(-(stride - 1), stride):
        if offset:
            try_k(centre + offset)
    best_scale = (unit.squeeze(1) * best_k.to(unit.dtype)).clamp(min=SCALE_EPS)
    return best_scale.reshape(()) if dim is None else best_scale
