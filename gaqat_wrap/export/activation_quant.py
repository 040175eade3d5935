"""How a float activation tensor is stored as ``uint8`` in the integer ONNX graph.

``q = clamp(round(x / scale) + zero_point, low, high)`` with ``x ≈ (q - zero_point) * scale``.

Activations are always ``uint8``: onnxruntime's x86 CPU kernels (QLinearConv,
QLinearMatMul, MatMulIntegerToFloat) take unsigned 8-bit activations only. A
learned step size keeps its exact integer grid:

* unsigned ``b``-bit input ``[0, 2^b - 1]``: zero point 0, ``high = 2^b - 1``;
* signed ``b``-bit input ``[-2^(b-1), 2^(b-1) - 1]``: zero point ``2^(b-1)``,
  ``high = 2^b - 1``, so ``q - zero_point`` covers exactly the signed range.

``high < 255`` (inputs of fewer than 8 bits) becomes an integer ``Clip`` after
the ``QuantizeLinear``. A ``Relu`` or ``Clip(a, b)`` in front of the quantizer
narrows ``[low, high]`` to ``[zp + round(a / s), zp + round(b / s)]``, which is
exact because rounding is monotone: ``round(clamp(v, a, b)) = clamp(round(v), round(a), round(b))``.

A tensor without a learned step size gets an 8-bit grid calibrated from its
observed range (asymmetric, zero included), as onnxruntime's ``quantize_static``
does. When a layer with a learned grid also reads it (re-quantizing from the
8-bit grid), the 8-bit step is the learned step divided by an odd integer, so
the re-quantization is exact except at exact rounding ties of the learned grid,
where round-half-to-even may land one code away (:meth:`ActivationQuant.calibrated_for`).

Examples:
    >>> grid = ActivationQuant.learned(bits=4, signed=True, scale=0.5, origin="fc")
    >>> grid.zero_point, grid.low, grid.high
    (8, 0, 15)
    >>> grid.after_clip(0.0, None).low   # a ReLU in front keeps only q - 8 >= 0
    8
    >>> ActivationQuant.calibrated(-1.0, 3.0, origin="add").zero_point
    64
    >>> round(ActivationQuant.calibrated_for(0.0, 3.0, grid, origin="add").scale, 6)   # 0.5 / 41
    0.012195
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np


@dataclass(frozen=True)
class ActivationQuant:
    """A uint8 grid: ``scale`` (float32), ``zero_point`` and the integer range ``[low, high]``.

    ``source`` is ``"learned"`` (a layer's trained input step size; ``origin``
    names the layer) or ``"calibrated"`` (``origin`` names the tensor).

    Examples:
        >>> a = ActivationQuant.learned(bits=8, signed=False, scale=0.1, origin="conv")
        >>> a.same_grid(ActivationQuant.learned(bits=8, signed=False, scale=0.1, origin="other"))
        True
        >>> a.bits
        8
    """

    scale: float
    zero_point: int
    low: int
    high: int
    source: Literal["learned", "calibrated"]
    origin: str

    @classmethod
    def learned(cls, *, bits: int, signed: bool, scale: float, origin: str) -> ActivationQuant:
        """The grid of a learned ``bits``-bit input step size ``scale`` (signed or unsigned)."""
        return cls(float(np.float32(scale)), 2 ** (bits - 1) if signed else 0, 0, 2**bits - 1, "learned", origin)

    @classmethod
    def calibrated(cls, minimum: float, maximum: float, *, origin: str) -> ActivationQuant:
        """An asymmetric 8-bit grid over ``[min(minimum, 0), max(maximum, 0)]``."""
        low, high = min(float(minimum), 0.0), max(float(maximum), 0.0)
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ValueError(f"calibration range of {origin} is not finite ({minimum}, {maximum}): check the calibration data")
        scale = float(np.float32((high - low) / 255.0)) if high > low else 1.0
        zero_point = int(min(max(round(-low / scale), 0), 255))
        return cls(scale, zero_point, 0, 255, "calibrated", origin)

    @classmethod
    def calibrated_for(cls, minimum: float, maximum: float, reader: ActivationQuant, *, origin: str) -> ActivationQuant:
        """An 8-bit grid over the range whose step is ``reader.scale / k`` for the largest odd ``k`` that fits.

        Re-quantizing from this grid to ``reader``'s grid is exact: the reader's rounding boundaries
        ``(n + 1/2) * reader.scale`` are rounding boundaries of this grid too (``k`` odd), so rounding
        to this grid never moves a value across one. Falls back to :meth:`calibrated` when even
        ``k = 1`` cannot cover the range with 256 steps.
        """
        low, high = min(float(minimum), 0.0), max(float(maximum), 0.0)
        plain = cls.calibrated(minimum, maximum, origin=origin)
        if high <= low:
            return plain
        k = math.floor(255 * reader.scale / (high - low))
        k -= 1 - k % 2  # largest odd integer <= k
        if k < 1:
            return plain
        scale = float(np.float32(reader.scale / k))
        zero_point = int(min(max(round(-low / scale), 0), 255))
        return cls(scale, zero_point, 0, 255, "calibrated", origin)

    @property
    def bits(self) -> int:
        """Bits spanned by ``[low, high]`` (8 for a full uint8 grid)."""
        return max(1, math.ceil(math.log2(self.high - self.low + 1)))

    def same_grid(self, other: ActivationQuant) -> bool:
        """True when both store a tensor with the same integers (scale, zero point and range)."""
        return (self.scale, self.zero_point, self.low, self.high) == (other.scale, other.zero_point, other.low, other.high)

    def after_clip(self, minimum: float | None, maximum: float | None) -> ActivationQuant:
        """This grid with a float ``Clip(minimum, maximum)`` (``Relu``: ``(0, None)``) folded into ``[low, high]``."""
        low, high = self.low, self.high
        scale = np.float32(self.scale)
        if minimum is not None:
            low = max(low, min(high, self.zero_point + int(np.round(np.float32(minimum) / scale))))
        if maximum is not None:
            high = min(high, max(low, self.zero_point + int(np.round(np.float32(maximum) / scale))))
        return replace(self, low=low, high=high)
