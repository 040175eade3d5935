"""Promises of the troubleshooting page that no other test covers (each section links its tests)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from gaqat_wrap import quant_report, quantize_model, step_sizes

timm = pytest.importorskip("timm")


def test_timm_weight_decay_grouping_leaves_every_step_size_undecayed():
    """timm decays every tensor with ndim > 1; weight step sizes are 1-d and input step sizes 0-d."""
    from timm.optim import create_optimizer_v2

    model = quantize_model(timm.create_model("test_resnet", pretrained=False, num_classes=4), bits=4)
    scales = {id(p) for p in step_sizes(model).values()}
    assert scales and all(p.ndim <= 1 for p in model.parameters() if id(p) in scales)
    optimizer = create_optimizer_v2(model, "adamw", lr=1e-3, weight_decay=0.05)
    decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decayed and not decayed & scales


def test_timm_convolutions_with_their_own_forward_are_quantized_on_their_effective_weight():
    """StdConv2d / ScaledStdConv2d standardise the weight, Conv2dSame pads dynamically: both kept at 8 bits."""
    from timm.layers import Conv2dSame, ScaledStdConv2d, StdConv2d

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), StdConv2d(8, 8, 3, padding=1), nn.ReLU(),
                        ScaledStdConv2d(8, 8, 3, padding=1), nn.ReLU(), Conv2dSame(8, 8, 3, stride=2),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    fp = copy.deepcopy(net)
    quantize_model(net, bits=8)
    report = {r.name: r for r in quant_report(net)}
    assert all(report[name].quantized for name in ("1", "3", "5")), report
    x = torch.randn(4, 3, 15, 15)
    with torch.no_grad():
        ref, out = fp(x), net(x)
        standardised = fp[1].weight
        standardised = (standardised - standardised.mean((1, 2, 3), keepdim=True)) / torch.sqrt(
            standardised.var((1, 2, 3), unbiased=False, keepdim=True) + fp[1].eps)
    torch.testing.assert_close(net[1].effective_weight(), standardised, rtol=1e-4, atol=1e-5)
    assert ((out - ref).norm() / ref.norm()).item() < 0.02
