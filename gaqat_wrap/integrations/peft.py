"""peft LoRA on a quantized base model.

Apply :func:`gaqat_wrap.quantize_model` first, then ``peft.get_peft_model``:
LoRA wraps the quantized Linear layers (they are still ``nn.Linear``), the base
weights are frozen by peft, the adapters train in full precision on the
layer's *unquantized* input, and the quantizer step sizes train only if you
ask for it with :func:`train_scales`. GAQATOptimizer computes conflict
statistics for every step size that receives a gradient.

``merge_and_unload()`` adds ``B @ A * scaling`` into the base layer's FP
weight. The layer stays quantized, so the merged delta is *re-quantized* with
the existing per-channel step sizes: the merged model is a W-bit model again,
but its outputs differ from the unmerged one (whose LoRA branch ran in FP on
the unquantized input). Re-calibrate and fine-tune briefly after merging, or
deploy unmerged.

Examples:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    >>> _ = net.requires_grad_(False)
    >>> from gaqat_wrap import quantize_model
    >>> train_scales(quantize_model(net, bits=4))
    2
"""

from __future__ import annotations

from torch import nn

from gaqat_wrap.quant.quantizer import step_sizes


def train_scales(model: nn.Module, trainable: bool = True) -> int:
    """Set ``requires_grad`` of every LSQ step size in ``model``; returns how many.

    peft freezes every non-adapter parameter, step sizes included; call this
    after ``get_peft_model`` to let the step sizes train alongside the adapters.

    Examples:
        >>> train_scales(nn.Linear(2, 2))
        0
    """
    scales = step_sizes(model).values()
    for param in scales:
        param.requires_grad_(trainable)
    return len(scales)
