"""unquantize_model: give a quantized model its plain layers back, like peft's ``unload`` or torchao's ``to_linear``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gaqat_wrap.quant.attention import QuantizedAttention, projection_weight_names, restore_transformer_fast_paths
from gaqat_wrap.quant.layers import QuantizedLayer
from gaqat_wrap.quant.quantize import CONFIG_ATTR, NOTE_ATTR, SKIP_REASON_ATTR
from gaqat_wrap.quant.quantizer import LSQQuantizer

_LAYER_ATTRS = ("_gaqat_adapter", "_gaqat_original_class", NOTE_ATTR)


def _quantized_weights(module: nn.Module) -> list[tuple[str, LSQQuantizer]]:
    """``(weight Parameter name, its quantizer)`` pairs of a quantized layer or attention module."""
    if isinstance(module, QuantizedAttention):
        return [(name, getattr(module, f"{name}_quantizer")) for name in projection_weight_names(module)]
    return [("weight", module.weight_quantizer)]


def _cannot_bake(module: nn.Module) -> bool:
    """True if the layer computes with a transform of its stored weight (timm StdConv2d, custom adapters)."""
    return isinstance(module, QuantizedLayer) and module.effective_weight() is not module.weight


def _restore_plain(module: nn.Module) -> None:
    for name, _ in _quantized_weights(module):
        module._modules.pop(f"{name}_quantizer", None)
    for name in ("weight_quantizer", "input_quantizer"):
        module._modules.pop(name, None)
        module.__dict__.pop(name, None)  # input_quantizer=None may be a plain attribute
    module.__class__ = module._gaqat_original_class
    for name in _LAYER_ATTRS:
        module.__dict__.pop(name, None)


def unquantize_model(model: nn.Module, *, bake_weights: bool = False) -> nn.Module:
    """Undo :func:`gaqat_wrap.quantize_model` in place: every layer gets its original class back.

    The layers keep their own ``weight``/``bias`` Parameters (the same
    objects), the quantizer submodules and their step sizes are removed, and
    the state_dict has exactly the keys it had before ``quantize_model``.
    ``quantize_model`` can be called on the result again.

    ``bake_weights=False`` (default) leaves the full-precision weights as
    trained. ``bake_weights=True`` replaces each quantized weight by its
    fake-quantized value ``s * round(clamp(w / s))``, so the plain model computes
    with the quantized weights (its inputs are no longer quantized). Layers
    that transform their weight in ``forward`` (timm ``StdConv2d``,
    ``ScaledStdConv2d``, custom adapters) cannot be baked: that raises before
    anything changes.

    ``nn.TransformerEncoderLayer`` / ``nn.TransformerEncoder`` get their fused
    fast paths back. BatchNorm layers keep the forward hooks that protect their running
    statistics from the SAM second pass: outside
    :func:`gaqat_wrap.second_pass` they do nothing. An optimizer built for the
    quantized model still holds the removed step sizes: build a new one.

    Raises ``ValueError`` for a model without quantized layers (nothing to
    undo) and ``TypeError`` for integer layers made by ``gaqat_wrap.export``
    (their float weights are gone).

    Examples:
        >>> from gaqat_wrap import quantize_model
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.Linear(8, 2))
        >>> keys = list(net.state_dict())
        >>> weight = net[2].weight
        >>> net = unquantize_model(quantize_model(net, bits=4))
        >>> type(net[2]) is nn.Linear, net[2].weight is weight, list(net.state_dict()) == keys
        (True, True, True)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"unquantize_model expects a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(bake_weights, bool):
        raise TypeError(f"bake_weights must be True or False, got {bake_weights!r}")
    modules = list(model.named_modules())
    quantized = [(name, m) for name, m in modules if isinstance(m, QuantizedLayer | QuantizedAttention)]
    foreign = [f"{name or '<root>'} ({type(m).__name__})" for name, m in modules
               if "_gaqat_original_class" in m.__dict__ and not isinstance(m, QuantizedLayer | QuantizedAttention)]
    if foreign:
        raise TypeError(f"cannot unquantize layers converted after quantization ({', '.join(foreign[:3])}): integer "
                        "layers from gaqat_wrap.export no longer hold float weights; unquantize the fake-quant model")
    if not quantized:
        raise ValueError(f"{type(model).__name__} has no layer quantized by gaqat_wrap.quantize_model: nothing to "
                         "unquantize")
    baked: list[tuple[Tensor, Tensor]] = []
    if bake_weights:
        fixed = [name for name, m in quantized if _cannot_bake(m)]
        if fixed:
            raise ValueError(f"cannot bake quantized weights into {', '.join(fixed[:3])}"
                             f"{' and more' if len(fixed) > 3 else ''}: these layers transform their weight in "
                             "forward(), so a baked weight would be transformed again; use bake_weights=False, or "
                             "exclude them from quantize_model")
        with torch.no_grad():
            baked = [(getattr(m, name), quantizer(getattr(m, name))) for _, m in quantized
                     for name, quantizer in _quantized_weights(m)]
    with torch.no_grad():
        for weight, value in baked:
            weight.copy_(value)
    for _, module in quantized:
        _restore_plain(module)
    for _, module in modules:
        module.__dict__.pop(SKIP_REASON_ATTR, None)
    restore_transformer_fast_paths(model)
    model.__dict__.pop(CONFIG_ATTR, None)
    return model
