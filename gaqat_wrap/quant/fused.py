"""Fused fake-quantized Linear / Conv: ``y = op(fq(x), fq(w)) + b`` as one autograd node.

An LSQ quantizer on the input, one on the weight, then ``F.linear`` / ``F.conv*d``
keep the layer input twice for backward: ``x`` for the LSQ gradients and
``x̂ = fq(x)`` for the weight gradient. The fused node keeps ``x`` only (``w`` and
the step sizes are Parameters: free) and rebuilds ``x̂`` in backward from the
``v = x / s`` that the LSQ backward computes anyway, so a quantized layer keeps
what the full-precision layer keeps. Its outputs and gradients are the ones of
the two-op path (same ops, same order; the tests compare them bit for bit,
see ``tests/quant/test_fused_layers.py``).

With ``keep_codes=True`` it keeps two bytes per input element instead of ``x``:
the integer code ``clamp(round(x / s), Qn, Qp)`` (int8, or uint8 for unsigned
ranges) and ``round(v) - v`` stored in 1/254 steps (uint8, 0 marking an
element outside the range). ``x̂``, the input gradient and the weight gradient
stay exact; the step-size gradient's in-range term is off by at most
``1/508`` of a step per element. Non-finite inputs give meaningless codes (the
forward output is non-finite anyway). See ``docs/concepts/quantization.md``.

Under ``torch.autocast`` the op runs in the autocast dtype, as ``F.linear`` /
``F.conv*d`` would; the LSQ maths stays in the input's own dtype.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from gaqat_wrap.quant.lsq import (
    SCALE_EPS,
    FakeQuantArgs,
    fake_quant_values,
    reduce_step_size_grad,
    step_size_derivative,
)

RESIDUAL_STEPS = 254
"""``round(v) - v`` (in ``[-0.5, 0.5]``) is kept as ``128 + round(254 * (round(v) - v))``, in ``[1, 255]``."""

_CONV_FORWARDS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


class ConvArgs(NamedTuple):
    """The geometry of a zero-padded convolution: what ``F.conv*d`` takes besides input, weight and bias.

    Examples:
        >>> ConvArgs.of(torch.nn.Conv2d(4, 8, 3, stride=2, padding=1)).padding
        (1, 1)
    """

    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int

    @classmethod
    def of(cls, conv: torch.nn.modules.conv._ConvNd) -> ConvArgs:
        """The arguments of ``conv`` (``padding_mode="zeros"`` and numeric padding assumed)."""
        return cls(tuple(conv.stride), tuple(conv.padding), tuple(conv.dilation), conv.groups)


def _autocast_dtype(x: Tensor) -> torch.dtype | None:
    """The dtype ``F.linear`` / ``F.conv*d`` would compute in under an active ``torch.autocast``, else None."""
    device = x.device.type
    if torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return None


def _cast(t: Tensor | None, dtype: torch.dtype | None) -> Tensor | None:
    # autocast leaves float64 alone; so do we
    if t is None or dtype is None or t.dtype == torch.float64:
        return t
    return t.to(dtype)


def _op(x: Tensor, w: Tensor, b: Tensor | None, conv: ConvArgs | None) -> Tensor:
    if conv is None:
        return F.linear(x, w, b)
    return _CONV_FORWARDS[len(conv.stride)](x, w, b, conv.stride, conv.padding, conv.dilation, conv.groups)


def _op_backward(grad: Tensor, x: Tensor, w: Tensor, bias_shape: list[int] | None, conv: ConvArgs | None,
                 needs: tuple[bool, bool, bool]) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """Gradients of ``_op`` w.r.t. input, weight and bias: the formulas autograd uses for it."""
    need_x, need_w, need_b = needs
    if conv is not None:
        return torch.ops.aten.convolution_backward(
            grad, x, w, bias_shape, list(conv.stride), list(conv.padding), list(conv.dilation), False,
            [0] * len(conv.stride), conv.groups, [need_x, need_w, need_b and bias_shape is not None])
    # F.linear is addmm on the input flattened to 2-d; these are addmm's backward formulas
    grad_2d = grad.reshape(-1, w.shape[0])
    grad_x = grad_2d.mm(w).view(x.shape) if need_x else None
    grad_w = grad_2d.t().mm(x.reshape(-1, w.shape[1])) if need_w else None
    grad_b = grad_2d.sum(0) if need_b and bias_shape is not None else None
    return grad_x, grad_w, grad_b


def _rebuild(x: Tensor, s: Tensor, qn: int, qp: int, need_step: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    """``v = x / s``, ``x̂`` and (if needed) ``dx̂/ds``, in three buffers."""
    v = torch.div(x, s)
    rounded = torch.round(v).clamp_(qn, qp)
    step = step_size_derivative(v, qn, qp, rounded) if need_step else None
    return v, rounded.mul_(s), step


def _encode(x: Tensor, s: Tensor, qn: int, qp: int) -> tuple[Tensor, Tensor, Tensor]:
    """``x̂`` plus what :func:`_decode` rebuilds it and the LSQ gradients from: integer codes and residuals."""
    v = torch.div(x, s)
    rounded = torch.round(v)
    residual = torch.sub(rounded, v).mul_(RESIDUAL_STEPS).round_().add_(128)
    residual = torch.ops.aten.hardtanh_backward(residual, v, qn, qp)  # 0 outside the range (strict LSQ mask)
    rounded.clamp_(qn, qp)
    codes = rounded.to(torch.int8 if qn < 0 else torch.uint8)
    return rounded.mul_(s), codes, residual.to(torch.uint8)


def _decode(codes: Tensor, residual: Tensor, s: Tensor, need_step: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    """``x̂``, the outside-the-range mask and (if needed) ``dx̂/ds`` from :func:`_encode`'s codes."""
    rounded = codes.to(s.dtype)
    outside = residual == 0
    step = None
    if need_step:
        in_range = residual.to(s.dtype).sub_(128).div_(RESIDUAL_STEPS)
        step = torch.where(outside, rounded, in_range)
    return rounded.mul_(s), outside, step


