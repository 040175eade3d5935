"""Checks shared by the timm and transformers model-zoo tests.

Every zoo model is built from a config with random weights. Random inits
switch residual branches off on purpose (zero-initialised last BatchNorm gamma,
skip-init gains, LayerScale 1e-6): gradients through such a branch are
exactly zero and quantization error there is invisible. :func:`wake_up`
re-initialises those near-zero gains so every quantized layer is on the
gradient path, as in a trained model.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Callable

import torch
from torch import nn

from gaqat_wrap import calibrate, quant_report, quantize_model
from gaqat_wrap.quant.layers import QuantizedLayer
from gaqat_wrap.quant.quantizer import step_sizes

CANDIDATES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def wake_up(model: nn.Module, seed: int = 0) -> nn.Module:
    """Replace parameters that are (almost) all zero, biases excepted, with O(1) random values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") or param.numel() == 0 or param.abs().max() > 1e-3:
                continue
            if param.ndim >= 2:
                fan_in = param[0].numel()
                param.copy_(torch.randn(param.shape, generator=gen) / fan_in**0.5)
            else:
                param.copy_(torch.rand(param.shape, generator=gen) + 0.5)
    return model


def fan_in_init(model: nn.Module, seed: int = 0) -> nn.Module:
    """He-style init ``N(0, 2 / fan_in)`` for every Linear/Conv weight; norm layers start at identity.

    Hugging Face vision models initialise convs (and, in some, norm gains) with
    ``N(0, 0.02^2)``; through a deep CNN in eval mode (BatchNorm with its initial
    running statistics) the activations then vanish to exactly zero, which no
    trained model does.
    """
    gen = torch.Generator().manual_seed(seed)
    norms = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, CANDIDATES):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2 / m.weight[0].numel()) ** 0.5)
            elif isinstance(m, norms) and m.weight is not None:
                m.weight.fill_(1.0)
                m.bias.zero_()
    return model


def warm_batchnorm(model: nn.Module, batches: list[dict], forward: Callable[[nn.Module, dict], object]) -> nn.Module:
    """Set BatchNorm running statistics to the data's (cumulative average), as in a trained model.

    Fresh running statistics (mean 0, var 1) do not describe the activations of a
    random network, so eval-mode calibration would see activations unlike training's.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return model
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        for batch in batches:
            forward(model, batch)
    for m in norms:
        m.momentum = 0.1
    return model.eval()


def relative_error(output: torch.Tensor, reference: torch.Tensor) -> float:
    """``||output - reference|| / ||reference||``."""
    return ((output - reference).norm() / reference.norm()).item()


def assert_report_complete(model: nn.Module, expected_skips: dict[str, str] | None = None) -> None:
    """Every Linear/Conv appears exactly once; skipped ones only for the expected reasons."""
    names = [name for name, m in model.named_modules() if isinstance(m, CANDIDATES)]
    rows = quant_report(model)
    assert [r.name for r in rows] == names, "quant_report must list every Linear/Conv exactly once, in order"
    skipped = {r.name: r.reason for r in rows if not r.quantized}
    keep = {n: reason for n, reason in skipped.items() if "keep_first_last" in reason}
    assert names[0] in keep and len(keep) >= 2, f"first layer and classifier kept: {keep}"
    other = {n: reason for n, reason in skipped.items() if n not in keep}
    assert other == (expected_skips or {}), f"unexpected skipped layers: {other}"
    for r in rows:
        if r.quantized:
            assert r.weight_bits and r.input_bits and r.weight_granularity == "per-output-channel"
            assert r.input_granularity == "per-tensor"


def assert_w4a4_trains(
    fp: nn.Module, inputs: dict, calib: dict, forward: Callable[[nn.Module, dict], torch.Tensor], calibrate_first: bool = False
) -> nn.Module:
    """Forward + backward at W4A4: finite loss, and every step size of a quantized layer gets a non-zero gradient.

    Without ``calibrate_first`` the input step sizes initialise at the first forward, in train mode: the
    route for a model whose BatchNorm running statistics are not yet meaningful (random init), since
    :func:`calibrate` observes activations in eval mode.
    """
    model = quantize_model(copy.deepcopy(fp), bits=4).train()
    if calibrate_first:
        calibrate(model, [calib])
    loss = forward(model, inputs)
    assert torch.isfinite(loss), f"W4A4 loss is {loss}"
    loss.backward()
    scales = step_sizes(model)
    assert scales, "no step sizes"
    no_grad = [n for n, p in scales.items() if p.grad is None or not torch.isfinite(p.grad).all() or not p.grad.abs().sum() > 0]
    assert not no_grad, f"{len(no_grad)} of {len(scales)} step sizes got no (finite, non-zero) gradient: {no_grad[:6]}"
    layers = [n for n, m in model.named_modules() if isinstance(m, QuantizedLayer) and m.weight.grad is None]
    assert not layers, f"quantized layers whose weight got no gradient: {layers[:6]}"
    return model


def w8a8_error(fp: nn.Module, inputs: dict, calib: dict, logits: Callable[[nn.Module, dict], torch.Tensor]) -> float:
    """Relative L2 error of W8A8 logits vs FP (eval mode; calibrated on a different batch)."""
    fp = fp.eval()
    model = quantize_model(copy.deepcopy(fp), bits=8).eval()
    calibrate(model, [calib])
    with torch.no_grad():
        return relative_error(logits(model, inputs), logits(fp, inputs))


def assert_state_dict_round_trip(
    build: Callable[[int], nn.Module], inputs: dict, calib: dict, logits: Callable[[nn.Module, dict], torch.Tensor]
) -> None:
    """save(state_dict) of a calibrated, trained-a-step W4A4 model loads into a freshly quantized model: same outputs."""
    model = quantize_model(build(0), bits=4)
    calibrate(model, [calib])
    with torch.no_grad():
        for p in step_sizes(model).values():
            p.mul_(1.1)  # values that only the state_dict can carry
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    fresh = quantize_model(build(1), bits=4)
    result = fresh.load_state_dict(torch.load(io.BytesIO(buffer.getvalue())))
    assert not result.missing_keys and not result.unexpected_keys
    model.eval()
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(logits(fresh, inputs), logits(model, inputs))
