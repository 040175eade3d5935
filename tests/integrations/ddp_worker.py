"""Worker for test_ddp.py: GAQAT steps under Accelerate, one process or DDP over gloo.

Usage: ``accelerate launch --multi_gpu --num_processes 2 ddp_worker.py OUT_DIR`` (or plain ``python`` for one
process). Every rank trains on its contiguous shard of the same global batch and writes its parameters,
step sizes after calibration and freeze decisions to ``OUT_DIR/rank<r>.pt``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from torch import nn

from gaqat_wrap import calibrate, quantize_model
from gaqat_wrap.optim import GAQATOptimizer

GLOBAL_BATCH, STEPS = 16, 6


def build_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=2), nn.GELU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 4 * 4, 32), nn.GELU(),
        nn.Linear(32, 4),
    )
    # LSQ-rule input init: its statistics are all-reduced exactly, so DDP calibration equals one process's
    return quantize_model(model, bits=4, act_init="lsq")


def main(out_dir: Path) -> None:
    accelerator = Accelerator(cpu=True)
    rank, world = accelerator.process_index, accelerator.num_processes
    g = torch.Generator().manual_seed(1)
    images = torch.randn(STEPS + 1, GLOBAL_BATCH, 3, 8, 8, generator=g)
    labels = torch.randint(0, 4, (STEPS + 1, GLOBAL_BATCH), generator=g)
    shard = slice(rank * GLOBAL_BATCH // world, (rank + 1) * GLOBAL_BATCH // world)

    model = build_model()
    calibrate(model, [images[-1, shard]])  # each rank sees different data; scales must agree
    calibrated = {n: p.detach().clone() for n, p in model.named_parameters() if n.endswith("scale")}
    optimizer = GAQATOptimizer(torch.optim.AdamW(model.parameters(), lr=1e-2), model=model, sam_rho=0.05,
                               freeze_threshold=0.5, window=2)
    model, optimizer = accelerator.prepare(model, optimizer)
    frozen_history = []
    for step in range(STEPS):
        x, y = images[step, shard], labels[step, shard]

        def closure(x=x, y=y):
            loss = nn.functional.cross_entropy(model(x), y)
            accelerator.backward(loss)
            return loss

        optimizer.step(closure)
        frozen_history.append([s.frozen for s in optimizer.optimizer.freeze_report()])
    params = {n: p.detach().clone() for n, p in accelerator.unwrap_model(model).named_parameters()}
    torch.save({"world": world, "params": params, "calibrated": calibrated, "frozen": frozen_history},
               out_dir / f"rank{rank}.pt")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    # Interpreter teardown after a gloo run sometimes aborts on a still-joinable torch thread (SIGABRT, seen in
    # about 1 in 10 spawned gloo runs here); the results are on disk, so leave without it.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
