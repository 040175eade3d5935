"""Fold a BatchNormalization into the integer convolution in front of it (fold, then re-quantize).

In eval mode a BatchNorm after a convolution is a per-channel affine map
``y -> f * y + (beta - mean * f)`` with ``f = gamma / sqrt(var + eps)``.
Folded into a convolution whose weight is ``q * s`` (integers ``q``, step size
``s`` per output channel) and whose bias is ``b``:

* weight ``q * s * f`` is re-quantized with the step size ``s' = s * |f|``:
  ``round(q * s * f / s') = sign(f) * q``, so the integers are those of the
  trained model with the sign of a channel flipped where ``gamma < 0``;
* bias ``b' = beta + (b - mean) * f``.

The step sizes stay positive (onnxruntime needs positive scales to drop
QDQ pairs, and a negative weight scale is unusual for integer kernels), so a
negative ``f`` goes into the integers. Flipping a sign is exact unless the
integer is the lowest of the range (``-2^(b-1)``), whose negation does not
fit: it is clamped to ``2^(b-1) - 1`` (one step off) and counted in
``clamped``. With the default 8-bit weight containers this only happens for
8-bit weights: 4-bit weights ``[-8, 7]`` flip to at most ``8``, which an
int8 container holds exactly. A channel with ``gamma = 0`` outputs its bias
only: its integers become 0 and its step size stays ``s``.

Examples:
    >>> import numpy as np
    >>> q, s = np.array([[3, -128], [5, 1]]), np.array([0.5, 0.25], np.float32)
    >>> folded = fold_into_weights(q, s, None, gamma=np.array([2.0, -1.0]), beta=np.zeros(2), mean=np.zeros(2),
    ...                            var=np.ones(2) - 1e-5, eps=1e-5, weight_range=(-128, 127))
    >>> folded.weight_int.tolist(), folded.weight_scale.tolist(), folded.clamped
    ([[3, -128], [-5, -1]], [1.0, 0.25], 0)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class FoldedWeights:
    """Integers, step sizes and bias of a convolution after folding a BatchNorm into it.

    Examples:
        >>> FoldedWeights(np.zeros((1, 1)), np.ones(1, np.float32), np.zeros(1, np.float32), clamped=0).clamped
        0
    """

    weight_int: np.ndarray
    weight_scale: np.ndarray
    bias: np.ndarray
    clamped: int
    negative_channels: int = 0


def fold_into_weights(
    weight_int: np.ndarray,
    weight_scale: np.ndarray,
    bias: np.ndarray | None,
    *,
    gamma: np.ndarray,
    beta: np.ndarray,
    mean: np.ndarray,
    var: np.ndarray,
    eps: float,
    weight_range: tuple[int, int],
) -> FoldedWeights:
    """Fold ``BatchNorm(gamma, beta, mean, var, eps)`` into integer weights ``q * s`` (dim 0 = output channel).

    ``weight_range`` is the ``(min, max)`` the folded integers must fit (the container's range).
    """
    channels = weight_int.shape[0]
    factor = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
    sign = np.sign(factor).astype(np.int64)
    shape = (channels,) + (1,) * (weight_int.ndim - 1)
    flipped = weight_int.astype(np.int64) * sign.reshape(shape)
    low, high = weight_range
    clamped = int(((flipped < low) | (flipped > high)).sum())
    new_scale = np.where(factor != 0, weight_scale.astype(np.float64) * np.abs(factor), weight_scale.astype(np.float64))
    old_bias = np.zeros(channels) if bias is None else bias.astype(np.float64)
    new_bias = beta.astype(np.float64) + (old_bias - mean.astype(np.float64)) * factor
    return FoldedWeights(np.clip(flipped, low, high), new_scale.astype(np.float32), new_bias.astype(np.float32), clamped,
                         int((factor < 0).sum()))
