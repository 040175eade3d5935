"""The size report: 4-bit packed < int8 < FP32 on disk, by the expected factors when quantized weights dominate."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gaqat_recipes.sizes import export_sizes
from gaqat_wrap import quantize_model
from gaqat_wrap.export import load_integer_model, to_integer_model


def big_weights() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 512), nn.Linear(512, 10))


def test_packed_4_bit_file_is_half_the_int8_file_which_is_a_quarter_of_fp32(tmp_path):
    model = quantize_model(big_weights(), bits=4, weight_init="lsq")
    model(torch.randn(32, 16))
    sizes = export_sizes(model, tmp_path)
    assert sizes.packed_bytes < sizes.int8_bytes < sizes.fp32_bytes
    ratios = sizes.ratios()
    assert 3.5 < ratios["int8"] < 4.0  # FP first/last layers, biases and scales stay in float
    assert 1.8 < sizes.int8_bytes / sizes.packed_bytes < 2.0
    assert sizes.fp32_bytes == (tmp_path / "fp32.safetensors").stat().st_size
    x = torch.randn(4, 16)
    for name in ("int8", "packed"):  # both files are real, loadable exports
        assert torch.equal(load_integer_model(tmp_path / f"{name}.safetensors", big_weights())(x), model.eval()(x))


def test_fp32_file_holds_the_original_state_dict_without_quantizer_state(tmp_path):
    from safetensors import safe_open

    model = quantize_model(big_weights(), bits=4, weight_init="lsq")
    model(torch.randn(32, 16))
    export_sizes(model, tmp_path)
    with safe_open(str(tmp_path / "fp32.safetensors"), "pt") as f:
        assert set(f.keys()) == set(big_weights().state_dict())


def test_size_report_needs_the_fake_quant_model(tmp_path):
    model = quantize_model(big_weights(), bits=4, weight_init="lsq")
    model(torch.randn(4, 16))
    with pytest.raises(ValueError, match="not an integer model"):
        export_sizes(to_integer_model(model), tmp_path)
