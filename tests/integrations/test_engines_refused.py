"""Engines GAQAT cannot serve are refused with the library's own error naming the supported ones.

FSDP (v1 FlatParameter and v2 DTensor shards), nn.DataParallel (its replicas run the second pass in other threads) and
parameters spread over several devices.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torch import nn

from gaqat_wrap.optim import GAQATOptimizer


@pytest.fixture
def single_rank_world():
    dist.init_process_group("gloo", rank=0, world_size=1, store=dist.HashStore())
    yield
    dist.destroy_process_group()


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))


def test_fsdp_v1_flat_parameters_are_refused(single_rank_world):
    from torch.distributed.fsdp import FullyShardedDataParallel

    model = FullyShardedDataParallel(_net(), device_id=torch.device("cpu"))
    with pytest.raises(NotImplementedError, match="DistributedDataParallel"):
        GAQATOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), freeze_threshold=None)


def test_fsdp_v2_dtensor_shards_are_refused(single_rank_world):
    from torch.distributed.device_mesh import init_device_mesh

    fsdp = pytest.importorskip("torch.distributed.fsdp")
    if not hasattr(fsdp, "fully_shard"):  # public from torch 2.6: older torch has no FSDP2 to refuse
        pytest.skip("this torch has no torch.distributed.fsdp.fully_shard (FSDP2)")
    fully_shard = fsdp.fully_shard
    model = _net()
    fully_shard(model, mesh=init_device_mesh("cpu", (1,)))
    with pytest.raises(NotImplementedError, match="DistributedDataParallel"):
        GAQATOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), freeze_threshold=None)


def test_data_parallel_is_refused():
    model = nn.DataParallel(_net())
    with pytest.raises(NotImplementedError, match=r"DataParallel.*DistributedDataParallel"):
        GAQATOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model=model)


def test_parameters_on_several_devices_are_refused():
    on_cpu = nn.Parameter(torch.ones(2))
    elsewhere = nn.Parameter(torch.ones(2, device="meta"))   # stands in for a second accelerator
    with pytest.raises(NotImplementedError, match="several devices"):
        GAQATOptimizer(torch.optim.SGD([on_cpu, elsewhere], lr=0.1), freeze_threshold=None)
    opt = GAQATOptimizer(torch.optim.SGD([on_cpu], lr=0.1), freeze_threshold=None)
    with pytest.raises(NotImplementedError, match="several devices"):
        opt.add_param_group({"params": [elsewhere]})


@pytest.mark.parametrize("engine", ["fsdp_v1", "fsdp_v2"])
def test_fsdp_of_a_quantized_model_is_refused_by_gaqat_not_by_torch(single_rank_world, engine):
    """Input step sizes are 1-element vectors, so FSDP wraps a quantized model and GAQAT refuses it with its reason."""
    from torch.distributed import fsdp

    from gaqat_wrap import quantize_model

    model = quantize_model(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)), bits=4)
    if engine == "fsdp_v1":
        model = fsdp.FullyShardedDataParallel(model, device_id=torch.device("cpu"))
    else:
        if not hasattr(fsdp, "fully_shard"):  # public from torch 2.6
            pytest.skip("this torch has no torch.distributed.fsdp.fully_shard (FSDP2)")
        from torch.distributed.device_mesh import init_device_mesh

        fsdp.fully_shard(model, mesh=init_device_mesh("cpu", (1,)))
    with pytest.raises(NotImplementedError, match="DistributedDataParallel"):
        GAQATOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), freeze_threshold=None)
