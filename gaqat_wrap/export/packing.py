"""Two 4-bit integers per byte: the storage format of weights with 4 bits or fewer.

Element ``2i`` goes in the low nibble of byte ``i``, element ``2i + 1`` in the
high nibble (the ONNX ``INT4``/``UINT4`` layout, so the same bytes serve the
safetensors file and the ONNX initializer). Signed values are stored in
two's complement; an odd count is padded with one zero nibble. 2- and 3-bit
integers use the same 4-bit nibbles (their range fits; no denser packing).
"""

from __future__ import annotations

import torch
from torch import Tensor

NIBBLE_RANGE = {True: (-8, 7), False: (0, 15)}
"""Representable ``(min, max)`` of a nibble, by signedness."""


def pack_int4(values: Tensor, signed: bool = True) -> Tensor:
    """Pack integers in the 4-bit range into a 1-d ``uint8`` tensor of ``ceil(n / 2)`` bytes.

    Raises ``ValueError`` if a value does not fit in 4 bits (``[-8, 7]``
    signed, ``[0, 15]`` unsigned).

    Examples:
        >>> pack_int4(torch.tensor([1, -2, 7], dtype=torch.int8))
        tensor([225,   7], dtype=torch.uint8)
    """
    if values.is_floating_point() or values.is_complex() or values.dtype == torch.bool:
        raise TypeError(f"pack_int4 packs integer tensors, got {values.dtype}; round and convert to torch.int8 first")
    flat = values.detach().reshape(-1).to(torch.int16)
    low, high = NIBBLE_RANGE[signed]
    if flat.numel() and (int(flat.min()) < low or int(flat.max()) > high):
        kind = "signed" if signed else "unsigned"
        raise ValueError(f"values must lie in [{low}, {high}] to pack as {kind} 4-bit, got range "
                         f"[{int(flat.min())}, {int(flat.max())}]; store them as int8 instead")
    if flat.numel() % 2:
        flat = torch.cat([flat, flat.new_zeros(1)])
    nibbles = (flat & 0xF).to(torch.uint8)
    return nibbles[0::2] | (nibbles[1::2] << 4)


def unpack_int4(packed: Tensor, numel: int, signed: bool = True) -> Tensor:
    """Inverse of :func:`pack_int4`: the first ``numel`` values, as 1-d ``int8`` (signed) or ``uint8``.

    Examples:
        >>> unpack_int4(torch.tensor([225, 7], dtype=torch.uint8), 3)
        tensor([ 1, -2,  7], dtype=torch.int8)
    """
    if packed.dtype != torch.uint8 or packed.dim() != 1:
        raise TypeError("packed must be a 1-d torch.uint8 tensor (as made by pack_int4), "
                        f"got {packed.dtype} {tuple(packed.shape)}")
    if not 0 <= numel <= 2 * packed.numel() or numel < 2 * packed.numel() - 1:
        raise ValueError(f"{packed.numel()} packed bytes hold {2 * packed.numel() - 1} or {2 * packed.numel()} values, "
                         f"not {numel}; pass the element count of the original tensor")
    nibbles = torch.stack([packed & 0xF, packed >> 4], dim=1).reshape(-1)[:numel]
    if not signed:
        return nibbles
    values = nibbles.to(torch.int8)
    return torch.where(values >= 8, values - 16, values)
