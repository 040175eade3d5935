"""4-bit Linear weights as onnxruntime's ``com.microsoft.MatMulNBits`` operator.

``MatMulNBits`` multiplies a float input ``A`` (..., K) by a block-quantized
weight: ``B`` holds ``(code - zero_point) * scale`` with 4-bit codes packed
two per byte along K, one scale per output channel and K-block. The learned
per-output-channel step size ``s[n]`` is repeated over the K-blocks of
channel ``n``, and the signed integers ``q`` in ``[-8, 7]`` are stored as
codes ``q + 8`` with the default zero point 8, so the dequantized weight is
exactly ``q * s`` (3- and 2-bit weights use the same 4-bit codes).

``accuracy_level`` selects the compute type: 4 quantizes ``A`` to int8 per
K-block on the fly and runs integer dot products (the fast path on CPUs);
1 computes in float32 from the dequantized weight (exact, slower).

Examples:
    >>> import numpy as np
    >>> q = np.array([[-8, 7, 1], [0, -1, 3]])               # (N=2 output channels, K=3)
    >>> packed, scales = matmul_nbits_weights(q, np.array([0.5, 0.25], np.float32), block_size=16)
    >>> packed.shape, scales.shape                          # (N, K-blocks, block_size / 2), (N, K-blocks)
    ((2, 1, 8), (2, 1))
    >>> int(packed[0, 0, 0]) & 0xF, int(packed[0, 0, 0]) >> 4   # codes q + 8, low nibble first
    (0, 15)
"""

from __future__ import annotations

import numpy as np
import torch

from gaqat_wrap.export.packing import pack_int4

MATMUL_NBITS_DOMAIN = "com.microsoft"
DEFAULT_BLOCK_SIZE = 32
"""K-block of the packed weight (a power of two >= 16); each block of ``A`` gets its own int8 scale at accuracy_level 4."""
ZERO_POINT = 8


def matmul_nbits_weights(weight_int: np.ndarray, weight_scale: np.ndarray, block_size: int = DEFAULT_BLOCK_SIZE
                         ) -> tuple[np.ndarray, np.ndarray]:
    """``(B, scales)`` for ``MatMulNBits`` from integers ``q`` (N, K) in ``[-8, 7]`` and per-channel step sizes (N,).

    K is padded to a multiple of ``block_size`` with code 8 (weight 0).
    """
    if block_size < 16 or block_size & (block_size - 1):
        raise ValueError(f"block_size must be a power of two >= 16, got {block_size}")
    if weight_int.ndim != 2 or weight_int.min(initial=0) < -8 or weight_int.max(initial=0) > 7:
        raise ValueError("MatMulNBits stores 2-d weights with integers in [-8, 7] (4 bits or fewer); "
                         f"got shape {weight_int.shape}, range [{weight_int.min()}, {weight_int.max()}]")
    n, k = weight_int.shape
    blocks = -(-k // block_size)
    codes = np.full((n, blocks * block_size), ZERO_POINT, dtype=np.uint8)
    codes[:, :k] = (weight_int + ZERO_POINT).astype(np.uint8)
    packed = pack_int4(torch.from_numpy(codes.reshape(-1)), signed=False).numpy().reshape(n, blocks, block_size // 2)
    scales = np.repeat(weight_scale.astype(np.float32).reshape(n, 1), blocks, axis=1)
    return packed, scales


def matmul_nbits_attributes(k: int, n: int, *, block_size: int = DEFAULT_BLOCK_SIZE, accuracy_level: int = 4) -> dict[str, int]:
    """The node attributes of a 4-bit ``MatMulNBits``.

    Examples:
        >>> matmul_nbits_attributes(192, 576)
        {'K': 192, 'N': 576, 'bits': 4, 'block_size': 32, 'accuracy_level': 4}
    """
    if accuracy_level not in (0, 1, 2, 3, 4):
        raise ValueError(f"accuracy_level must be 0-4 (1: float32 compute, 4: int8 compute), got {accuracy_level}")
    return {"K": k, "N": n, "bits": 4, "block_size": block_size, "accuracy_level": accuracy_level}
