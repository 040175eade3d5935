"""Oscillation dampening (Nagel et al., ICML 2022): a loss that pulls each weight toward its grid point.

For one quantized layer with effective weight ``w``, per-channel step size ``s`` and integer range
``[Qn, Qp]``::

    L_layer = reduce( (w_q.detach() - clip(w, s Qn, s Qp))^2 )       w_q = s * clamp(round(w / s), Qn, Qp)

summed over the tracked layers. The step size gets no gradient from it (``s`` is detached: the
authors clip "to not change range learning"); a weight outside the clipping range gets none either.
``reduce`` is ``"kernel_mean"`` (sum over output channels, mean over the rest; the authors'
default, with which their λ = 0.1 was tuned), ``"sum"`` or ``"mean"``. See
``docs/concepts/oscillations.md``.

Examples:
    >>> import torch
    >>> from gaqat_wrap import quantize_model
    >>> net = quantize_model(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4), torch.nn.Linear(4, 2)))
    >>> loss = dampening_loss(net)
    >>> loss.backward(); net[1].weight.grad is not None, net[1].weight_quantizer.scale.grad is None
    (True, True)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from gaqat_wrap.optim.config import check_choice
from gaqat_wrap.optim.oscillation_config import DAMPENING_REDUCTIONS
from gaqat_wrap.optim.weight_integers import TrackedLayer, tracked_layers


def layer_dampening_loss(layer: TrackedLayer, reduction: str = "kernel_mean") -> Tensor:
    """The dampening loss of one tracked layer (differentiable in its weight, not in its step size).

    Examples:
        >>> from gaqat_wrap.quant.layers import quantize_layer
        >>> fc = nn.Linear(2, 1); quantize_layer(fc, weight_bits=4, input_bits=None, role="fc")
        >>> _ = fc.weight_quantizer.scale.data.fill_(1.0); _ = fc.weight.data.copy_(torch.tensor([[0.25, 9.0]]))
        >>> float(layer_dampening_loss(TrackedLayer.of(fc, offset=0), "sum").detach())   # (0 - 0.25)^2 + (7 - 7)^2
        0.0625
    """
    weight = layer.module.effective_weight()
    scale = layer.channel_scales()
    qn, qp = layer.qrange
    with torch.no_grad():
        target = torch.div(weight.detach(), scale).clamp_(qn, qp).round_().mul_(scale)
    clipped = torch.clamp(weight, min=scale * qn, max=scale * qp)
    error = (target - clipped).square()
    if reduction == "sum":
        return error.sum()
    if reduction == "mean":
        return error.mean()
    return error.sum(dim=0).mean()


def layers_dampening_loss(layers: Sequence[TrackedLayer], reduction: str = "kernel_mean") -> Tensor:
    """The sum of :func:`layer_dampening_loss` over ``layers`` (a 0-d zero when there are none).

    Examples:
        >>> float(layers_dampening_loss([]))
        0.0
    """
    check_choice("reduction", reduction, DAMPENING_REDUCTIONS)
    if not layers:
        return torch.zeros(())
    return torch.stack([layer_dampening_loss(layer, reduction).float() for layer in layers]).sum()


def dampening_loss(model: nn.Module, *, max_bits: int = 4, reduction: str = "kernel_mean") -> Tensor:
    """The (unweighted) dampening loss of every quantized layer of ``model`` with at most ``max_bits`` weight bits.

    Add ``λ * dampening_loss(model)`` to the task loss, or let
    :meth:`gaqat_wrap.optim.OscillationFreezer.dampening_loss` anneal λ for you.

    Examples:
        >>> from gaqat_wrap import quantize_model
        >>> net = quantize_model(nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2)), bits=4)
        >>> float(dampening_loss(net, max_bits=2))   # no layer has 2 or fewer weight bits
        0.0
        >>> float(dampening_loss(net).detach()) > 0
        True
    """
    return layers_dampening_loss(tracked_layers(model, max_bits)[0], reduction)
