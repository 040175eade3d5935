"""reestimate_batchnorm: the running statistics equal the per-batch statistics averaged by hand; modes, momenta and
(on failure) statistics are put back."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from gaqat_wrap import quantize_model
from gaqat_wrap.optim import reestimate_batchnorm


def hand_statistics(inputs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean over batches of each batch's per-channel mean and unbiased variance (channel = dim 1)."""
    means, variances = [], []
    for h in inputs:
        flat = h.transpose(0, 1).reshape(h.shape[1], -1).double()
        means.append(flat.mean(dim=1))
        variances.append(flat.var(dim=1, unbiased=True))
    return torch.stack(means).mean(0), torch.stack(variances).mean(0)


CASES = {
    "1d": (lambda: nn.BatchNorm1d(6), (10, 4), lambda: nn.Linear(4, 6)),
    "2d": (lambda: nn.BatchNorm2d(6), (10, 3, 5, 5), lambda: nn.Conv2d(3, 6, 3)),
    "3d": (lambda: nn.BatchNorm3d(6), (4, 3, 4, 4, 4), lambda: nn.Conv3d(3, 6, 3)),
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_statistics_equal_the_per_batch_statistics_averaged_by_hand(kind):
    make_norm, shape, make_layer = CASES[kind]
    torch.manual_seed(0)
    net = nn.Sequential(make_layer(), make_norm(), nn.Dropout(0.5))   # the layer feeding the BatchNorm is quantized
    net = quantize_model(net, bits=4, keep_first_last=False)
    batches = [(torch.randn(*shape) * 3 + 1, torch.zeros(shape[0])) for _ in range(5)]
    with torch.no_grad():
        expected_mean, expected_var = hand_statistics([net[0](x) for x, _ in batches])
    net.train()
    net[1].momentum = 0.3
    used = reestimate_batchnorm(net, iter(batches))
    assert used == 5 and int(net[1].num_batches_tracked) == 5
    torch.testing.assert_close(net[1].running_mean.double(), expected_mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(net[1].running_var.double(), expected_var, rtol=1e-5, atol=1e-5)
    assert net.training and net[1].training and net[2].training and net[1].momentum == 0.3


def test_timm_batchnorm_act_is_reestimated():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3)
    net = nn.Sequential(conv, timm.layers.BatchNormAct2d(4, act_layer=nn.ReLU)).eval()
    batches = [torch.randn(6, 3, 7, 7) + 2 for _ in range(3)]
    with torch.no_grad():
        expected_mean, expected_var = hand_statistics([conv(x) for x in batches])
    assert reestimate_batchnorm(net, batches) == 3
    torch.testing.assert_close(net[1].running_mean.double(), expected_mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(net[1].running_var.double(), expected_var, rtol=1e-5, atol=1e-5)
    assert not net.training and not net[1].training


def test_num_batches_takes_no_more_than_that_from_an_iterator():
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    source = iter([torch.randn(8, 3) for _ in range(10)])
    assert reestimate_batchnorm(net, source, num_batches=3) == 3
    assert len(list(source)) == 7


def test_mapping_batches_run_without_their_labels():
    class KeywordNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = nn.BatchNorm1d(3)

        def forward(self, pixel_values):
            return self.norm(pixel_values)

    net = KeywordNet()
    batches = [{"pixel_values": torch.randn(5, 3) + 4, "labels": torch.zeros(5)} for _ in range(2)]
    assert reestimate_batchnorm(net, batches) == 2
    assert net.norm.running_mean.gt(2).all()


def test_a_batchnorm_no_batch_reaches_keeps_its_statistics_and_no_gradient_is_computed():
    class TwoBranches(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused, self.fc = nn.BatchNorm1d(3), nn.BatchNorm1d(3), nn.Linear(3, 3)

        def forward(self, x):
            return self.used(self.fc(x))

    net = TwoBranches()
    with torch.no_grad():
        net.unused.running_mean.fill_(7.0)
    reestimate_batchnorm(net, [torch.randn(4, 3) for _ in range(2)])
    assert net.unused.running_mean.eq(7.0).all() and int(net.unused.num_batches_tracked) == 0
    assert all(p.grad is None for p in net.parameters())


def test_a_failing_forward_puts_every_statistic_mode_and_momentum_back():
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, momentum=0.2)).eval()
    with torch.no_grad():
        net[1].running_mean.fill_(1.5)

    def forward(batch):
        if batch == "bad":
            raise RuntimeError("boom")
        net(batch)

    with pytest.raises(RuntimeError, match="boom"):
        reestimate_batchnorm(net, [torch.randn(4, 3), "bad"], forward=forward)
    assert net[1].running_mean.eq(1.5).all() and net[1].momentum == 0.2 and not net[1].training


def test_a_model_without_batchnorm_runs_nothing():
    batches = itertools.count()   # would never end if consumed
    assert reestimate_batchnorm(nn.Linear(2, 2), batches) == 0
