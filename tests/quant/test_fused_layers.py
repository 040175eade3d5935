"""The fused fake-quantized Linear/Conv node: same results as the two-op path, less activation memory.

The reference is the two-op path (``saved_inputs="unfused"``): the input quantizer's LSQ node, then
``F.linear`` / ``F.conv*d`` on the fake-quantized input and weight, whose gradients autograd derives on
its own. The fused node ("float", the default) must give the same outputs and gradients bit for bit; the
int8-codes node the same except for the input step size's gradient, within the bound its residual
storage allows. Memory is counted with :func:`gaqat_wrap.quant.memory.saved_tensor_bytes`.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gaqat_wrap import GAQATOptimizer, quantize_model, unquantize_model
from gaqat_wrap.optim import OscillationFreezer
from gaqat_wrap.quant.fused import RESIDUAL_STEPS, FakeQuantArgs, fused_fake_quant_layer
from gaqat_wrap.quant.layers import QuantizedLayer, quantize_layer
from gaqat_wrap.quant.lsq import lsq_fake_quant, quant_range
from gaqat_wrap.quant.memory import saved_tensor_bytes, set_saved_inputs

FUSED_NODE = "_FusedFakeQuantLayerBackward"

LAYERS = {
    "linear_3d_input": (lambda: nn.Linear(16, 12), (4, 7, 16)),
    "linear_no_bias": (lambda: nn.Linear(16, 12, bias=False), (9, 16)),
    "linear_4d_input": (lambda: nn.Linear(6, 5), (2, 3, 4, 6)),
    "conv1d_depthwise_dilated": (lambda: nn.Conv1d(8, 8, 3, dilation=2, padding=2, groups=8, bias=False), (2, 8, 13)),
    "conv2d_grouped_strided": (lambda: nn.Conv2d(8, 12, 3, stride=2, padding=1, groups=2), (2, 8, 9, 9)),
    "conv2d_asymmetric": (lambda: nn.Conv2d(4, 6, (3, 1), stride=(1, 2), padding=(2, 0), dilation=(2, 1)), (3, 4, 7, 8)),
    "conv3d": (lambda: nn.Conv3d(4, 6, 2, stride=(1, 2, 1), padding=1), (2, 4, 5, 6, 5)),
}
INPUTS = {  # how the layer input is quantized
    "signed": dict(input_bits=4, input_signed=True),
    "unsigned": dict(input_bits=3, input_signed=False),
    "weight_only": dict(input_bits=None),
}


def quantized_layer(name: str, inputs: str, dtype: torch.dtype, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    make, shape = LAYERS[name]
    torch.manual_seed(seed)
    layer = make().to(dtype)
    quantize_layer(layer, weight_bits=4, role=name, **INPUTS[inputs])
    x = torch.randn(shape, dtype=dtype)
    if inputs == "unsigned":
        x = x.relu()
    if layer.input_quantizer is not None:
        layer.input_quantizer.initialize_from(x)
    return layer, x


def outputs_and_grads(layer: nn.Module, x: torch.Tensor, mode: str) -> dict[str, torch.Tensor]:
    """Output, input gradient and every parameter gradient (weight, bias, both step sizes) in ``mode``."""
    set_saved_inputs(layer, mode)
    layer.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    y = layer(x)
    y.backward(torch.randn(y.shape, generator=torch.Generator().manual_seed(7), dtype=y.dtype))
    return {"output": y.detach(), "x": x.grad, **{name: p.grad for name, p in layer.named_parameters()}}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("inputs", list(INPUTS))
@pytest.mark.parametrize("name", list(LAYERS))
def test_fused_layer_gives_the_two_op_outputs_and_gradients_bit_for_bit(name, inputs, dtype):
    layer, x = quantized_layer(name, inputs, dtype)
    fused, reference = outputs_and_grads(layer, x, "float"), outputs_and_grads(layer, x, "unfused")
    assert list(fused) == list(reference)
    for what, value in reference.items():
        assert value is not None, what
        assert fused[what].dtype == value.dtype and torch.equal(fused[what], value), f"{what} differs"


@pytest.mark.parametrize("input_dtype", [torch.float32, torch.bfloat16], ids=["fp32_input", "bf16_input"])
@pytest.mark.parametrize("name", ["linear_3d_input", "conv2d_grouped_strided"])
def test_fused_layer_under_bf16_autocast_equals_the_two_op_path(name, input_dtype):
    layer, x = quantized_layer(name, "signed", torch.float32)
    x = x.to(input_dtype)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused, reference = outputs_and_grads(layer, x, "float"), outputs_and_grads(layer, x, "unfused")
    assert fused["output"].dtype == torch.bfloat16 and fused["x"].dtype == input_dtype
    for what, value in reference.items():
        assert torch.equal(fused[what], value), f"{what} differs"


def test_the_fused_node_is_used_for_plain_linear_and_conv_layers():
    for name in LAYERS:
        layer, x = quantized_layer(name, "signed", torch.float32)
        assert type(layer(x.clone().requires_grad_(True)).grad_fn).__name__ == FUSED_NODE, name
        set_saved_inputs(layer, "unfused")
        assert type(layer(x).grad_fn).__name__ != FUSED_NODE, name


def test_layers_the_fused_node_does_not_cover_keep_the_two_op_path():
    uncovered = {
        "circular_padding": (nn.Conv2d(4, 4, 3, padding=1, padding_mode="circular"), (2, 4, 6, 6)),
        "padding_same": (nn.Conv2d(4, 4, 4, padding="same"), (2, 4, 6, 6)),
        "unbatched_input": (nn.Conv2d(4, 4, 3), (4, 6, 6)),
    }
    for name, (layer, shape) in uncovered.items():
        torch.manual_seed(0)
        x = torch.randn(shape)
        quantize_layer(layer, weight_bits=4, input_bits=4, role=name)
        fused = outputs_and_grads(layer, x, "float")
        assert type(layer(x.clone().requires_grad_(True)).grad_fn).__name__ != FUSED_NODE, name
        reference = outputs_and_grads(layer, x, "unfused")
        assert all(torch.equal(fused[k], v) for k, v in reference.items()), name


def test_timm_std_conv_keeps_the_two_op_path():
    timm_layers = pytest.importorskip("timm.layers")
    layer = timm_layers.StdConv2d(4, 6, 3, padding=1)
    quantize_layer(layer, weight_bits=4, input_bits=4, role="std")
    x = torch.randn(2, 4, 5, 5, requires_grad=True)
    assert type(layer(x).grad_fn).__name__ != FUSED_NODE


def test_calibration_passes_inputs_through_unquantized():
    layer, x = quantized_layer("linear_3d_input", "signed", torch.float32)
    plain = F.linear(x, lsq_fake_quant(layer.weight, *layer.weight_quantizer.fake_quant_args(layer.weight)), layer.bias)
    layer.input_quantizer.begin_calibration()
    out = layer(x)
    layer.input_quantizer.abort_calibration()
    assert torch.equal(out, plain)


# -- int8 codes -----------------------------------------------------------------------------------------------------

def edge_inputs(scale: float, qn: int, qp: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Random values beyond the range on both sides plus values exactly on Qn*s, Qp*s and on half steps."""
    gen = torch.Generator().manual_seed(qp)
    x = (torch.rand(shape, generator=gen) * (qp - qn + 6) + qn - 3) * scale
    edges = torch.tensor([qn, qp, qn - 1, qp + 1, 0.5, 1.5, qp - 0.5, qn + 0.5, qp - 1e-3, qn + 1e-3]) * scale
    x.view(-1)[: edges.numel()] = edges
    return x


