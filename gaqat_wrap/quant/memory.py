"""Activation memory of quantized layers: choose what backward keeps, and measure it.

A quantized Linear/Conv layer keeps, between forward and backward, one of:

- ``"float"`` (default): its input ``x``, as the full-precision layer does; the
  fake-quantized input is rebuilt in backward. Exact (same outputs and
  gradients as the two-op path).
- ``"int8"``: two bytes per input element (integer code + rounding residual)
  instead of ``x``. Input and weight gradients stay exact; the input step
  size's gradient is approximate (see :mod:`gaqat_wrap.quant.fused`). It saves
  memory where nothing else keeps the layer input (ViT blocks: LayerNorm and
  GELU outputs) and costs memory where something does (a ReLU keeps its
  output, which is the next conv's input).
- ``"unfused"``: the input quantizer and the op as two autograd nodes, which
  keep both ``x`` and the fake-quantized ``x̂``; the reference the others are
  tested against.

Layers whose adapter has its own weight or padding (timm ``StdConv2d``,
``Conv2dSame``, non-zero ``padding_mode``) always run the two-op path.
See ``docs/concepts/quantization.md`` and ``docs/results/speed.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from gaqat_wrap.quant.layers import QuantizedLayer

SAVED_INPUT_MODES = ("float", "int8", "unfused")
"""The values :func:`set_saved_inputs` accepts (module docstring)."""


def set_saved_inputs(model: nn.Module, mode: str) -> int:
    """Choose what every quantized layer of ``model`` keeps of its input for backward; returns how many layers.

    Examples:
        >>> from gaqat_wrap import quantize_model
        >>> net = quantize_model(nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2)))
        >>> set_saved_inputs(net, "int8"), net[1].saved_inputs
        (1, 'int8')
    """
    if mode not in SAVED_INPUT_MODES:
        raise ValueError(f"mode must be one of {', '.join(map(repr, SAVED_INPUT_MODES))}, got {mode!r}")
    layers = [m for m in model.modules() if isinstance(m, QuantizedLayer)]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no quantized layer; call quantize_model(model) first")
    for layer in layers:
        layer.saved_inputs = mode
    return len(layers)


def saved_tensor_bytes(run: Callable[[], Any], exclude: Iterable[Tensor] = ()) -> int:
    """Bytes of the distinct storages autograd saves for backward while ``run()`` executes.

    Tensors sharing a storage count once; storages of ``exclude`` (pass the
    model's parameters to count activation memory only) are not counted. The
    graph ``run`` builds is dropped when it returns (keep nothing of it alive).

    Examples:
        >>> layer = nn.Linear(256, 256)
        >>> x = torch.randn(64, 256, requires_grad=True)
        >>> saved_tensor_bytes(lambda: layer(x).relu().sum(), exclude=layer.parameters()) == 2 * 64 * 256 * 4
        True
    """
    storages: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        result = run()
    del result
    excluded = {t.untyped_storage().data_ptr() for t in exclude}
    return sum(n for ptr, n in storages.items() if ptr not in excluded)
