"""The arithmetic of an integer-weight layer, as two torch custom ops.

* ``dequantize_weight(q, s, layer)``: ``q * s`` with one step size per output
  channel (dim 0) — the exact float values the fake-quant forward produces,
  because ``round(w / s)`` is an integer and the product is the same multiply.
* ``quantize_dequantize_input(x, s, qn, qp, layer)``: ``round(x / s).clamp(qn, qp) * s``,
  the LSQ forward (round half to even, as ONNX ``QuantizeLinear``).

They are custom ops (not plain torch code) so that the ONNX exporter sees
each one as a single node carrying the layer name, which
:mod:`gaqat_wrap.export.onnx_qdq` then replaces with
``QuantizeLinear``/``DequantizeLinear``. Inference only: no backward.

Examples:
    >>> q = torch.tensor([[3, -2], [1, 0]], dtype=torch.int8)
    >>> dequantize_weight(q, torch.tensor([0.5, 0.25]), "fc")
    tensor([[ 1.5000, -1.0000],
            [ 0.2500,  0.0000]])
    >>> quantize_dequantize_input(torch.tensor([-1.0, 0.26, 0.74, 5.0]), torch.tensor(0.5), -4, 3, "fc")
    tensor([-1.0000,  0.5000,  0.5000,  1.5000])
"""

import torch  # no `from __future__ import annotations`: torch 2.4 custom_op needs real annotations
from torch import Tensor


@torch.library.custom_op("gaqat_export::dequantize_weight", mutates_args=())
def dequantize_weight(weight_int: Tensor, scale: Tensor, layer: str) -> Tensor:
    """Per-output-channel dequantization ``weight_int * scale`` (``layer`` names the layer for export)."""
    return weight_int.to(scale.dtype) * scale.view((-1,) + (1,) * (weight_int.dim() - 1))


@dequantize_weight.register_fake
def _dequantize_weight_shape(weight_int: Tensor, scale: Tensor, layer: str) -> Tensor:
    return torch.empty(weight_int.shape, dtype=scale.dtype, device=weight_int.device)


@torch.library.custom_op("gaqat_export::quantize_dequantize_input", mutates_args=())
def quantize_dequantize_input(x: Tensor, scale: Tensor, qn: int, qp: int, layer: str) -> Tensor:
    """Per-tensor fake quantization ``round(x / s).clamp(qn, qp) * s``, as in the LSQ forward."""
    s = scale.to(x.dtype)
    return torch.round(x / s).clamp_(qn, qp).mul_(s)


@quantize_dequantize_input.register_fake
def _quantize_dequantize_input_shape(x: Tensor, scale: Tensor, qn: int, qp: int, layer: str) -> Tensor:
    return torch.empty_like(x)