@pytest.mark.parametrize(("bits", "signed"), [(2, True), (4, True), (4, False), (8, True), (8, False)])
def test_int8_codes_keep_output_and_input_weight_bias_gradients_exact(bits, signed):
    qn, qp = quant_range(bits, signed)
    x = edge_inputs(0.25, qn, qp, (6, 5, 16))
    weight, bias = torch.randn(12, 16), torch.randn(12)
    x_args = FakeQuantArgs(torch.tensor(0.25), qn, qp, 0.05)
    w_args = FakeQuantArgs(torch.rand(12, 1) * 0.2 + 0.05, -8, 7, 0.07)
    grad_y = torch.randn(6, 5, 12, generator=torch.Generator().manual_seed(1))

    def grads(keep_codes: bool) -> list[torch.Tensor]:
        leaves = [t.clone().requires_grad_(True) for t in (x, weight, bias, x_args.scale, w_args.scale)]
        xa, wa = x_args._replace(scale=leaves[3]), w_args._replace(scale=leaves[4])
        out = fused_fake_quant_layer(leaves[0], leaves[1], leaves[2], xa, wa, keep_codes=keep_codes)
        out.backward(grad_y)
        return [out.detach()] + [leaf.grad for leaf in leaves]

    exact, codes = grads(False), grads(True)
    for what, a, b in zip(["output", "x", "weight", "bias", "input step", "weight step"], exact, codes, strict=True):
        if what != "input step":
            assert torch.equal(a, b), what
    # The in-range term of dL/ds uses round(v) - v rounded to 1/254: at most 1/508 off per element.
    x_hat = lsq_fake_quant(x, x_args.scale, qn, qp).requires_grad_(True)
    w_hat = lsq_fake_quant(weight, w_args.scale, -8, 7)
    (grad_x_hat,) = torch.autograd.grad(F.linear(x_hat, w_hat, bias), x_hat, grad_y)
    bound = x_args.grad_scale * grad_x_hat.abs().sum() / (2 * RESIDUAL_STEPS)
    assert (codes[4] - exact[4]).abs() <= bound * 1.001 + 1e-6
    assert not torch.equal(codes[4], exact[4]), "the bound test needs a case where the approximation shows"


