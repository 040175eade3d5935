"""The integer states of quantized weights: which layers have them, and how to compute them.

A quantized layer's weight integer is ``q = clamp(round(w / s), Qn, Qp)`` with the layer's
per-output-channel step size ``s`` (clamped to :data:`~gaqat_wrap.quant.lsq.SCALE_EPS`, as in the
forward) and ``w`` its *effective* weight: the weight Parameter itself for Linear / Conv layers,
the standardised weight for timm ``StdConv2d``-like layers. Only the first kind can be pinned to an
integer by writing the Parameter (``w <- s * q``); the second is tracked but not frozen.

Examples:
    >>> import torch
    >>> from gaqat_wrap import quantize_model
    >>> net = quantize_model(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4), torch.nn.Linear(4, 2)))
    >>> tracked, skipped = tracked_layers(net, max_bits=4)
    >>> [(layer.role, layer.bits, layer.pinnable) for layer in tracked], skipped
    ([('1.weight', 4, True)], [])
    >>> layer = tracked[0]
    >>> bool((layer.integers() * layer.channel_scales() == layer.module.weight_quantizer(layer.weight)).all())
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gaqat_wrap.quant.layers import QuantizedLayer
from gaqat_wrap.quant.lsq import SCALE_EPS

BLOCK_ELEMENTS = 1 << 18
"""Weights per block of :meth:`TrackedLayer.write_integers` (1 MiB of float32: fits in a core's cache)."""


@dataclass(frozen=True)
class TrackedLayer:
    """One quantized layer whose weight integers are tracked.

    ``offset`` is where the layer's weights start in a flat state over all tracked layers.

    Examples:
        >>> from gaqat_wrap.quant.layers import quantize_layer
        >>> layer = torch.nn.Linear(3, 2); quantize_layer(layer, weight_bits=3, input_bits=None, role="fc")
        >>> TrackedLayer.of(layer, offset=0).qrange, TrackedLayer.of(layer, offset=0).numel
        ((-4, 3), 6)
    """

    role: str
    module: nn.Module
    bits: int
    qrange: tuple[int, int]
    pinnable: bool
    offset: int
    numel: int

    @classmethod
    def of(cls, module: nn.Module, offset: int) -> TrackedLayer:
        """Describe the quantized ``module`` whose state starts at ``offset``.

        Examples:
            >>> from gaqat_wrap.quant.layers import quantize_layer
            >>> conv = torch.nn.Conv2d(2, 4, 3); quantize_layer(conv, weight_bits=4, input_bits=None, role="c")
            >>> TrackedLayer.of(conv, offset=10).role
            'c.weight'
        """
        quantizer = module.weight_quantizer
        weight = module.effective_weight()
        return cls(role=quantizer.role, module=module, bits=quantizer.bits, qrange=quantizer.qrange,
                   pinnable=weight is module.weight, offset=offset, numel=weight.numel())

    @property
    def weight(self) -> Tensor:
        """The weight Parameter of the layer."""
        return self.module.weight

    def channel_scales(self) -> Tensor:
        """The step sizes as the forward uses them: clamped, detached, shaped to broadcast over the weight.

        Examples:
            >>> from gaqat_wrap.quant.layers import quantize_layer
            >>> conv = torch.nn.Conv2d(2, 4, 3); quantize_layer(conv, weight_bits=4, input_bits=None, role="c")
            >>> TrackedLayer.of(conv, offset=0).channel_scales().shape
            torch.Size([4, 1, 1, 1])
        """
        weight = self.module.weight
        scale = self.module.weight_quantizer.scale.detach().clamp(min=SCALE_EPS).to(weight.dtype)
        return scale.view((-1,) + (1,) * (weight.dim() - 1))

    @torch.no_grad()
    def integers(self) -> Tensor:
        """``clamp(round(w / s), Qn, Qp)`` of the effective weight, in the weight's shape and dtype.

        Examples:
            >>> from gaqat_wrap.quant.layers import quantize_layer
            >>> fc = torch.nn.Linear(2, 1); quantize_layer(fc, weight_bits=4, input_bits=None, role="fc")
            >>> _ = fc.weight_quantizer.scale.data.fill_(0.5); _ = fc.weight.data.copy_(torch.tensor([[0.76, -9.0]]))
            >>> TrackedLayer.of(fc, offset=0).integers().tolist()
            [[2.0, -8.0]]
        """
        qn, qp = self.qrange
        # clamp before round equals the forward's round before clamp: Qn and Qp are integers
        return torch.div(self.module.effective_weight().detach(), self.channel_scales()).clamp_(qn, qp).round_()

    @torch.no_grad()
    def write_integers(self, target: Tensor, scratch: Tensor) -> None:
        """Write :meth:`integers` into ``target`` (flat, ``numel`` elements) a block of output channels at a time.

        Each block goes through the float32 ``scratch`` (at least one output channel long) while it is
        in cache: four passes over a block that fits in cache cost a fraction of four passes over a
        tensor that does not (measured: about 3x less CPU time on a 2.4M-weight convolution).

        Examples:
            >>> from gaqat_wrap.quant.layers import quantize_layer
            >>> conv = torch.nn.Conv2d(3, 5, 3); quantize_layer(conv, weight_bits=4, input_bits=None, role="c")
            >>> layer, target = TrackedLayer.of(conv, offset=0), torch.zeros(135, dtype=torch.int8)
            >>> layer.write_integers(target, scratch=torch.zeros(60))    # two output channels per block
            >>> torch.equal(target, layer.integers().reshape(-1).to(torch.int8))
            True
        """
        weight = self.module.effective_weight().detach()
        scale = self.channel_scales()
        qn, qp = self.qrange
        channels = weight.shape[0]
        per_channel = weight[0].numel()
        block = max(1, scratch.numel() // max(per_channel, 1))
        for start in range(0, channels, block):
            part = weight[start:start + block]
            size = part.numel()
            if part.dtype == scratch.dtype:
                values = torch.div(part, scale[start:start + block], out=scratch[:size].view(part.shape))
            else:
                values = torch.div(part, scale[start:start + block])
            values.clamp_(qn, qp).round_()
            target[start * per_channel:start * per_channel + size].copy_(values.reshape(-1))


def tracked_layers(model: nn.Module, max_bits: int) -> tuple[list[TrackedLayer], list[tuple[TrackedLayer, str]]]:
    """The quantized layers with at most ``max_bits`` weight bits (pinnable ones first), and the others with a reason.

    Pinnable layers come first so that their weights form one contiguous block of a flat state;
    the layers left out have ``offset = -1``.

    Examples:
        >>> from gaqat_wrap import quantize_model
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4), torch.nn.Linear(4, 4),
        ...                           torch.nn.Linear(4, 2))
        >>> net = quantize_model(net, bits=4, overrides={"2": 8})
        >>> tracked, skipped = tracked_layers(net, max_bits=4)
        >>> [layer.role for layer in tracked], [(layer.role, reason) for layer, reason in skipped]
        (['1.weight'], [('2.weight', '8 weight bits > max_bits=4')])
    """
    found: list[nn.Module] = []
    skipped: list[tuple[TrackedLayer, str]] = []
    seen: set[int] = set()
    for module in model.modules():
        if not isinstance(module, QuantizedLayer) or id(module) in seen:
            continue
        seen.add(id(module))
        bits = module.weight_quantizer.bits
        if bits > max_bits:
            skipped.append((TrackedLayer.of(module, offset=-1), f"{bits} weight bits > max_bits={max_bits}"))
        else:
            found.append(module)
    found.sort(key=lambda m: m.effective_weight() is not m.weight)   # stable: pinnable first, module order kept
    layers, offset = [], 0
    for module in found:
        layer = TrackedLayer.of(module, offset)
        layers.append(layer)
        offset += layer.numel
    return layers, skipped
