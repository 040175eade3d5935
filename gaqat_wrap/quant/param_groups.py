"""param_groups: optimizer groups that keep step sizes out of weight decay."""

from __future__ import annotations

from typing import Any

from torch import nn

from gaqat_wrap.quant.quantizer import step_sizes

STEP_SIZE_ROLES_KEY = "step_size_roles"
"""Key of the ``"scales"`` group that names each step size's role (``GAQATOptimizer`` reads it)."""


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
    naming it; the step-size group also lists the roles of its parameters
    (``"step_size_roles"``), so a :class:`gaqat_wrap.GAQATOptimizer` built on
    these groups knows its step sizes without ``model=``.

    With an Adam-family optimizer, every parameter moves by about ``lr`` per
    step: a step size smaller than that (8-bit weights, small layers) can double
    in one step. Give the step sizes a smaller ``scale_lr`` then (see
    ``docs/troubleshooting.md``, "Learning rate of the step sizes").

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
    roles = {param: role for role, param in step_sizes(model).items()}
    decay, no_decay, scales = [], [], []
    for _, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param in roles:
            scales.append(param)
        elif param.ndim >= 2:
            decay.append(param)
        else:
            no_decay.append(param)
    base = {} if lr is None else {"lr": lr}
    groups = [
        {"params": decay, "weight_decay": weight_decay, "group": "decay", **base},
        {"params": no_decay, "weight_decay": 0.0, "group": "no_decay", **base},
        {"params": scales, "weight_decay": 0.0, "group": "scales", STEP_SIZE_ROLES_KEY: [roles[p] for p in scales],
         **base, **({"lr": scale_lr} if scale_lr is not None else {})},
    ]
    return [g for g in groups if g["params"]]
