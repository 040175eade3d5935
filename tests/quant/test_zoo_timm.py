"""timm model zoo: quantize_model works on real architectures built with pretrained=False.

Per model: W4A4 forward + backward reaches every step size; W8A8 logits stay
close to FP (relative L2 error ``||q - fp|| / ||fp||`` below a per-model
tolerance); a state_dict round trip into a freshly quantized model gives
identical outputs; quant_report lists every Linear/Conv once.

Tolerances come from measurement (seeds 0-3, 32x32 inputs, batch 2, default
MSE init, BatchNorm running statistics at their initial values, see
docs/concepts/quantization.md "Measured"). Random networks amplify small
perturbations very differently: resnetv2_50x1_bit moves its logits by 7-20%
when the *input* gets 0.4% noise, so its end-to-end bound is loose and the
standardised-weight layers are also checked one by one (1%).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from gaqat_wrap import quant_report, quantize_model
from gaqat_wrap.quant.layers import QuantizedLayer

from zoo_checks import (  # isort: skip
    assert_report_complete,
    assert_state_dict_round_trip,
    assert_w4a4_trains,
    relative_error,
    w8a8_error,
    wake_up,
)

timm = pytest.importorskip("timm")
from timm.layers import Conv2dSame, ScaledStdConv2d, ScaledStdConv2dSame, StdConv2d, StdConv2dSame  # noqa: E402

# name: (create_model kwargs, W8A8 tolerance); comment: measured relative error range over seeds 0-3
MODELS: dict[str, tuple[dict, float]] = {
    "vit_tiny_patch16_224": ({"img_size": 32, "patch_size": 8, "depth": 2}, 0.08),            # 0.017-0.046
    "deit_tiny_patch16_224": ({"img_size": 32, "patch_size": 8, "depth": 2}, 0.08),           # 0.017-0.046
    "resnet18": ({}, 0.06),                                                                    # 0.014-0.035
    "resnet50": ({"layers": (1, 1, 1, 1)}, 0.06),                                             # 0.008-0.037
    "convnext_atto": ({"depths": (1, 1, 1, 1)}, 0.06),                                        # 0.024-0.037
    "efficientnet_b0": ({}, 0.25),                                                             # 0.047-0.154
    "tf_efficientnet_lite0": ({}, 0.25),                                                       # 0.061-0.145 (Conv2dSame)
    "mobilenetv3_small_100": ({}, 0.3),                                                        # 0.078-0.195
    "regnetx_002": ({}, 0.2),                                                                  # 0.030-0.116
    "swin_tiny_patch4_window7_224": (
        {"img_size": 32, "window_size": 4, "embed_dim": 24, "depths": (1, 1), "num_heads": (1, 2)}, 0.04),  # 0.008-0.021
    "resnetv2_50x1_bit": ({}, 0.9),                                                            # 0.158-0.657 (StdConv2d)
    "nf_resnet26": ({}, 0.2),                                                                  # 0.073-0.134 (ScaledStdConv2d)
}


def build(name: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return wake_up(timm.create_model(name, pretrained=False, num_classes=5, **MODELS[name][0]), seed)


def batches(seed: int = 100) -> tuple[dict, dict]:
    gen = torch.Generator().manual_seed(seed)
    inputs = {"x": torch.randn(2, 3, 32, 32, generator=gen), "y": torch.tensor([0, 3])}
    return inputs, {"x": torch.randn(2, 3, 32, 32, generator=gen)}


def loss(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    return F.cross_entropy(model(batch["x"]), batch["y"])


def logits(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    return model(batch["x"])


@pytest.mark.parametrize("name", list(MODELS))
def test_w4a4_forward_backward_reaches_every_step_size(name):
    inputs, calib = batches()
    model = assert_w4a4_trains(build(name), inputs, calib, loss, calibrate_first=False)
    assert_report_complete(model)


@pytest.mark.parametrize("name", list(MODELS))
def test_w8a8_logits_close_to_fp(name):
    inputs, calib = batches()
    error = w8a8_error(build(name), inputs, calib, logits)
    assert error < MODELS[name][1], f"{name}: W8A8 relative logit error {error:.4f} >= {MODELS[name][1]}"


@pytest.mark.parametrize("name", list(MODELS))
def test_state_dict_round_trip_into_fresh_model(name):
    inputs, calib = batches()
    assert_state_dict_round_trip(lambda seed: build(name, seed), inputs, calib, logits)


# -- the timm layer classes with their own forward ------------------------------------------------------------------

SPECIAL = {
    "StdConv2d": lambda: StdConv2d(6, 8, 3, stride=2, padding=1, eps=1e-8),
    "StdConv2dSame": lambda: StdConv2dSame(6, 8, 3, stride=2, padding="same", eps=1e-8),
    "ScaledStdConv2d": lambda: ScaledStdConv2d(6, 8, 3, stride=2, padding=1),
    "ScaledStdConv2dSame": lambda: ScaledStdConv2dSame(6, 8, 3, stride=2, padding="same"),
    "Conv2dSame": lambda: Conv2dSame(6, 8, 3, stride=2, groups=2),
}


@pytest.mark.parametrize("kind", list(SPECIAL))
def test_timm_conv_classes_quantize_their_effective_weight(kind):
    torch.manual_seed(0)
    layer = SPECIAL[kind]()
    with torch.no_grad():
        layer.weight.mul_(0.2).add_(0.05)  # standardisation must matter: weights far from zero-mean/unit-std
        if hasattr(layer, "gain"):
            layer.gain.uniform_(0.5, 1.5)
    x = torch.randn(2, 6, 11, 9)  # odd sizes exercise dynamic SAME padding
    net = torch.nn.Sequential(torch.nn.Identity(), layer)
    fp = copy.deepcopy(layer)
    quantize_model(net, bits=8, keep_first_last=False, quantize_inputs=False)
    report = quant_report(net)
    assert [(r.name, r.quantized, r.layer_type) for r in report] == [("1", True, kind)]
    assert isinstance(layer, type(fp)) and isinstance(layer, QuantizedLayer)
    with torch.no_grad():
        reference = fp(x)
        # full-precision path of the adapter == the class's own forward, exactly
        assert torch.equal(layer._gaqat_adapter.compute(layer, x, layer.effective_weight()), reference)
        out = layer(x)
        assert relative_error(out, reference) < 0.01, "8-bit layer output close to the FP layer"
        expected = layer._gaqat_adapter.compute(layer, x, layer.weight_quantizer(layer.effective_weight()))
        assert torch.equal(out, expected)
        if kind != "Conv2dSame":
            raw = layer._gaqat_adapter.compute(layer, x, layer.weight)
            assert relative_error(raw, reference) > 0.5, "the raw weight is not the effective weight"
