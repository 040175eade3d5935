"""What a failed or skipped step puts back: BatchNorm running statistics and quantizer buffers.

A step's forwards update module buffers: BatchNorm running statistics (first pass) and the
``initialized`` / ``signed`` flags of a quantizer that initialises lazily. When the step is
skipped (non-finite loss or gradient) or raises (an OOM, Ctrl-C, a failing closure), the
optimizer restores them bit-identically from a copy taken when the step began, so a
failed step leaves the model exactly as it was (``docs/concepts/gaqat.md``, "Faults").

Examples:
    >>> import torch
    >>> bn = torch.nn.BatchNorm1d(2)
    >>> snapshot = BufferSnapshot(bn)
    >>> _ = bn(torch.randn(4, 2))
    >>> snapshot.restore(); bn.running_mean.tolist(), int(bn.num_batches_tracked)
    ([0.0, 0.0], 0)
"""

from __future__ import annotations

import torch  # noqa: F401  (the examples use it)
from torch import Tensor, nn

from gaqat_wrap.quant.quantizer import LSQQuantizer
from gaqat_wrap.second_pass import discard_stand_ins


def _stateful(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.batchnorm._BatchNorm | LSQQuantizer)


class BufferSnapshot:
    """A copy of the buffers of every BatchNorm and quantizer module of ``model``.

    Examples:
        >>> len(BufferSnapshot(torch.nn.Sequential(torch.nn.BatchNorm2d(3), torch.nn.ReLU())).saved)
        3
    """

    def __init__(self, model: nn.Module) -> None:
        self.saved: list[tuple[nn.Module, str, Tensor, Tensor]] = [
            (module, name, buffer, buffer.clone())
            for module in model.modules() if _stateful(module)
            for name, buffer in module._buffers.items() if buffer is not None
        ]

    def restore(self) -> None:
        """Put every saved buffer back, in place, as it was when the snapshot was taken."""
        modules = {id(module): module for module, *_ in self.saved}
        for module in modules.values():
            discard_stand_ins(module)
        for module, name, original, copy in self.saved:
            module._buffers[name] = original
            original.copy_(copy)
        for module in modules.values():
            if isinstance(module, LSQQuantizer):
                module.sync_from_buffers()
