"""param_groups: optimizer groups that keep step sizes out of weight decay."""

from __future__ import annotations

from typing import Any

from torch import nn

from gaqat_wrap.quant.quantizer import is_scale_parameter


def param_groups(
    model: nn.Module,
    weight_decay: float = 0.0,
    scale_lr: float | None = None,
    lr: float | None = None,
) -> list[dict[str, Any]]:
    """Split trainable parameters into decay / no-decay / step-size groups.

    Weights with ``ndim >= 2`` are decayed; biases, norm parameters and other
    1-d tensors are not; LSQ step sizes are never decayed and get ``scale_lr``
    when given (else the optimizer's, or ``lr``). Frozen parameters
    (``requires_grad=False``) are left out. Each group has a ``"group"`` key
    naming it.

    Examples:
        >>> import torch
        >>> from gaqat_wrap import quantize_model
        >>> net = quantize_model(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)), bits=4)
        >>> groups = param_groups(net, weight_decay=0.05, scale_lr=1e-4)
        >>> [(g["group"], len(g["params"]), g["weight_decay"]) for g in groups]
        [('decay', 3, 0.05), ('no_decay', 3, 0.0), ('scales', 2, 0.0)]
        >>> opt = torch.optim.AdamW(groups, lr=1e-3)
    """
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    if scale_lr is not None and scale_lr < 0:
        raise ValueError(f"scale_lr must be >= 0, got {scale_lr}")
    decay, no_decay, scales = [], [], []
    for _, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if is_scale_parameter(param):
            scales.append(param)
        elif param.ndim >= 2:
            decay.append(param)
        else:
            no_decay.append(param)
    base = {} if lr is None else {"lr": lr}
    groups = [
        {"params": decay, "weight_decay": weight_decay, "group": "decay", **base},
        {"params": no_decay, "weight_decay": 0.0, "group": "no_decay", **base},
        {"params": scales, "weight_decay": 0.0, "group": "scales", **base,
         **({"lr": scale_lr} if scale_lr is not None else {})},
    ]
    return [g for g in groups if g["params"]]
