"""Bad input gets an error that names the problem and the fix."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from gaqat_wrap import LSQQuantizer, quantize_model
from gaqat_wrap.export import export_integer_model, export_onnx_integer, export_onnx_qdq, load_integer_model, to_integer_model


def small() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))


class WithAttention(nn.Module):
    """A Linear, an ``nn.MultiheadAttention`` named like timm/torchvision blocks, a quantizable Linear, a head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed, self.mid, self.head = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2)
        self.self_attention = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        h = self.self_attention(h, h, h, need_weights=False)[0]
        return self.head(self.mid(h).mean(1))


EXPORTS = [
    lambda m, p: export_integer_model(m, p / "m.safetensors"),
    lambda m, p: export_onnx_qdq(m, p / "m.onnx", torch.randn(2, 5, 4)),
    lambda m, p: export_onnx_integer(m, p / "m_int.onnx", torch.randn(2, 5, 4), [torch.randn(4, 5, 4)]),
]


@pytest.mark.parametrize("export", EXPORTS, ids=["safetensors", "onnx_qdq", "onnx_integer"])
def test_quantized_attention_is_refused_with_the_exclude_that_avoids_it(export, tmp_path):
    model = quantize_model(WithAttention(), bits=4)
    model(torch.randn(4, 5, 4))
    message = (r"quantized nn.MultiheadAttention layers \(self_attention\).*"
               r"quantize_model\(model, bits=..., exclude=\['self_attention'\]\)")
    with pytest.raises(TypeError, match=message):
        export(model, tmp_path)


def test_the_model_quantized_with_the_advised_exclude_exports(tmp_path):
    model = quantize_model(WithAttention(), bits=4, exclude=["self_attention"])
    x = torch.randn(4, 5, 4)
    model(x)
    export_integer_model(model, tmp_path / "m.safetensors")
    with torch.no_grad():  # with autograd on, torch folds 3-D F.linear inputs differently for a weight that needs grad
        assert torch.equal(load_integer_model(tmp_path / "m.safetensors", WithAttention())(x), model.eval()(x))
    report = export_onnx_integer(model, tmp_path / "m_int.onnx", x, [x])
    assert report.integer and [row.layer for row in report.layers] == ["mid"]


@pytest.mark.parametrize("export", [
    lambda m, p: export_integer_model(m, p / "m.safetensors"),
    lambda m, p: export_onnx_qdq(m, p / "m.onnx", torch.randn(2, 4)),
    lambda m, p: to_integer_model(m),
])
def test_a_model_that_was_never_quantized_is_refused(export, tmp_path):
    with pytest.raises(ValueError, match=r"no quantized layer to export: call gaqat_wrap.quantize_model"):
        export(small(), tmp_path)


def test_uncalibrated_input_step_sizes_are_refused_with_the_layer_names(tmp_path):
    model = quantize_model(small(), bits=4)
    with pytest.raises(ValueError, match=r"never initialised \(2\): run gaqat_wrap.calibrate"):
        export_integer_model(model, tmp_path / "m.safetensors")


def test_a_stray_lsq_quantizer_is_named_as_unsupported(tmp_path):
    model = quantize_model(small(), bits=4)
    model(torch.randn(8, 4))
    model.add_module("extra", LSQQuantizer(4, kind="input"))
    with pytest.raises(TypeError, match=r"unsupported quantized layer types: extra \(an LSQQuantizer outside"):
        export_integer_model(model, tmp_path / "m.safetensors")


def test_another_librarys_fake_quant_layer_is_named_as_unsupported(tmp_path):
    model = quantize_model(small(), bits=4)
    model(torch.randn(8, 4))
    model.add_module("observer", torch.ao.quantization.FakeQuantize())
    with pytest.raises(TypeError, match=r"observer \(torch.ao.quantization.fake_quantize.FakeQuantize\)"):
        export_integer_model(model, tmp_path / "m.safetensors")


def test_loading_into_a_different_architecture_names_the_layer(tmp_path):
    model = quantize_model(small(), bits=4)
    model(torch.randn(8, 4))
    export_integer_model(model, tmp_path / "m.safetensors")
    other = small()
    other[2] = nn.Conv1d(8, 8, 1)
    with pytest.raises(TypeError, match=r"layer 2 is a torch.nn.modules.conv.Conv1d in this model but a torch.nn.modules.linear"):
        load_integer_model(tmp_path / "m.safetensors", other)
    with pytest.raises(ValueError, match="lacks; pass the same architecture"):
        load_integer_model(tmp_path / "m.safetensors", nn.Sequential(nn.Linear(4, 8)))
    with pytest.raises(ValueError, match="does not match this Sequential"):
        load_integer_model(tmp_path / "m.safetensors", nn.Sequential(*small(), nn.Linear(2, 2)))


def test_a_file_that_is_not_an_integer_export_is_refused(tmp_path):
    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ValueError, match="not a gaqat_wrap integer export"):
        load_integer_model(tmp_path / "plain.safetensors", small())

