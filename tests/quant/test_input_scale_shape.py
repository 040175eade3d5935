"""An input step size is one number kept as a 1-element vector (FSDP refuses 0-d parameters); old 0-d checkpoints load."""

from __future__ import annotations

import torch
from torch import nn

from gaqat_wrap import quantize_model
from gaqat_wrap.quant import LSQQuantizer


def test_input_step_size_is_a_one_element_vector():
    q = LSQQuantizer(4, kind="input")
    assert q.scale.shape == (1,)
    assert LSQQuantizer(4, kind="weight", num_channels=3).scale.shape == (3,)


def test_a_checkpoint_with_0d_input_step_sizes_loads_and_gives_the_same_outputs():
    torch.manual_seed(0)
    net = quantize_model(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)), bits=4)
    x = torch.randn(5, 4)
    expected = net(x)
    old = {k: (v.reshape(()) if k.endswith("input_quantizer.scale") else v) for k, v in net.state_dict().items()}
    assert any(v.dim() == 0 and k.endswith("input_quantizer.scale") for k, v in old.items())
    torch.manual_seed(1)
    fresh = quantize_model(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)), bits=4)
    fresh.load_state_dict(old)
    assert torch.equal(fresh(x), expected)
    assert all(p.dim() == 1 for name, p in fresh.named_parameters() if name.endswith("input_quantizer.scale"))