def test_int8_codes_keep_two_bytes_per_input_element():
    layer, x = quantized_layer("linear_3d_input", "signed", torch.float32)
    x.requires_grad_(True)
    set_saved_inputs(layer, "int8")
    saved = saved_tensor_bytes(lambda: layer(x), exclude=layer.parameters())
    scales = 4 + 4 * layer.weight.shape[0]  # the clamped step sizes, one per tensor and one per output channel
    assert saved == 2 * x.numel() + scales


def test_under_bf16_autocast_float_mode_keeps_the_float32_input_and_int8_two_bytes():
    """Full precision keeps autocast's bf16 copy of a float32 input (2 bytes), "float" the input (4), "int8" 2."""
    layer, x = quantized_layer("linear_3d_input", "signed", torch.float32)
    fp = nn.Linear(16, 12)
    x.requires_grad_(True)
    scales = 4 + 4 * layer.weight.shape[0]

    def saved(module: nn.Module) -> int:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return saved_tensor_bytes(lambda: module(x), exclude=[*module.parameters()])

    fp_bytes = saved(fp)
    assert fp_bytes == 2 * x.numel() + 2 * fp.weight.numel()  # bf16 copies of x and of the weight
    set_saved_inputs(layer, "float")
    assert saved(layer) == 4 * x.numel() + scales
    set_saved_inputs(layer, "int8")
    assert saved(layer) == 2 * x.numel() + scales


# -- activation memory ------------------------------------------------------------------------------------------------

