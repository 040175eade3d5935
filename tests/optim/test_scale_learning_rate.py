"""An Adam-family learning rate as large as the step sizes draws a warning that names the fix."""

from __future__ import annotations

import warnings

import pytest
import torch
from optim_helpers import build, loss_closure

from gaqat_wrap import param_groups, step_sizes
from gaqat_wrap.optim import GAQATOptimizer


def warnings_of_one_step(groups, model, data, lr: float = 1e-2) -> list[str]:
    opt = GAQATOptimizer(torch.optim.AdamW(groups, lr=lr), model=model, freeze_threshold=None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for x, y in data[:2]:
            opt.step(loss_closure(model, x, y))
    return [str(w.message) for w in caught if "step size" in str(w.message)]


def test_shared_adam_learning_rate_larger_than_a_step_size_warns_once():
    model, data = build("mlp")
    smallest = min(float(p.detach().abs().min()) for p in step_sizes(model).values())
    messages = warnings_of_one_step(model.parameters(), model, data, lr=smallest)
    assert len(messages) == 1 and "scale_lr" in messages[0]


def test_a_small_scale_learning_rate_does_not_warn():
    model, data = build("mlp")
    assert warnings_of_one_step(param_groups(model, scale_lr=1e-6), model, data) == []


def test_sgd_does_not_warn():
    model, data = build("mlp")
    opt = GAQATOptimizer(torch.optim.SGD(model.parameters(), lr=1.0), model=model, freeze_threshold=None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step(loss_closure(model, *data[0]))


@pytest.mark.parametrize("scale_lr", [None, 1e-5])
def test_eight_bit_weight_step_sizes_stay_put_with_a_small_scale_learning_rate(scale_lr):
    """The audit's case: 8-bit weight step sizes (~1e-3) under AdamW at lr 1e-3 change by >50% in a few steps."""
    torch.manual_seed(0)
    from gaqat_wrap import quantize_model

    model = quantize_model(torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64),
                                               torch.nn.ReLU(), torch.nn.Linear(64, 4)), bits=8)
    scale = model[2].weight_quantizer.scale
    start = scale.detach().clone()
    opt = GAQATOptimizer(torch.optim.AdamW(param_groups(model, scale_lr=scale_lr), lr=1e-3), model=model,
                         freeze_threshold=None)
    x, y = torch.randn(32, 16), torch.randint(0, 4, (32,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(5):
            opt.step(loss_closure(model, x, y))
    change = ((scale.detach() - start).abs() / start).max().item()
    assert (change > 0.5) if scale_lr is None else (change < 0.1)


def model_with_a_dead_channel():
    """The MLP with one per-channel weight step size at 1e-8, and the smallest of the others."""
    model, data = build("mlp")
    scales = step_sizes(model)
    with torch.no_grad():
        next(p for p in scales.values() if p.numel() > 1)[0] = 1e-8
    live = min(float(p.detach().abs()[p.detach().abs() > 1e-6].min()) for p in scales.values())
    return model, data, live


def test_dead_channels_do_not_set_off_the_warning_and_are_named_when_it_fires():
    """Pretrained EfficientNets have channels whose weights are all about 0: their step sizes (~1e-8) cannot clip."""
    model, data, live = model_with_a_dead_channel()
    assert warnings_of_one_step(model.parameters(), model, data, lr=0.1 * live) == []
    model, data, live = model_with_a_dead_channel()
    messages = warnings_of_one_step(model.parameters(), model, data, lr=live)
    assert len(messages) == 1 and f"is {live:.3g} (leaving out 1 step size of dead channels" in messages[0]
