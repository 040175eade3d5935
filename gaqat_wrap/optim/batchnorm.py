"""BatchNorm re-estimation: running statistics of the (quantized) model recomputed before evaluation.

Oscillating weights make BatchNorm's exponential running statistics lag behind the weights the
model ends with (Nagel et al., ICML 2022, section 3). :func:`reestimate_batchnorm` resets them and
recomputes them as the plain average over N training batches, with the current weights.

Examples:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    >>> batches = [torch.randn(8, 3) + 5 for _ in range(4)]
    >>> reestimate_batchnorm(net, batches), int(net[1].num_batches_tracked), net.training
    (4, 4, True)
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel

from gaqat_wrap.optim.config import check_positive_int

LABEL_KEYS = ("labels", "label")
"""Keys of a mapping batch that the default forward leaves out (Hugging Face models compute a loss from them)."""


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def default_forward(model: nn.Module, batch: Any) -> Any:
    """Run ``model`` on the inputs of ``batch``, moved to the model's device.

    A tensor is the input; a tuple or list holds the input first (``(x, y)``); a mapping holds
    keyword inputs (``pixel_values=...``), of which the label keys (:data:`LABEL_KEYS`) are left out.

    Examples:
        >>> net = torch.nn.Linear(3, 2)
        >>> default_forward(net, (torch.ones(4, 3), torch.zeros(4))).shape
        torch.Size([4, 2])
    """
    device = next((p.device for p in model.parameters()), None)

    def move(value: Any) -> Any:
        return value.to(device) if isinstance(value, Tensor) and device is not None else value

    if isinstance(batch, Tensor):
        return model(move(batch))
    if isinstance(batch, Mapping):
        return model(**{key: move(value) for key, value in batch.items() if key not in LABEL_KEYS})
    if isinstance(batch, tuple | list) and batch:
        return model(move(batch[0]))
    raise TypeError(f"reestimate_batchnorm cannot find the input in a batch of type {type(batch).__name__}: pass "
                    "forward=lambda batch: model(...) that runs the model on it")


def _all_reduce(norms: list[_BatchNorm]) -> None:
    """Batch-weighted average of every rank's statistics, in one collective."""
    device = norms[0].running_mean.device
    parts = []
    for bn in norms:
        count = bn.num_batches_tracked.to(device=device, dtype=torch.float64).reshape(1)
        parts += [bn.running_mean.double() * count, bn.running_var.double() * count, count]
    packed = torch.cat(parts)
    dist.all_reduce(packed, op=dist.ReduceOp.SUM)
    start = 0
    for bn in norms:
        size = bn.running_mean.numel()
        mean_sum, var_sum = packed[start:start + size], packed[start + size:start + 2 * size]
        count = packed[start + 2 * size]
        start += 2 * size + 1
        if count > 0:
            bn.running_mean.copy_(mean_sum / count)
            bn.running_var.copy_(var_sum / count)
        bn.num_batches_tracked.fill_(int(count.item()))


@torch.no_grad()
def reestimate_batchnorm(model: nn.Module, batches: Iterable[Any], *, num_batches: int | None = None,
                         forward: Callable[[Any], Any] | None = None) -> int:
    """Recompute every BatchNorm's running mean and variance as the average over ``batches``.

    The statistics are reset, then each BatchNorm (``nn.BatchNorm1d/2d/3d``, ``SyncBatchNorm``,
    timm's ``BatchNormAct2d`` and other ``_BatchNorm`` subclasses that track running statistics)
    runs in train mode with a cumulative average (``momentum=None``) while everything else runs in
    eval mode (no dropout), without gradients. The running variance is the average of the
    batches' unbiased variances, as BatchNorm computes it. Afterwards every module's mode and
    momentum are as before. A BatchNorm that no batch reached keeps its statistics; when
    ``forward`` raises, every statistic is put back.

    Under DDP every rank re-estimates on its own batches and the statistics are averaged over all
    ranks' batches (one all-reduce), so the ranks end identical. The default forward runs the
    unwrapped module (``model.module``) on the batch's input (see :func:`default_forward`); a
    custom ``forward(batch)`` should do the same. Returns the number of batches this rank used
    (0, without running any, when the model has no BatchNorm).

    Examples:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)).eval()
        >>> data = [(torch.randn(2, 3, 8, 8), torch.zeros(2)) for _ in range(10)]
        >>> reestimate_batchnorm(net, data, num_batches=3), net.training
        (3, False)
    """
    if num_batches is not None:
        check_positive_int("num_batches", num_batches)
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not norms:
        return 0
    inner = model.module if isinstance(model, DistributedDataParallel) else model
    run = forward if forward is not None else (lambda batch: default_forward(inner, batch))
    modes = [(module, module.training) for module in model.modules()]
    saved = [(bn, bn.momentum, bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone())
             for bn in norms]
    used = 0
    try:
        model.eval()
        for bn in norms:
            bn.reset_running_stats()
            bn.momentum = None
            bn.train()
        for batch in itertools.islice(batches, num_batches):
            run(batch)
            used += 1
        if _distributed():
            _all_reduce(norms)
        for bn, _, mean, var, count in saved:
            if int(bn.num_batches_tracked) == 0:   # no batch reached it
                bn.running_mean.copy_(mean), bn.running_var.copy_(var), bn.num_batches_tracked.copy_(count)
    except BaseException:
        for bn, _, mean, var, count in saved:
            bn.running_mean.copy_(mean), bn.running_var.copy_(var), bn.num_batches_tracked.copy_(count)
        raise
    finally:
        for bn, momentum, *_ in saved:
            bn.momentum = momentum
        for module, training in modes:
            module.training = training
    return used
