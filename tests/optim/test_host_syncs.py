"""The GAQAT step reads one value back to the host per step (the skip decision, with the frozen flags at decisions).

On a GPU every read-back (``.item()``, ``bool(tensor)``, ``.tolist()``, ``.cpu()``) stalls the pipeline until the
device catches up. A ``TorchFunctionMode`` sees every such call the optimizer makes (the base optimizer's own
step is excluded: AdamW reads its CPU step counter, which is no device sync); ``bench/gpu_step.py`` counts the same
with ``torch.cuda.set_sync_debug_mode`` on a GPU.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from optim_helpers import build, loss_closure
from torch.overrides import TorchFunctionMode

from gaqat_wrap.optim import GAQATOptimizer

READS = {"__bool__", "item", "tolist", "__float__", "__int__", "__index__", "cpu", "numpy"}


class CountHostReads(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []
        self.paused = False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if not self.paused and name in READS:
            self.reads.append(name)
        return func(*args, **(kwargs or {}))

    @contextlib.contextmanager
    def pause(self):
        self.paused = True
        try:
            yield
        finally:
            self.paused = False


def reads_per_step(opt: GAQATOptimizer, model, data, steps: int) -> list[list[str]]:
    counter = CountHostReads()
    base_step = opt.base.step

    def uncounted_base_step(*args, **kwargs):
        with counter.pause():
            return base_step(*args, **kwargs)

    opt.base.step = uncounted_base_step
    per_step = []
    for i in range(steps):
        closure = loss_closure(model, *data[i % len(data)])

        def uncounted_closure(closure=closure):
            with counter.pause():   # the user's forward + backward is not the optimizer's business
                return closure()
        with counter:
            start = len(counter.reads)
            opt.step(uncounted_closure)
        per_step.append(counter.reads[start:])
    return per_step


@pytest.mark.parametrize("options", [{"window": 2}, {"window": 2, "variant": "sagm"}, {"window": 3, "freeze_mode": "smooth"},
                                     {"freeze_threshold": None}])
def test_one_host_read_per_step_after_the_first(options):
    model, data = build("convnet")
    opt = GAQATOptimizer(torch.optim.AdamW(model.parameters(), lr=1e-3), model=model, sam_rho=0.5, **options)
    per_step = reads_per_step(opt, model, data, steps=6)
    # the first step also reads the smallest step size once (the learning-rate check)
    assert sorted(per_step[0]) == ["__float__", "tolist"]
    assert all(reads == ["tolist"] for reads in per_step[1:]), per_step
    assert opt.steps == 6
    if options.get("freeze_threshold", 0.5) is not None:
        assert any(s.frozen_steps for s in opt.freeze_report())   # decisions were taken in the counted steps
