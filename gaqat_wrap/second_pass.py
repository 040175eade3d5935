"""The SAM second pass: a flag that layers consult, and BatchNorm protection.

SAM-family optimizers evaluate the loss twice per step. The second pass, at
the perturbed weights, must not change any running statistic: BatchNorm's
running mean/var and a quantizer's lazy initialisation see one forward per
step, exactly as in plain training. The optimizer enters :func:`second_pass`
around its second closure call; modules prepared with
:func:`protect_running_stats` restore their buffers bit-exactly after a
forward that ran inside it.

Examples:
    >>> import torch
    >>> bn = torch.nn.BatchNorm1d(3)
    >>> _ = protect_running_stats(bn)
    >>> with second_pass():
    ...     _ = bn(torch.randn(8, 3))
    >>> bool((bn.running_mean == 0).all()), int(bn.num_batches_tracked)
    (True, 0)
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch  # noqa: F401  (the doctests below use it)
from torch import nn

_state = threading.local()
_SAVED_BUFFERS = "_gaqat_saved_running_stats"
_PROTECTED = "_gaqat_running_stats_protected"


def in_second_pass() -> bool:
    """Return True while the current thread runs the optimizer's second pass.

    Examples:
        >>> in_second_pass()
        False
    """
    return getattr(_state, "depth", 0) > 0


@contextmanager
def second_pass() -> Iterator[None]:
    """Mark the enclosed forward/backward as the SAM second pass.

    Examples:
        >>> with second_pass():
        ...     in_second_pass()
        True
    """
    _state.depth = getattr(_state, "depth", 0) + 1
    try:
        yield
    finally:
        _state.depth -= 1


def _save_stats(module: nn.Module, args: tuple) -> None:
    if in_second_pass() and module.training:
        _restore_stats(module, args, None)  # a forward that raised left stand-ins behind
        # The forward updates stand-in copies; the originals are put back untouched afterwards.
        # Copying values back in place instead would bump the version of tensors that
        # batch_norm saved for backward and break the second pass's backward.
        saved = {}
        for name, buf in module._buffers.items():
            if buf is not None:
                saved[name] = buf
                module._buffers[name] = buf.clone()
        setattr(module, _SAVED_BUFFERS, saved)


def _restore_stats(module: nn.Module, args: tuple, output: object) -> None:
    saved = module.__dict__.pop(_SAVED_BUFFERS, None)
    if saved is None:
        return
    for name, original in saved.items():
        module._buffers[name] = original


def discard_stand_ins(module: nn.Module) -> None:
    """Put back the originals of buffers a second-pass forward replaced (after that forward raised).

    Examples:
        >>> bn = torch.nn.BatchNorm1d(2); _ = protect_running_stats(bn)
        >>> original = bn.running_mean
        >>> with second_pass():
        ...     _save_stats(bn, ())                  # what the pre-forward hook does
        >>> bn.running_mean is original
        False
        >>> discard_stand_ins(bn); bn.running_mean is original
        True
    """
    _restore_stats(module, (), None)


def protect_running_stats(model: nn.Module) -> int:
    """Keep BatchNorm running statistics unchanged by second-pass forwards.

    Installs a pre/post forward hook pair on every ``_BatchNorm`` module (timm's
    ``BatchNormAct2d`` and the like included); idempotent. Returns how many
    modules are protected.

    Examples:
        >>> protect_running_stats(torch.nn.Sequential(torch.nn.BatchNorm2d(4), torch.nn.ReLU()))
        1
    """
    count = 0
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            if not getattr(module, _PROTECTED, False):
                module.register_forward_pre_hook(_save_stats)
                module.register_forward_hook(_restore_stats)
                setattr(module, _PROTECTED, True)
            count += 1
    return count