class _FusedFakeQuantLayer(torch.autograd.Function):
    """``op(fq(x), fq(w)) + b``; saves ``x`` (or its codes), ``w`` and the step sizes; rebuilds ``x̂``, ``ŵ`` in backward."""

    @staticmethod
    def forward(ctx, x: Tensor, x_scale: Tensor | None, weight: Tensor, w_scale: Tensor,  # type: ignore[override]
                bias: Tensor | None, x_range: tuple[int, int, float] | None, w_range: tuple[int, int, float],
                conv: ConvArgs | None, keep_codes: bool) -> Tensor:
        compute = _autocast_dtype(x)
        s_w = w_scale.to(weight.dtype)
        w_hat = fake_quant_values(weight, s_w, w_range[0], w_range[1])
        if x_range is None:
            x_hat, saved_x, s_x = x, (x,), None
        elif keep_codes:
            s_x = x_scale.to(x.dtype)
            x_hat, codes, residual = _encode(x, s_x, x_range[0], x_range[1])
            saved_x = (codes, residual)
        else:
            s_x = x_scale.to(x.dtype)
            x_hat, saved_x = fake_quant_values(x, s_x, x_range[0], x_range[1]), (x,)
        y = _op(_cast(x_hat, compute), _cast(w_hat, compute), _cast(bias, compute), conv)
        ctx.save_for_backward(*saved_x, s_x, weight, s_w)
        ctx.x_range, ctx.w_range, ctx.conv, ctx.keep_codes, ctx.compute = x_range, w_range, conv, keep_codes, compute
        ctx.x_dtype = x.dtype
        ctx.bias_shape = None if bias is None else list(bias.shape)
        ctx.bias_dtype = None if bias is None else bias.dtype
        ctx.scale_meta = (None if x_scale is None else (x_scale.shape, x_scale.dtype), (w_scale.shape, w_scale.dtype))
        return y

    @staticmethod
    def backward(ctx, grad_y: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        need_x, need_sx, need_w, need_sw, need_b = ctx.needs_input_grad[:5]
        *saved_x, s_x, weight, s_w = ctx.saved_tensors
        x_range, (wqn, wqp, w_g) = ctx.x_range, ctx.w_range
        v_w, w_hat, w_step = _rebuild(weight, s_w, wqn, wqp, need_sw)
        outside = v_x = x_step = None
        if x_range is None:
            x_hat = saved_x[0]
        elif ctx.keep_codes:
            x_hat, outside, x_step = _decode(*saved_x, s_x, need_sx)
        else:
            v_x, x_hat, x_step = _rebuild(saved_x[0], s_x, x_range[0], x_range[1], need_sx)
        compute = ctx.compute
        grad_y = _cast(grad_y, compute)
        needs = (need_x or need_sx, need_w or need_sw, need_b)
        grad_x_hat, grad_w_hat, grad_b = _op_backward(grad_y, _cast(x_hat, compute), _cast(w_hat, compute),
                                                      ctx.bias_shape, ctx.conv, needs)
        del x_hat, w_hat

        grad_sw = grad_w = None
        if grad_w_hat is not None:
            grad_w_hat = grad_w_hat.to(weight.dtype)
            if need_sw:
                grad_sw = reduce_step_size_grad(w_step.mul_(grad_w_hat), *ctx.scale_meta[1], w_g)
            if need_w:  # grad_w_hat is ours: mask it in place
                grad_w = torch.ops.aten.hardtanh_backward.grad_input(grad_w_hat, v_w, wqn, wqp, grad_input=grad_w_hat)
        grad_sx = grad_x = None
        if grad_x_hat is not None:
            grad_x_hat = grad_x_hat.to(ctx.x_dtype)
            if x_range is None:
                grad_x = grad_x_hat
            else:
                if need_sx:
                    grad_sx = reduce_step_size_grad(x_step.mul_(grad_x_hat), *ctx.scale_meta[0], x_range[2])
                if need_x and outside is not None:
                    grad_x = grad_x_hat.masked_fill_(outside, 0)
                elif need_x:
                    grad_x = torch.ops.aten.hardtanh_backward.grad_input(grad_x_hat, v_x, x_range[0], x_range[1],
                                                                         grad_input=grad_x_hat)
        if grad_b is not None:
            grad_b = grad_b.to(ctx.bias_dtype)
        return grad_x, grad_sx, grad_w, grad_sw, grad_b, None, None, None, None


def fused_fake_quant_layer(x: Tensor, weight: Tensor, bias: Tensor | None, input_args: FakeQuantArgs | None,
                           weight_args: FakeQuantArgs, conv: ConvArgs | None = None,
                           keep_codes: bool = False) -> Tensor:
    """``F.linear`` (``conv=None``) or ``F.conv*d`` of the LSQ fake-quantized input and weight, in one autograd node.

    Equal to ``op(lsq_fake_quant(x, *input_args), lsq_fake_quant(weight, *weight_args), bias)``,
    outputs and gradients, but only ``x`` is kept for backward (or, with
    ``keep_codes=True``, two bytes per element of ``x``: see the module docstring).
    ``input_args=None`` leaves the input in full precision. Step sizes are clamped
    to at least :data:`~gaqat_wrap.quant.lsq.SCALE_EPS`, as in ``lsq_fake_quant``.

    Examples:
        >>> from gaqat_wrap.quant.lsq import lsq_fake_quant
        >>> x, w = torch.randn(5, 4), torch.randn(3, 4)
        >>> x_args = FakeQuantArgs(torch.tensor(0.3), -8, 7, 0.1)
        >>> w_args = FakeQuantArgs(torch.full((3, 1), 0.2), -8, 7, 0.1)
        >>> fused = fused_fake_quant_layer(x, w, None, x_args, w_args)
        >>> torch.equal(fused, torch.nn.functional.linear(lsq_fake_quant(x, *x_args), lsq_fake_quant(w, *w_args)))
        True
    """
    x_scale = x_range = None
    if input_args is not None:
        x_scale = input_args.scale.clamp(min=SCALE_EPS)
        x_range = (input_args.qn, input_args.qp, input_args.grad_scale)
    w_range = (weight_args.qn, weight_args.qp, weight_args.grad_scale)
    return _FusedFakeQuantLayer.apply(x, x_scale, weight, weight_args.scale.clamp(min=SCALE_EPS), bias, x_range,
                                      w_range, conv, keep_codes)
