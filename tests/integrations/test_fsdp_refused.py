"""FSDP (v1 FlatParameter and v2 DTensor shards) is refused with an error naming the supported engines."""

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
        GAQATOptimizer(torch.optim.SGD(model.parameters(), lr=0.1))


def test_fsdp_v2_dtensor_shards_are_refused(single_rank_world):
    from torch.distributed.device_mesh import init_device_mesh

    fsdp = pytest.importorskip("torch.distributed.fsdp")
    if not hasattr(fsdp, "fully_shard"):  # public from torch 2.6: older torch has no FSDP2 to refuse
        pytest.skip("this torch has no torch.distributed.fsdp.fully_shard (FSDP2)")
    fully_shard = fsdp.fully_shard
    model = _net()
    fully_shard(model, mesh=init_device_mesh("cpu", (1,)))
    with pytest.raises(NotImplementedError, match="DistributedDataParallel"):
        GAQATOptimizer(torch.optim.SGD(model.parameters(), lr=0.1))
