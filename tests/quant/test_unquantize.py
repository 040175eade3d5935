"""unquantize_model: the plain model comes back (classes, Parameters, state_dict keys), optionally with baked weights."""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gaqat_wrap import calibrate, quant_report, quantize_model, second_pass, unquantize_model
from gaqat_wrap.quant import LSQQuantizer, step_sizes

timm = pytest.importorskip("timm")


class Mixed(nn.Module):
    """Conv + BatchNorm, a Transformer encoder (nn.MultiheadAttention inside), Linear layers and a head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.conv = nn.Conv2d(16, 16, 3, padding=1, groups=2)
        layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=True)
        self.fc = nn.Linear(16, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(F.relu(self.bn(self.stem(x))))
        x = self.encoder(x.flatten(2).transpose(1, 2))
        return self.head(F.gelu(self.fc(x.mean(1))))


def build() -> nn.Module:
    torch.manual_seed(0)
    return Mixed()


def images(seed: int = 0) -> torch.Tensor:
    return torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(seed))


def quantized(**options) -> tuple[nn.Module, nn.Module]:
    """(quantized model trained one step so weights and step sizes moved, FP copy taken before quantization)."""
    model = build()
    fp = copy.deepcopy(model)
    quantize_model(model, bits=4, **options)
    if options.get("quantize_inputs", True):
        calibrate(model, [images(1)])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    model(images(2)).pow(2).mean().backward()
    optimizer.step()
    return model, fp


def test_unquantize_restores_classes_parameters_and_state_dict_keys():
    model, fp = quantized()
    keys = list(fp.state_dict())
    scale_ids = {id(p) for p in step_sizes(model).values()}
    params = {name: p for name, p in model.named_parameters() if id(p) not in scale_ids}
    unquantize_model(model)
    assert list(model.state_dict()) == keys
    assert [(n, type(m)) for n, m in model.named_modules()] == [(n, type(m)) for n, m in fp.named_modules()]
    assert dict(model.named_parameters()) == params, "the same Parameter objects, and no step sizes"
    assert not any(isinstance(m, LSQQuantizer) for m in model.modules())
    left = [(n, k) for n, m in model.named_modules() for k in vars(m) if k.startswith("_gaqat")]
    assert left == [("bn", "_gaqat_running_stats_protected")], "only the (harmless) BatchNorm protection stays"
    fresh = build()
    fresh.load_state_dict(model.state_dict())  # strict: exactly the original keys


def test_unquantize_keeps_the_trained_full_precision_weights():
    model, _ = quantized()
    trained = copy.deepcopy(model)
    unquantize_model(model)
    for name, p in model.named_parameters():
        assert torch.equal(p, trained.get_parameter(name))
    reference = build()
    reference.load_state_dict(model.state_dict())
    model.eval()
    reference.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(images(3)), reference(images(3)), rtol=0, atol=0)


def test_bake_weights_replaces_each_weight_by_its_fake_quantized_value():
    model, _ = quantized(quantize_inputs=False)
    model.eval()
    attention = model.encoder.layers[0].self_attn
    quantizers = {"conv": model.conv.weight_quantizer, "fc": model.fc.weight_quantizer,
                  "encoder.layers.0.self_attn": attention.in_proj_weight_quantizer,
                  "encoder.layers.0.linear1": model.encoder.layers[0].linear1.weight_quantizer}
    expected = {}
    for name, quantizer in quantizers.items():
        weight = model.get_parameter(f"{name}.in_proj_weight" if name.endswith("self_attn") else f"{name}.weight")
        s = quantizer.scale.detach().view(-1, *([1] * (weight.dim() - 1)))
        expected[name] = s * torch.clamp(torch.round(weight.detach() / s), -8, 7)
    x = images(4)
    with torch.no_grad():
        before = model(x)
    unquantize_model(model, bake_weights=True)
    for name, value in expected.items():
        weight = model.get_parameter(f"{name}.in_proj_weight" if name.endswith("self_attn") else f"{name}.weight")
        torch.testing.assert_close(weight, value, rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-6)


def test_baking_a_plain_layer_model_gives_its_weight_only_outputs_bit_for_bit():
    net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))
    quantize_model(net, bits=3, quantize_inputs=False, keep_first_last=False)
    x = torch.randn(5, 4)
    with torch.no_grad():
        before = net(x)
    unquantize_model(net, bake_weights=True)
    assert all(type(m) in (nn.Linear, nn.ReLU) for m in net)
    assert torch.equal(net(x), before)


def test_layers_that_transform_their_weight_cannot_be_baked_and_nothing_changes():
    from timm.layers import StdConv2d

    net = nn.Sequential(nn.Conv2d(3, 4, 1), StdConv2d(4, 4, 3), nn.Conv2d(4, 2, 1))
    quantize_model(net, bits=4)
    state = copy.deepcopy(net.state_dict())
    with pytest.raises(ValueError, match="cannot bake quantized weights into 1: these layers transform their weight"):
        unquantize_model(net, bake_weights=True)
    assert net.state_dict().keys() == state.keys() and all(torch.equal(net.state_dict()[k], v) for k, v in state.items())
    unquantize_model(net)
    assert type(net[1]) is StdConv2d


def test_unquantize_on_a_model_that_was_never_quantized_is_an_error():
    with pytest.raises(ValueError, match=r"Mixed has no layer quantized by gaqat_wrap\.quantize_model: nothing to unquantize"):
        unquantize_model(build())
    model, _ = quantized()
    unquantize_model(model)
    with pytest.raises(ValueError, match="nothing to unquantize"):
        unquantize_model(model)
    with pytest.raises(TypeError, match="bake_weights must be True or False"):
        unquantize_model(quantized()[0], bake_weights="yes")


def test_integer_models_from_export_are_refused():
    from gaqat_wrap.export import to_integer_model

    net = quantize_model(nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2)), bits=4)
    calibrate(net, [torch.randn(8, 4)])
    with pytest.raises(TypeError, match=r"integer layers from gaqat_wrap\.export no longer hold float weights"):
        unquantize_model(to_integer_model(net))


def test_quantize_model_works_again_after_unquantize():
    model, _ = quantized()
    first_keys = list(model.state_dict())
    first_report = [(r.name, r.quantized, r.weight_bits) for r in quant_report(model)]
    unquantize_model(model)
    quantize_model(model, bits=4)
    assert list(model.state_dict()) == first_keys
    assert [(r.name, r.quantized, r.weight_bits) for r in quant_report(model)] == first_report
    model(images()).sum().backward()
    assert all(p.grad is not None for p in step_sizes(model).values())


def test_fused_transformer_paths_come_back_and_batchnorm_hooks_are_harmless():
    model, fp = quantized()
    encoder_layer = model.encoder.layers[0]
    assert len(encoder_layer._forward_pre_hooks) == 1 and model.encoder.use_nested_tensor is False
    unquantize_model(model)
    assert len(encoder_layer._forward_pre_hooks) == 0 and model.encoder.use_nested_tensor is True
    # outside the SAM second pass the BatchNorm protection hooks change nothing
    plain = copy.deepcopy(fp.bn).train()
    model.bn.load_state_dict(plain.state_dict())
    x = torch.randn(4, 16, 3, 3)
    torch.testing.assert_close(model.bn(x), plain(x), rtol=0, atol=0)
    assert torch.equal(model.bn.running_mean, plain.running_mean) and int(model.bn.num_batches_tracked) == 1
    with second_pass():
        model.bn(x)
    assert torch.equal(model.bn.running_mean, plain.running_mean), "inside a second pass they still protect"


def test_an_unquantized_model_pickles_as_plain_classes():
    model, _ = quantized()
    unquantize_model(model)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    loaded = torch.load(io.BytesIO(buffer.getvalue()), weights_only=False)
    assert type(loaded.fc) is nn.Linear and type(loaded.encoder.layers[0].self_attn) is nn.MultiheadAttention