class TransformerMLP(nn.Module):
    """LayerNorm -> Linear -> GELU -> Linear -> LayerNorm -> Linear: the Linear inputs are kept by nothing else."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(8, 32)  # first in module order: quantize_model keeps it FP (keep_first_last)
        self.norm, self.fc1, self.fc2 = nn.LayerNorm(32), nn.Linear(32, 64), nn.Linear(64, 32)
        self.head_norm, self.head = nn.LayerNorm(32), nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        h = h + self.fc2(F.gelu(self.fc1(self.norm(h))))
        return self.head(self.head_norm(h))


def activation_bytes(model: nn.Module, x: torch.Tensor) -> int:
    return saved_tensor_bytes(lambda: model(x).square().mean(), exclude=model.parameters())


def step_size_bytes(model: nn.Module) -> int:
    """What the fused nodes keep besides the input: the clamped step sizes (float32), one copy each."""
    return sum(4 * (m.weight_quantizer.scale.numel() + m.input_quantizer.scale.numel())
               for m in model.modules() if isinstance(m, QuantizedLayer))


def test_saved_activation_memory_by_mode_on_a_transformer_mlp():
    torch.manual_seed(0)
    fp = TransformerMLP()
    x = torch.randn(4, 10, 8)
    q = quantize_model(copy.deepcopy(fp), bits=4)  # stem and head stay FP: fc1 and fc2 are quantized
    q(x)
    fc_inputs = 4 * 10 * (32 + 64)  # elements of the inputs of fc1 and fc2
    scales = step_size_bytes(q)
    fp_bytes = activation_bytes(fp, x)
    set_saved_inputs(q, "unfused")
    assert activation_bytes(q, x) > fp_bytes + 4 * fc_inputs, "the two-op path keeps x and x̂"
    set_saved_inputs(q, "float")
    assert activation_bytes(q, x) == fp_bytes + scales
    set_saved_inputs(q, "int8")
    assert activation_bytes(q, x) == fp_bytes - 2 * fc_inputs + scales


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "resnet18"])
def test_timm_models_keep_no_more_activation_memory_than_full_precision(name):
    """The goal of bench/bench_quant_speed.py (saved for backward <= 1.1x FP32), here on small inputs.

    The only extra storage is one clamped copy of each step size (a few KiB; at 32x32 that is 1-2 %,
    at the benchmark's batch 8 x 224x224 0.01 %).
    """
    timm = pytest.importorskip("timm")
    options = dict(depth=2, img_size=32, patch_size=8) if name.startswith("vit") else {}
    torch.manual_seed(0)
    fp = timm.create_model(name, pretrained=False, num_classes=10, **options).train()
    q = quantize_model(copy.deepcopy(fp), bits=4)
    x = torch.randn(2, 3, 32, 32)
    q(x)
    fp_bytes = activation_bytes(fp, x)
    assert activation_bytes(q, x) == fp_bytes + step_size_bytes(q)
    set_saved_inputs(q, "unfused")
    assert activation_bytes(q, x) > 1.3 * fp_bytes


# -- training -----------------------------------------------------------------------------------------------------------

def test_gaqat_steps_with_the_fused_node_equal_the_two_op_path_bit_for_bit():
    """SAM's second pass and the BatchNorm protection see the same forward either way."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 4))
    net = quantize_model(net, bits=4)
    gen = torch.Generator().manual_seed(1)
    data = [(torch.randn(8, 3, 8, 8, generator=gen), torch.randint(0, 4, (8,), generator=gen)) for _ in range(3)]
    net(data[0][0])
    states = {}
    for mode in ("unfused", "float"):
        model = copy.deepcopy(net)
        set_saved_inputs(model, mode)
        opt = GAQATOptimizer(torch.optim.AdamW(model.parameters(), lr=1e-2), model=model, sam_rho=0.05, window=2)
        for x, y in data:
            opt.step(classification_closure(model, x, y))
        states[mode] = model.state_dict()
    for key, value in states["unfused"].items():
        assert torch.equal(states["float"][key], value), key


def classification_closure(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    """The closure GAQATOptimizer.step runs twice: forward, cross-entropy, backward; returns the loss."""
    def closure() -> torch.Tensor:
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss
    return closure


def graph_nodes(output: torch.Tensor) -> list:
    """Every autograd node behind ``output``."""
    seen, stack = [], [output.grad_fn]
    while stack:
        node = stack.pop()
        if node is not None and node not in seen:
            seen.append(node)
            stack.extend(next_node for next_node, _ in node.next_functions)
    return seen


class AttentionClassifier(nn.Module):
    """Linear stem -> quantized MultiheadAttention (its out_proj a fused Linear) -> Linear -> head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.attn = nn.Linear(6, 16), nn.MultiheadAttention(16, 2, batch_first=True)
        self.mlp, self.head = nn.Linear(16, 16), nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        h = h + self.attn(h, h, h, need_weights=False)[0]
        return self.head(F.gelu(self.mlp(h)).mean(dim=1))


@pytest.mark.filterwarnings("ignore:GAQATOptimizer froze")
def test_gaqat_with_oscillation_freezing_and_quantized_attention_equals_the_two_op_path_bit_for_bit():
    """The fused node under everything main composes with it: GAQAT's two passes and freezing, the
    OscillationFreezer's gradient hooks and pinned weights, and attention whose out_proj is a fused Linear."""
    torch.manual_seed(0)
    net = quantize_model(AttentionClassifier(), bits=4)
    assert type(net.attn).__name__ == "QuantizedMultiheadAttention" and isinstance(net.attn.out_proj, QuantizedLayer)
    gen = torch.Generator().manual_seed(2)
    data = [(torch.randn(4, 5, 6, generator=gen), torch.randint(0, 3, (4,), generator=gen)) for _ in range(12)]
    net(data[0][0])
    fused = [node for node in graph_nodes(net(data[0][0])) if node.name() == FUSED_NODE]
    assert len(fused) == 2, "mlp and attn.out_proj run the fused node (stem and head stay FP)"
    states, frozen = {}, {}
    for mode in ("unfused", "float"):
        model = copy.deepcopy(net)
        set_saved_inputs(model, mode)
        opt = GAQATOptimizer(torch.optim.SGD(model.parameters(), lr=0.2), model=model, sam_rho=0.05, window=2)
        freezer = OscillationFreezer(model, opt, total_steps=len(data), momentum=0.3, freeze_threshold=0.5,
                                     freeze_threshold_final=0.35, warm_start=0.0)
        for x, y in data:
            opt.step(classification_closure(model, x, y))
        states[mode] = model.state_dict()
        frozen[mode] = {role: index.tolist() for role, (index, _) in freezer.frozen_integers().items()}
    assert frozen["float"] == frozen["unfused"]
    assert frozen["float"]["mlp.weight"] and frozen["float"]["attn.out_proj.weight"], "both fused layers had pinned weights"
    for key, value in states["unfused"].items():
        assert torch.equal(states["float"][key], value), key


def test_set_saved_inputs_rejects_unknown_modes_and_unquantized_models():
    net = quantize_model(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)))
    with pytest.raises(ValueError, match="mode must be one of 'float', 'int8', 'unfused', got 'fp16'"):
        set_saved_inputs(net, "fp16")
    with pytest.raises(ValueError, match="no quantized layer; call quantize_model"):
        set_saved_inputs(nn.Linear(2, 2), "int8")


def test_unquantize_model_drops_the_saved_inputs_choice():
    net = quantize_model(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)))
    set_saved_inputs(net, "int8")
    unquantize_model(net)
    assert type(net[1]) is nn.Linear and "saved_inputs" not in vars(net[1])
