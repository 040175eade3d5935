"""4-bit packing: round trip, layout shared with ONNX INT4, range checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gaqat_wrap.export import pack_int4, unpack_int4


@settings(max_examples=200, deadline=None)
@given(signed=st.booleans(), data=st.data())
def test_unpack_inverts_pack_for_every_4_bit_sequence(signed, data):
    low, high = (-8, 7) if signed else (0, 15)
    values = data.draw(st.lists(st.integers(low, high), max_size=41))
    tensor = torch.tensor(values, dtype=torch.int8 if signed else torch.uint8)
    packed = pack_int4(tensor, signed=signed)
    assert packed.dtype == torch.uint8 and packed.numel() == (len(values) + 1) // 2
    assert unpack_int4(packed, len(values), signed=signed).tolist() == values


@given(st.lists(st.integers(-8, 7), min_size=1, max_size=30))
def test_packed_bytes_are_the_onnx_int4_layout(values):
    from onnx import TensorProto, helper, numpy_helper

    packed = pack_int4(torch.tensor(values, dtype=torch.int8))
    proto = helper.make_tensor("w", TensorProto.INT4, [len(values)], vals=packed.numpy().tobytes(), raw=True)
    assert numpy_helper.to_array(proto).astype(np.int64).tolist() == values


def test_pack_keeps_no_shape_but_unpack_restores_it():
    q = torch.arange(-8, 7, dtype=torch.int8).reshape(3, 5)
    assert torch.equal(unpack_int4(pack_int4(q), q.numel()).reshape(3, 5), q)


@pytest.mark.parametrize(("values", "signed"), [([8], True), ([-9], True), ([-1], False), ([16], False)])
def test_values_outside_4_bits_are_rejected(values, signed):
    with pytest.raises(ValueError, match="store them as int8"):
        pack_int4(torch.tensor(values, dtype=torch.int16), signed=signed)


def test_float_tensors_and_wrong_counts_are_rejected():
    with pytest.raises(TypeError, match="round and convert"):
        pack_int4(torch.tensor([1.0]))
    with pytest.raises(ValueError, match="not 5"):
        unpack_int4(torch.zeros(2, dtype=torch.uint8), 5)
