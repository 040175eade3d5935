"""MatMulNBits weights hold exactly the learned integers and per-channel step sizes."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from gaqat_wrap.export.matmul_nbits import matmul_nbits_attributes, matmul_nbits_weights
from gaqat_wrap.export.packing import unpack_int4


def test_codes_are_the_integers_plus_8_padded_with_8_and_scales_repeat_per_k_block():
    rng = np.random.default_rng(0)
    q = rng.integers(-8, 8, (5, 40))
    s = rng.uniform(0.1, 1, 5).astype(np.float32)
    packed, scales = matmul_nbits_weights(q, s, block_size=16)
    assert packed.shape == (5, 3, 8) and scales.shape == (5, 3)
    codes = unpack_int4(torch.from_numpy(packed.reshape(-1)), 5 * 48, signed=False).numpy().reshape(5, 48)
    assert np.array_equal(codes[:, :40].astype(int) - 8, q) and (codes[:, 40:] == 8).all()
    assert np.array_equal(scales, np.repeat(s[:, None], 3, axis=1))


def test_onnxruntime_matmulnbits_at_accuracy_level_1_computes_x_times_q_s(tmp_path):
    rng = np.random.default_rng(1)
    q, s = rng.integers(-8, 8, (24, 64)), rng.uniform(0.01, 0.1, 24).astype(np.float32)
    packed, scales = matmul_nbits_weights(q, s)
    node = helper.make_node("MatMulNBits", ["x", "b", "s"], ["y"], domain="com.microsoft",
                            **matmul_nbits_attributes(64, 24, accuracy_level=1))
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 24])],
                              [numpy_helper.from_array(packed, "b"), numpy_helper.from_array(scales, "s")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]),
              str(tmp_path / "m.onnx"))
    x = rng.normal(size=(7, 64)).astype(np.float32)
    y = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(y, x @ (q * s[:, None]).T, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("q", "block_size", "message"), [
    (np.array([[8]]), 32, r"integers in \[-8, 7\]"), (np.zeros((2, 2), int), 24, "power of two >= 16")])
def test_weights_that_do_not_fit_are_refused(q, block_size, message):
    with pytest.raises(ValueError, match=message):
        matmul_nbits_weights(q, np.ones(q.shape[0], np.float32), block_size=block_size)
