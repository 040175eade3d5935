"""Integer export (safetensors) reloads into an inference model that reproduces the fake-quant logits bit for bit."""

from __future__ import annotations

import math

import pytest
import torch
from export_models import BUILDERS, images, logits
from safetensors import safe_open
from torch import nn

from gaqat_wrap import quantize_model
from gaqat_wrap.export import (
    IntegerLayer,
    export_integer_model,
    load_integer_model,
    read_export_config,
    to_integer_model,
)
from gaqat_wrap.quant.layers import QuantizedLayer


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "resnet18", "tf_efficientnet_lite0", "hf_vit", "std_conv"])
def test_reloaded_integer_model_reproduces_fake_quant_logits_bit_exactly(name, tmp_path, quantized_models):
    model = quantized_models[(name, 4, None)]
    x = images(3)
    with torch.no_grad():
        expected = logits(model(x))
        export_integer_model(model, tmp_path / "m.safetensors")
        deployed = load_integer_model(tmp_path / "m.safetensors", BUILDERS[name]())
        assert torch.equal(logits(deployed(x)), expected)
        assert torch.equal(logits(to_integer_model(model)(x)), expected)
    integer_layers = [m for m in deployed.modules() if isinstance(m, IntegerLayer)]
    assert len(integer_layers) == sum(isinstance(m, QuantizedLayer) for m in model.modules()) > 0
    assert all("weight" not in m._parameters for m in integer_layers)


def test_weights_of_4_bits_or_fewer_are_packed_two_per_byte_and_8_bit_ones_stored_as_int8(tmp_path):
    model = quantize_model(BUILDERS["std_conv"](), bits=3, overrides={"4": 8}, weight_init="lsq")
    model(images(2))
    config = export_integer_model(model, tmp_path / "m.safetensors")
    assert {name: (e["weight_bits"], e["packing"]) for name, e in config["layers"].items()} == {
        "2": (3, "int4x2"), "4": (8, "int8")}
    with safe_open(str(tmp_path / "m.safetensors"), framework="pt") as f:
        packed, int8 = f.get_tensor("2.weight_int"), f.get_tensor("4.weight_int")
    assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(model[2].weight.numel() / 2)
    assert int8.dtype == torch.int8 and int8.shape == model[4].weight.shape
    assert read_export_config(tmp_path / "m.safetensors") == config
    deployed = load_integer_model(tmp_path / "m.safetensors", BUILDERS["std_conv"]())
    x = images(2)
    assert torch.equal(deployed(x), model.eval()(x))


def test_std_conv_exports_the_integers_of_the_standardised_weight_and_does_not_standardise_again(quantized_models):
    model = quantized_models[("std_conv", 4, None)]
    deployed = to_integer_model(model)
    for index in (2, 4):
        layer, integer = model[index], deployed[index]
        fake_quant_weight = layer.weight_quantizer(layer.effective_weight())
        assert torch.equal(integer.dequantized_weight(), fake_quant_weight)
        assert not torch.allclose(layer.effective_weight(), layer.weight)  # standardisation does change the weight
    x = images(2)
    assert torch.equal(deployed(x), model(x))


def test_loads_into_a_model_prepared_by_the_same_quantize_model_call(tmp_path, quantized_models):
    model = quantized_models[("hf_vit", 4, None)]
    export_integer_model(model, tmp_path / "m.safetensors")
    skeleton = quantize_model(BUILDERS["hf_vit"](), bits=4, weight_init="lsq")
    deployed = load_integer_model(tmp_path / "m.safetensors", skeleton)
    x = images(2)
    assert torch.equal(deployed(x).logits, model(x).logits)
    assert not any(isinstance(m, QuantizedLayer) for m in deployed.modules())


def test_integer_layers_stay_instances_of_their_original_class_and_hold_integers(quantized_models):
    deployed = to_integer_model(quantized_models[("vit_tiny_patch16_224", 4, None)])
    qkv = deployed.blocks[0].attn.qkv
    assert isinstance(qkv, nn.Linear) and isinstance(qkv, IntegerLayer)
    assert qkv.weight_int.dtype == torch.int8
    assert int(qkv.weight_int.min()) >= -8 and int(qkv.weight_int.max()) <= 7
    assert torch.equal(qkv.weight, qkv.dequantized_weight())


def test_exporting_a_reloaded_model_again_gives_the_same_tensors(tmp_path, quantized_models):
    model = quantized_models[("std_conv", 4, None)]
    export_integer_model(model, tmp_path / "a.safetensors")
    deployed = load_integer_model(tmp_path / "a.safetensors", BUILDERS["std_conv"]())
    export_integer_model(deployed, tmp_path / "b.safetensors")
    with safe_open(str(tmp_path / "a.safetensors"), "pt") as a, safe_open(str(tmp_path / "b.safetensors"), "pt") as b:
        assert set(a.keys()) == set(b.keys())
        assert all(torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in a.keys())  # noqa: SIM118


def test_unsigned_8_bit_inputs_and_full_precision_inputs_round_trip(tmp_path):
    def build():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16), nn.Linear(16, 3))

    model = quantize_model(build(), bits=8, overrides={"4": 4}, quantize_inputs=True, weight_init="lsq")
    model[4].input_quantizer = None  # weight-only layer
    model(torch.randn(32, 6))
    config = export_integer_model(model, tmp_path / "m.safetensors")
    assert config["layers"]["2"]["input_signed"] is False and config["layers"]["4"]["input_bits"] is None
    deployed = load_integer_model(tmp_path / "m.safetensors", build())
    x = torch.randn(5, 6)
    assert torch.equal(deployed(x), model.eval()(x))
