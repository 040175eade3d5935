"""The second pass leaves BatchNorm running statistics alone: one step = one forward's update."""

from __future__ import annotations

import torch
from optim_helpers import build, loss_closure, twin
from torch import nn

from gaqat_wrap.optim import GAQATOptimizer


def bn_buffers(model):
    return {name: buf.clone() for name, buf in model.named_buffers() if "running" in name or "num_batches" in name}


def test_batchnorm_running_mean_after_a_step_equals_one_forward_update():
    model, data = build("convnet")
    once = twin(model)
    x, y = data[0]
    GAQATOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model=model, sam_rho=0.5).step(loss_closure(model, x, y))
    with torch.no_grad():
        once(x)
    after_step, after_one_forward = bn_buffers(model), bn_buffers(once)
    assert after_step.keys() == after_one_forward.keys() and after_step
    for name, value in after_step.items():
        assert torch.equal(value, after_one_forward[name]), name


def plain_bn_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))


def test_model_argument_protects_a_model_that_was_not_quantized():
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    counts = {}
    for protect in (True, False):
        model = plain_bn_model()
        opt = GAQATOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model=model if protect else None)
        opt.step(loss_closure(model, x, y))
        counts[protect] = int(model[1].num_batches_tracked)
    assert counts == {True: 1, False: 2}
