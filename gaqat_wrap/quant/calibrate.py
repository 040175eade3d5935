"""calibrate: initialise input step sizes from data."""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from gaqat_wrap.quant.quantizer import LSQQuantizer
from gaqat_wrap.second_pass import protect_running_stats, second_pass

logger = logging.getLogger(__name__)


def run_model_on_batch(model: nn.Module, batch: Any) -> Any:
    """Call ``model`` on a batch the way most loops do.

    A mapping is passed as keyword arguments (Hugging Face style), a tuple or
    list contributes its first element (``(images, labels)``), anything else
    is passed as is.

    Examples:
        >>> run_model_on_batch(nn.Identity(), (torch.ones(1), torch.zeros(1)))
        tensor([1.])
    """
    if isinstance(batch, Mapping):
        return model(**batch)
    if isinstance(batch, tuple | list):
        return model(batch[0])
    return model(batch)


def input_quantizers(model: nn.Module) -> list[LSQQuantizer]:
    """Every input (activation) quantizer of ``model``, in registration order.

    Examples:
        >>> from gaqat_wrap import quantize_model
        >>> len(input_quantizers(quantize_model(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 2)), bits=4)))
        1
    """
    return [m for m in model.modules() if isinstance(m, LSQQuantizer) and m.kind == "input"]


@torch.no_grad()
def calibrate(
    model: nn.Module,
    batches: Iterable[Any],
    num_batches: int | None = None,
    forward_fn: Callable[[nn.Module, Any], Any] = run_model_on_batch,
    train_mode: bool = False,
) -> int:
    """Set every input step size from the statistics of ``batches``.

    Runs the model without gradients, with inputs passed through unquantized,
    and initialises each input quantizer from all the data it saw (LSQ rule
    ``2 mean|x| / sqrt(Qp)`` or the MSE search, per the config). Under
    torch.distributed the statistics are all-reduced, so every rank ends with
    the same step sizes. Returns the number of batches used.

    By default the model runs in eval mode (BatchNorm uses its running
    statistics: right for a pretrained model). ``train_mode=True`` runs it in
    train mode, so BatchNorm normalises with batch statistics as it will during
    training (right for a model trained from scratch, whose running statistics
    are still the initial ones); the running statistics are left untouched.

    Examples:
        >>> from gaqat_wrap import quantize_model
        >>> net = quantize_model(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.Linear(8, 2)), bits=4)
        >>> calibrate(net, [torch.randn(16, 4) for _ in range(3)])
        3
    """
    quantizers = input_quantizers(model)
    if not quantizers:
        raise ValueError("model has no input quantizers to calibrate; call quantize_model(model, ...) first "
                         "(with quantize_inputs=True)")
    if num_batches is not None and num_batches < 1:
        raise ValueError(f"num_batches must be >= 1, got {num_batches}")
    was_training = model.training
    model.train(train_mode)
    if train_mode:
        protect_running_stats(model)
    for q in quantizers:
        q.begin_calibration()
    used = 0
    try:
        for batch in itertools.islice(batches, num_batches):  # never pulls a batch it will not use
            # in train mode, the second-pass guard keeps BatchNorm running statistics as they were
            with second_pass() if train_mode else contextlib.nullcontext():
                forward_fn(model, batch)
            used += 1
        if used == 0:
            raise ValueError("calibrate got no batches")
    except BaseException:
        for q in quantizers:
            q.abort_calibration()
        raise
    finally:
        model.train(was_training)
    for q in quantizers:
        q.end_calibration()
    missing = [q.role for q in quantizers if not q.is_initialized]
    if missing:
        logger.warning("%d input quantizers saw no data during calibration and will initialise at their first "
                       "forward: %s", len(missing), ", ".join(missing[:5]))
    return used
