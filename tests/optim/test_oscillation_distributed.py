"""Under DDP, oscillation freezing keeps the ranks identical without a collective of its own, and BatchNorm
re-estimation averages the statistics over every rank's batches (one all-reduce)."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from distributed_helpers import free_port, run_ranks

WORLD = 2
STEPS = 12
FAST = {"momentum": 0.3, "freeze_threshold": 0.5, "freeze_threshold_final": 0.35, "warm_start": 0.2}


def worker(rank: int, port: int, out_dir: str) -> None:
    from optim_helpers import batches, convnet
    from torch.nn.parallel import DistributedDataParallel

    from gaqat_wrap import calibrate
    from gaqat_wrap.optim import GAQATOptimizer, OscillationFreezer, reestimate_batchnorm

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD,
                            timeout=timedelta(seconds=60))
    try:
        model = convnet()   # same seed on every rank
        calibrate(model, [batches((3, 8, 8), 1, seed=50 + rank)[0][0]])   # all-reduced: the same step sizes
        ddp = DistributedDataParallel(model)
        base = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)
        optimizer = GAQATOptimizer(base, model=model, sam_rho=0.05, variant="sagm", freeze_threshold=None)
        freezer = OscillationFreezer(model, optimizer, total_steps=STEPS, dampening=0.05, **FAST)
        for x, y in batches((3, 8, 8), STEPS, seed=100 + rank):   # each rank its own data

            def closure(x=x, y=y):
                loss = torch.nn.functional.cross_entropy(ddp(x), y) + freezer.dampening_loss()
                loss.backward()
                return loss
            optimizer.step(closure)
        estimation = [x for x, _ in batches((3, 8, 8), 3, seed=200 + rank)]
        with torch.no_grad():   # the first BatchNorm's input, by hand: the full-precision first conv
            inputs = [model[0](x).transpose(0, 1).reshape(8, -1).double() for x in estimation]
        used = reestimate_batchnorm(ddp, estimation)
        result = {
            "params": [p.detach().flatten().tolist() for p in model.parameters()],
            "frequencies": {role: f.flatten().tolist() for role, f in freezer.frequencies().items()},
            "frozen": {role: [i.tolist(), q.tolist()] for role, (i, q) in freezer.frozen_integers().items()},
            "norm": [model[1].running_mean.tolist(), model[1].running_var.tolist(), int(model[1].num_batches_tracked)],
            "batch_means": [h.mean(1).tolist() for h in inputs],
            "batch_vars": [h.var(1, unbiased=True).tolist() for h in inputs],
            "used": used,
        }
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
        dist.barrier()
    finally:
        dist.destroy_process_group()
    os._exit(0)


def test_ddp_ranks_stay_identical_with_oscillation_freezing_and_batchnorm_reestimation(tmp_path):
    run_ranks(worker, (free_port(), str(tmp_path)), world=WORLD)
    ranks = [json.loads(Path(tmp_path, f"rank{r}.json").read_text()) for r in range(WORLD)]
    for key in ("params", "frequencies", "frozen", "norm"):
        assert ranks[0][key] == ranks[1][key], key                # bit-identical
    assert sum(len(index) for index, _ in ranks[0]["frozen"].values()) > 0   # freezing happened
    means = torch.tensor([m for rank in ranks for m in rank["batch_means"]], dtype=torch.float64)
    variances = torch.tensor([v for rank in ranks for v in rank["batch_vars"]], dtype=torch.float64)
    mean, var, count = ranks[0]["norm"]
    assert ranks[0]["used"] == 3 and count == 6                      # every rank's batches count
    torch.testing.assert_close(torch.tensor(mean, dtype=torch.float64), means.mean(0), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.tensor(var, dtype=torch.float64), variances.mean(0), rtol=1e-5, atol=1e-5)
