"""The integer ONNX export runs as onnxruntime integer kernels and computes what the fake-quant model computes.

Each model is exported once (module fixtures: the torch exporter is the slow
part) and checked three ways:

* the node types onnxruntime runs after its graph optimisation;
* onnxruntime with all optimisations (fused integer kernels) against the same
  graph with optimisations off (each DequantizeLinear / Conv / QuantizeLinear
  evaluated in float as the ONNX spec says): on the conv chain they agree to
  float rounding, which proves the fused integer kernels (no int16 saturation
  either) compute the graph's arithmetic;
* onnxruntime against the fake-quant PyTorch model. The export's own
  approximations are int32 biases (rounded at ``s_x * s_w``), BatchNorm folding
  (float re-association) and calibrated 8-bit grids where no learned step size
  fits. Measured: 7.9e-4 relative on the W8A8 conv chain, 1.7e-2 at W4A4 (a
  flipped 4-bit code is a large step), 1.2e-7 for the same chain without
  BatchNorm and biases; 4.6e-7 for 4-bit Linear layers through MatMulNBits at
  accuracy_level 1. Deeper random networks (the tiny ResNet and ViT) amplify
  any 1e-7 difference that moves a value across a rounding boundary (see
  docs/deploy.md), so there the checks are looser.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from export_models import BUILDERS, conv_chain, images, logits, small_images, with_batchnorm_statistics
from onnx import numpy_helper
from torch import nn

from gaqat_wrap import calibrate, quantize_model
from gaqat_wrap.export import export_onnx_integer


def run(path, x: torch.Tensor, optimise: bool = True) -> np.ndarray:
    options = onnxruntime.SessionOptions()
    if not optimise:
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]


def relative_difference(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def torch_logits(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return logits(model(x)).numpy()


def initializers(path) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def exported(tmp_path_factory, model: nn.Module, example: torch.Tensor, **options):
    path = tmp_path_factory.mktemp("export") / "m.onnx"
    return model, export_onnx_integer(model, path, example, **options), path


# -- a Conv-BN-ReLU(6) chain: every convolution output is read by one quantized layer ------------------
@pytest.fixture(scope="module")
def chain8(tmp_path_factory):
    model = quantize_model(conv_chain(), bits=8).eval()
    calibrate(model, [small_images(32, seed=3)])
    model[7].input_quantizer.scale.data.fill_(0.05)  # 255 * 0.05 > 6: the ReLU6 bound lies inside the 8-bit grid
    return exported(tmp_path_factory, model, small_images(2), strict=True)


@pytest.fixture(scope="module")
def chain4(tmp_path_factory):
    model = quantize_model(conv_chain(), bits=4).eval()
    calibrate(model, [small_images(32, seed=3)])
    return exported(tmp_path_factory, model, small_images(2), accuracy_level=1, strict=True)


@pytest.mark.parametrize("chain", ["chain8", "chain4"])
def test_conv_chain_runs_as_integer_kernels_without_calibration_data_and_matches_fake_quant(chain, request):
    model, report, path = request.getfixturevalue(chain)
    assert report.integer and report.calibrated == []
    linear_kernel = "QGemm" if chain == "chain8" else "MatMulNBits"
    assert [row.runtime_kernel for row in report.layers] == ["QLinearConv", "QLinearConv", linear_kernel]
    assert report.node_types["BatchNormalization"] == 0 and report.node_types["Conv"] == 1  # the FP stem only
    x = small_images(64, seed=4)
    fused = run(path, x)
    assert relative_difference(fused, run(path, x, optimise=False)) <= 1e-5
    expected = torch_logits(model, x)
    assert relative_difference(fused, expected) <= (5e-3 if chain == "chain8" else 5e-2)
    assert (fused.argmax(1) == expected.argmax(1)).mean() >= 0.95


def test_batchnorm_is_folded_with_step_sizes_scaled_by_gamma_over_sigma_and_signs_flipped(chain4):
    model, report, path = chain4
    init = initializers(path)
    conv, bn = model[3], model[4]
    factor = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().double().numpy()
    assert (factor < 0).any() and (factor > 0).any()
    scale = conv.weight_quantizer.scale.detach().double().numpy()
    q = torch.round(conv.weight / conv.weight_quantizer.scale.view(-1, 1, 1, 1)).clamp(-8, 7).detach().numpy()
    # stored as q' * m with step s' / m: m = 127 // max|q'| per channel makes the int32 bias grid m times finer
    multiplier = 127 // np.abs(q).reshape(len(q), -1).max(axis=1)
    np.testing.assert_allclose(init["3.weight_scale"], scale * np.abs(factor) / multiplier, rtol=1e-6)
    flipped = q * np.sign(factor).reshape(-1, 1, 1, 1)  # a flipped 4-bit -8 is 8, which int8 holds
    assert np.array_equal(init["3.weight_q"], flipped * multiplier.reshape(-1, 1, 1, 1))
    assert report.layers[0].batchnorm is not None and report.layers[0].clamped_weights == 0


def test_relu6_in_front_of_a_learned_grid_becomes_an_integer_clip_and_relus_disappear(chain8):
    _, _, path = chain8
    graph = onnx.load(str(path)).graph
    init = initializers(path)
    clips = [[int(init[name]) for name in node.input[1:]] for node in graph.node if node.op_type == "Clip"]
    assert clips == [[0, 120]]  # round(6 / 0.05), on the uint8 codes
    assert [node.op_type for node in graph.node].count("Relu") == 1  # the FP stem's; the others are integer ranges


def test_convolution_biases_are_int32_at_the_input_times_weight_step_size(chain8):
    model, _, path = chain8
    init = initializers(path)
    expected_scale = np.float32(model[7].input_quantizer.scale.item()) * init["7.weight_scale"]
    np.testing.assert_allclose(init["7.bias_scale"], expected_scale, rtol=1e-7)
    assert init["7.bias_q"].dtype == np.int32


# -- residual network: QLinearAdd and calibrated grids ----------------------------------------------------
@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    model = quantize_model(with_batchnorm_statistics(BUILDERS["resnet18"]()), bits=8).eval()
    calibrate(model, [images(16, seed=5)])
    return exported(tmp_path_factory, model, images(2), calibration_data=[images(16, seed=5)], strict=True)


def test_resnet_convs_run_as_qlinearconv_and_residual_adds_as_qlinearadd_with_calibrated_grids_reported(resnet):
    model, report, path = resnet
    assert len(report.layers) == 20 and {row.runtime_kernel for row in report.layers} == {"QLinearConv"}
    assert report.node_types["QLinearConv"] == 20 and report.node_types["QLinearAdd"] == 8
    assert report.node_types["BatchNormalization"] == 0 and report.node_types["Conv"] == 1  # the FP stem
    assert report.calibrated and all("Add" in c.reason or "ReduceMean" in c.reason for c in report.calibrated)
    x = images(32, seed=6)
    fused, expected = run(path, x), torch_logits(model, x)
    assert relative_difference(fused, expected) <= 0.15  # 8-bit calibrated residual stream, random network
    assert (fused.argmax(1) == expected.argmax(1)).mean() >= 0.9


# -- ViT: Linear layers -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vit8(tmp_path_factory):
    model = quantize_model(BUILDERS["vit_tiny_patch16_224"](), bits=8).eval()
    calibrate(model, [images(16, seed=5)])
    return exported(tmp_path_factory, model, images(2), strict=True)


@pytest.fixture(scope="module")
def vit4(tmp_path_factory):
    model = quantize_model(BUILDERS["vit_tiny_patch16_224"](), bits=4).eval()
    calibrate(model, [images(16, seed=5)])
    return exported(tmp_path_factory, model, images(2), accuracy_level=1, strict=True)


def test_8_bit_vit_linear_layers_run_as_matmulintegertofloat_and_norms_softmax_gelu_stay_float(vit8):
    model, report, path = vit8
    assert [row.runtime_kernel for row in report.layers] == ["MatMulIntegerToFloat"] * 8
    assert all(row.weights.startswith("UINT8") for row in report.layers)  # signed inputs: exact u8 x u8 kernels
    assert report.node_types["LayerNormalization"] == 5 and report.node_types["Softmax"] == 2
    assert report.node_types["MatMul"] == 2  # the attention products stay float
    x = images(16, seed=6)
    fused, expected = run(path, x), torch_logits(model, x)
    assert relative_difference(fused, expected) <= 0.15 and (fused.argmax(1) == expected.argmax(1)).mean() >= 0.9


def test_4_bit_vit_linear_layers_run_as_matmulnbits_exactly_at_accuracy_level_1(vit4):
    model, report, path = vit4
    assert [row.runtime_kernel for row in report.layers] == ["MatMulNBits"] * 8
    nodes = [n for n in onnx.load(str(path)).graph.node if n.op_type == "MatMulNBits"]
    assert {onnx.helper.get_attribute_value(a) for n in nodes for a in n.attribute if a.name == "accuracy_level"} == {1}
    x = images(16, seed=6)
    assert relative_difference(run(path, x), torch_logits(model, x)) <= 1e-5


# -- weight storage, reported problems, errors (small MLPs: fast to export) ---------------------------------
def mlp(**options) -> nn.Module:
    torch.manual_seed(0)
    model = quantize_model(nn.Sequential(nn.Linear(16, 32), nn.Linear(32, 32), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4)),
                           **options).eval()
    if options.get("quantize_inputs", True):
        calibrate(model, [torch.randn(64, 16)])
    return model


def test_auto_weight_storage_picks_uint8_only_where_u8_s8_products_could_saturate_int16(tmp_path):
    model = mlp(bits=8, overrides={"2": 4}, act_signed=True)
    report = export_onnx_integer(model, tmp_path / "m.onnx", torch.randn(2, 16), [torch.randn(32, 16)], matmul_nbits=False,
                                 strict=True)
    assert [row.weights for row in report.layers] == ["UINT8 (zero point 128)", "INT8"]  # 8-bit; 4-bit cannot saturate
    assert [row.runtime_kernel for row in report.layers] == ["QGemm", "QGemm"]
    x = torch.randn(32, 16)
    fused = run(tmp_path / "m.onnx", x)
    assert relative_difference(fused, run(tmp_path / "m.onnx", x, optimise=False)) <= 1e-5
    assert relative_difference(fused, torch_logits(model, x)) <= 5e-3  # int32 bias rounding flips a few 4-bit codes


def test_calibration_data_is_required_when_a_tensor_has_no_learned_grid(tmp_path):
    with pytest.raises(ValueError, match=r"1 tensors need an 8-bit grid calibrated from data \(relu\): pass calibration_data"):
        export_onnx_integer(mlp(bits=8), tmp_path / "m.onnx", torch.randn(2, 16))


def test_a_layer_with_a_full_precision_input_is_named_and_strict_export_raises(tmp_path):
    model = mlp(bits=8, quantize_inputs=False)
    with pytest.warns(UserWarning, match=r"1: runs as \w+, not an integer kernel; 2: runs as"):
        report = export_onnx_integer(model, tmp_path / "m.onnx", torch.randn(2, 16))
    assert [row.input for row in report.layers] == ["float", "float"] and not report.integer
    with pytest.raises(ValueError, match="2 layers/patterns are not exported as integer: 1: runs as"):
        export_onnx_integer(model, tmp_path / "s.onnx", torch.randn(2, 16), strict=True)
    assert not (tmp_path / "s.onnx").exists()


def test_int4_conv_weights_are_int4_initializers_and_reported_as_running_in_float(tmp_path):
    torch.manual_seed(0)
    model = quantize_model(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Flatten(),
                                         nn.Linear(8 * 12 * 12, 2)), bits=4).eval()
    calibrate(model, [small_images(8)])
    with pytest.warns(UserWarning, match=r"2: runs as \w*Conv, not an integer kernel \(int4_conv_weights=True: size only\)"):
        report = export_onnx_integer(model, tmp_path / "m.onnx", small_images(2), int4_conv_weights=True)
    assert report.layers[0].weights == "INT4 (size only)" and not report.integer
    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    assert {t.name: t.data_type for t in graph.initializer}["2.weight_q"] == onnx.TensorProto.INT4
    x = small_images(16, seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert relative_difference(run(tmp_path / "m.onnx", x), torch_logits(model, x)) <= 1e-5


def test_bad_options_are_refused_before_exporting(tmp_path):
    model = mlp(bits=8)
    with pytest.raises(ValueError, match="weight_storage must be"):
        export_onnx_integer(model, tmp_path / "m.onnx", torch.randn(2, 16), weight_storage="int16")
    with pytest.raises(ValueError, match="accuracy_level must be 0-4"):
        export_onnx_integer(model, tmp_path / "m.onnx", torch.randn(2, 16), accuracy_level=7)
    with pytest.raises(TypeError, match="float32"):
        export_onnx_integer(model, tmp_path / "m.onnx", torch.randn(2, 16).double())


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tf_efficientnet_lite0", "mobilenetv3_small_100"])
def test_efficientnet_and_mobilenet_convs_run_as_qlinearconv(name, tmp_path):
    """About 1-2 minutes per model on 2 busy cores (the torch ONNX exporter)."""
    import timm

    torch.manual_seed(0)
    model = quantize_model(with_batchnorm_statistics(timm.create_model(name, pretrained=False, num_classes=5)), bits=8)
    calibrate(model.eval(), [images(16, seed=5)])
    report = export_onnx_integer(model, tmp_path / "m.onnx", images(2), [images(16, seed=5)], strict=True)
    assert {row.runtime_kernel for row in report.layers} == {"QLinearConv"}
    assert report.node_types["QLinearConv"] == len(report.layers) and report.node_types["BatchNormalization"] == 0
    x = images(16, seed=6)
    fused, expected = run(tmp_path / "m.onnx", x), torch_logits(model, x)
    assert relative_difference(fused, expected) <= 0.3 and (fused.argmax(1) == expected.argmax(1)).mean() >= 0.9


# -- hardswish and squeeze-excite gates: x * gate(...) runs as QLinearMul ------------------------------------------
class GatedNet(nn.Module):
    """16x16 inputs: FP stem, Conv-BN-Hardswish, a squeeze-excite gate (Sigmoid), a quantized Conv, FP head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.conv = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.Hardswish())
        self.squeeze, self.excite = nn.Conv2d(16, 4, 1), nn.Conv2d(4, 16, 1)
        self.out = nn.Sequential(nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                 nn.Flatten(), nn.Linear(16, 5))
        with_batchnorm_statistics(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(self.stem(x))
        gate = torch.sigmoid(self.excite(torch.relu(self.squeeze(x.mean((2, 3), keepdim=True)))))
        return self.out(x * gate)


@pytest.fixture(scope="module")
def gated(tmp_path_factory):
    model = quantize_model(GatedNet(), bits=8).eval()
    calibrate(model, [small_images(32, seed=3)])
    return exported(tmp_path_factory, model, small_images(2), calibration_data=[small_images(32, seed=3)], strict=True)


def test_hardswish_and_gates_run_as_qlinearmul(gated):
    model, report, path = gated
    types = report.node_types
    assert types["QLinearMul"] == 2 and types.get("Mul", 0) == 0 and types.get("HardSwish", 0) == 0
    assert {row.runtime_kernel for row in report.layers} == {"QLinearConv"}
    gates = [c for c in report.calibrated if "input of Mul" in c.reason]
    assert len(gates) == 2 and all(c.minimum >= 0.0 and c.maximum <= 1.0 for c in gates)
    x = small_images(64, seed=6)
    fused, reference = run(path, x), run(path, x, optimise=False)
    # QLinearMul computes the graph's arithmetic (measured 1.3e-5: its fixed-point requantization may land one
    # code away from the float reference near a rounding boundary)
    assert relative_difference(fused, reference) <= 1e-4
    expected = torch_logits(model, x)
    # the gates' 8-bit grids are the export's approximation here (measured 1.0e-3, every top-1 equal)
    assert relative_difference(fused, expected) <= 0.01 and (fused.argmax(1) == expected.argmax(1)).mean() >= 0.95


def test_a_product_of_two_ungated_float_tensors_stays_float(tmp_path):
    class Square(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.stem, self.conv, self.head = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3), nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(torch.relu(self.stem(x)))
            return self.head((y * torch.tanh(y)).mean((2, 3)))

    model = quantize_model(Square(), bits=8).eval()
    calibrate(model, [small_images(8, seed=3)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = export_onnx_integer(model, tmp_path / "m.onnx", small_images(2), [small_images(8, seed=3)])
    assert report.node_types.get("QLinearMul", 0) == 0 and report.node_types["Mul"] == 1
