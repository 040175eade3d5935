"""ONNX QDQ export runs in onnxruntime and matches the PyTorch logits.

Tolerance: max |logit difference| <= 1e-5 * max |logit| (measured: below 1e-6;
the remaining difference is float summation order in Conv/MatMul, the
quantization itself is reproduced exactly).
"""

from __future__ import annotations

import collections
import json

import numpy as np
import onnx
import pytest
import torch
from export_models import images, logits
from onnx import numpy_helper

from gaqat_wrap.export import export_onnx_qdq, onnxruntime_session

RELATIVE_TOLERANCE = 1e-5


def run_onnx(path, x: torch.Tensor) -> np.ndarray:
    return onnxruntime_session(path).run(None, {"input": x.numpy()})[0]


def assert_matches(model, path):
    x = images(3)  # the graph was exported with a batch of 2: the batch size is dynamic
    with torch.no_grad():
        expected = logits(model(x)).numpy()
    actual = run_onnx(path, x)
    assert actual.shape == expected.shape
    assert np.abs(actual - expected).max() <= RELATIVE_TOLERANCE * np.abs(expected).max()
    assert (actual.argmax(1) == expected.argmax(1)).all()


def node_counts(path) -> collections.Counter:
    return collections.Counter(node.op_type for node in onnx.load(str(path)).graph.node)


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "hf_vit", "std_conv",
                                  pytest.param("resnet18", marks=pytest.mark.slow),
                                  pytest.param("tf_efficientnet_lite0", marks=pytest.mark.slow)])
def test_int4_qdq_graph_matches_pytorch_logits_in_onnxruntime(name, tmp_path, quantized_models):
    model = quantized_models[(name, 4, None)]
    report = export_onnx_qdq(model, tmp_path / "m.onnx", images(2), low_bit="int4")
    assert report.tensors and not report.non_native
    assert {t.onnx_type for t in report.tensors if t.role == "weight"} == {"INT4"}
    assert_matches(model, tmp_path / "m.onnx")
    counts = node_counts(tmp_path / "m.onnx")
    layers = len({t.layer for t in report.tensors})
    assert counts["QuantizeLinear"] == layers and counts["DequantizeLinear"] == 2 * layers


def test_int4_weights_are_packed_int4_initializers_with_the_exported_integers(tmp_path, quantized_models):
    model = quantized_models[("std_conv", 4, None)]
    export_onnx_qdq(model, tmp_path / "m.onnx", images(2))
    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    init = {i.name: i for i in graph.initializer}
    weight = init["2.weight_int"]
    assert weight.data_type == onnx.TensorProto.INT4 and len(weight.raw_data) == (model[2].weight.numel() + 1) // 2
    scale = model[2].weight_quantizer.scale.detach()
    expected = torch.round(model[2].effective_weight() / scale.view(-1, 1, 1, 1)).clamp(-8, 7)
    assert np.array_equal(numpy_helper.to_array(weight).astype(np.float32), expected.detach().numpy())
    assert init["2.input_zero_point"].data_type == onnx.TensorProto.UINT4  # ReLU output: unsigned


def test_int8_qdq_graph_of_an_8_bit_model_is_native_and_matches(tmp_path, quantized_models):
    model = quantized_models[("hf_vit", 8, None)]
    report = export_onnx_qdq(model, tmp_path / "m.onnx", images(2), low_bit="int8", opset=17, strict=True)
    assert not report.non_native and {t.onnx_type for t in report.tensors} <= {"INT8", "UINT8"}
    assert onnx.load(str(tmp_path / "m.onnx")).opset_import[0].version == 17
    assert_matches(model, tmp_path / "m.onnx")


def test_4_bit_model_in_int8_containers_warns_and_clips_inputs_to_the_4_bit_range(tmp_path, quantized_models):
    model = quantized_models[("hf_vit", 4, None)]
    with pytest.warns(UserWarning, match="no native ONNX type with low_bit='int8'"):
        report = export_onnx_qdq(model, tmp_path / "m.onnx", images(2), low_bit="int8")
    assert len(report.non_native) == len(report.tensors)
    inputs = [t for t in report.tensors if t.role == "input"]
    assert all(t.clip is not None for t in inputs)
    assert node_counts(tmp_path / "m.onnx")["Clip"] >= len(inputs)
    assert_matches(model, tmp_path / "m.onnx")
    recorded = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert recorded["gaqat.low_bit"] == "int8"
    assert json.loads(recorded["gaqat.non_native"]) == [f"{t.layer}.{t.role}" for t in report.non_native]


def test_3_bit_model_uses_int4_containers_with_clip_and_still_matches(tmp_path, quantized_models):
    model = quantized_models[("std_conv", 3, None)]
    with pytest.warns(UserWarning, match="3-bit as UINT4"):
        report = export_onnx_qdq(model, tmp_path / "m.onnx", images(2))
    assert {(t.role, t.onnx_type) for t in report.tensors} == {("weight", "INT4"), ("input", "UINT4")}
    assert all(t.clip == (0.0, pytest.approx(7 * model[int(t.layer)].input_quantizer.scale.item()))
               for t in report.tensors if t.role == "input")
    assert_matches(model, tmp_path / "m.onnx")


def test_strict_export_refuses_bit_widths_without_a_native_type(tmp_path, quantized_models):
    with pytest.raises(ValueError, match="no native ONNX type"):
        export_onnx_qdq(quantized_models[("std_conv", 3, None)], tmp_path / "m.onnx", images(2), strict=True)
    assert not (tmp_path / "m.onnx").exists()


def test_int4_needs_opset_21_and_inputs_must_be_float32(tmp_path, quantized_models):
    model = quantized_models[("std_conv", 4, None)]
    with pytest.raises(ValueError, match="needs opset >= 21"):
        export_onnx_qdq(model, tmp_path / "m.onnx", images(2), opset=17)
    with pytest.raises(ValueError, match="low_bit must be"):
        export_onnx_qdq(model, tmp_path / "m.onnx", images(2), low_bit="int2")
    with pytest.raises(TypeError, match="float32"):
        export_onnx_qdq(model, tmp_path / "m.onnx", images(2).double())


def test_weight_only_model_matches_because_the_session_keeps_float_activations_in_fused_matmuls(tmp_path):
    # onnxruntime fuses DequantizeLinear+MatMul into MatMulNBits and, by default, quantizes its float input
    # to int8 on the fly (0.5% logit change here); onnxruntime_session turns that off.
    from export_models import BUILDERS

    from gaqat_wrap import quantize_model

    model = quantize_model(BUILDERS["hf_vit"](), bits=4, quantize_inputs=False, weight_init="lsq").eval()
    report = export_onnx_qdq(model, tmp_path / "m.onnx", images(2))
    assert {t.role for t in report.tensors} == {"weight"}
    assert node_counts(tmp_path / "m.onnx")["QuantizeLinear"] == 0
    assert_matches(model, tmp_path / "m.onnx")
