"""From a trained fake-quant model to integer weights: checks, extraction, conversion.

:func:`exportable_layers` finds the layers to export and rejects bad input
with a message saying what to do; :func:`integer_tensors` computes one
layer's integers exactly as the fake-quant forward rounds them;
:func:`to_integer_model` builds the in-memory integer-weight inference model.

Examples:
    >>> import torch
    >>> from torch import nn
    >>> from gaqat_wrap import calibrate, quantize_model
    >>> net = quantize_model(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.Linear(8, 2)), bits=4)
    >>> _ = calibrate(net, [torch.randn(16, 4)])
    >>> deployable = to_integer_model(net)
    >>> x = torch.randn(3, 4)
    >>> torch.equal(deployable(x), net.eval()(x))
    True
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from gaqat_wrap.export.integer_layer import IntegerLayer, IntegerLayerSpec, class_path, make_integer_layer
from gaqat_wrap.quant.attention import QuantizedAttention
from gaqat_wrap.quant.layers import QuantizedLayer
from gaqat_wrap.quant.lsq import SCALE_EPS
from gaqat_wrap.quant.quantizer import LSQQuantizer

_FOREIGN_PREFIXES = ("torch.ao.nn.qat", "torch.ao.nn.quantized", "torch.nn.qat", "torch.nn.quantized", "brevitas.",
                     "torchao.quantization")


def _foreign_reason(name: str, module: nn.Module, modules: dict[str, nn.Module]) -> str | None:
    """Why ``module`` is quantization state export cannot handle, or None."""
    if isinstance(module, LSQQuantizer):
        parent = modules.get(name.rpartition(".")[0])
        if not isinstance(parent, QuantizedLayer):
            return f"{name or '<root>'} (an LSQQuantizer outside a layer made by quantize_model)"
        return None
    cls = type(module)
    if isinstance(module, torch.ao.quantization.FakeQuantizeBase) or cls.__module__.startswith(_FOREIGN_PREFIXES):
        return f"{name or '<root>'} ({class_path(cls)})"
    return None


def _shown(names: list[str]) -> str:
    """The first five names, and how many more."""
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _refuse_quantized_attention(modules: dict[str, nn.Module]) -> None:
    """Quantized ``nn.MultiheadAttention`` has no integer export: say which layers and how to quantize without them."""
    attention = [name for name, m in modules.items() if isinstance(m, QuantizedAttention)]
    if attention:
        last = {name.rpartition(".")[2] for name in attention}
        exclude = [f"*.{last.pop()}"] if len(attention) > 1 and len(last) == 1 and all("." in n for n in attention) \
            else attention
        raise TypeError(
            f"cannot export quantized nn.MultiheadAttention layers ({_shown(attention)}): export handles quantized "
            "Linear/Conv layers, and the attention's in-projection runs inside F.multi_head_attention_forward, which "
            f"has no integer export. Quantize the model with quantize_model(model, bits=..., exclude={exclude!r}) "
            "to keep these attention layers and their out_proj in full precision, train or calibrate it, and export that")


def exportable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The quantized (or already integer) layers of ``model``, after checking it can be exported.

    Raises ``TypeError`` naming unsupported quantized layer types (another
    library's fake quantization, a stray LSQQuantizer, a non per-channel
    weight quantizer, a quantized ``nn.MultiheadAttention``, with the
    ``exclude`` that avoids it) and ``ValueError`` for a model that was never quantized
    or whose step sizes were never initialised.

    Examples:
        >>> exportable_layers(nn.Sequential(nn.Linear(2, 2)))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: Sequential has no quantized layer to export: call gaqat_wrap.quantize_model(model, bits=...) ...
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(model).__name__}")
    modules = dict(model.named_modules())
    _refuse_quantized_attention(modules)
    foreign = [r for name, m in modules.items() if (r := _foreign_reason(name, m, modules)) is not None]
    layers = [(name, m) for name, m in modules.items() if isinstance(m, QuantizedLayer | IntegerLayer)]
    for name, m in layers:
        if isinstance(m, QuantizedLayer):
            granularity = m._gaqat_adapter.granularity
            if granularity != "per-output-channel" or m.weight_quantizer.scale.dim() != 1:
                foreign.append(f"{name} ({class_path(m._gaqat_original_class)} with {granularity} weight scales)")
    if foreign:
        raise TypeError(f"cannot export unsupported quantized layer types: {_shown(foreign)}. Export handles Linear/Conv layers "
                        "quantized by gaqat_wrap.quantize_model (per-output-channel weights, per-tensor inputs); "
                        "build the model without other quantization and call quantize_model instead")
    if not layers:
        raise ValueError(f"{type(model).__name__} has no quantized layer to export: call "
                         "gaqat_wrap.quantize_model(model, bits=...) and train or calibrate it first")
    uncalibrated = [name for name, m in layers if isinstance(m, QuantizedLayer) and (
        not m.weight_quantizer.is_initialized or (m.input_quantizer is not None and not m.input_quantizer.is_initialized))]
    if uncalibrated:
        raise ValueError(f"step sizes of {len(uncalibrated)} layers were never initialised ({_shown(uncalibrated)}): run "
                         "gaqat_wrap.calibrate(model, batches) or a forward pass on real data before exporting")
    return layers


@torch.no_grad()
def integer_tensors(name: str, layer: nn.Module) -> tuple[IntegerLayerSpec, dict[str, Tensor]]:
    """The spec and tensors (``weight_int``, ``weight_scale``, ``input_scale``) of one layer.

    For a fake-quant layer, ``q = clamp(round(w_eff / s), Qn, Qp)`` with the same
    operations as the LSQ forward, so ``q * s`` equals its fake-quant weight
    bit for bit. An integer layer returns its own buffers.
    """
    if isinstance(layer, IntegerLayer):
        tensors = {"weight_int": layer.weight_int, "weight_scale": layer.weight_scale}
        if layer.input_scale is not None:
            tensors["input_scale"] = layer.input_scale
        return layer.integer_spec, {k: v.detach() for k, v in tensors.items()}
    if not isinstance(layer, QuantizedLayer):
        raise TypeError(f"{name} is a {type(layer).__name__}, not a layer made by quantize_model")
    weight = layer.effective_weight().detach()
    wq, iq = layer.weight_quantizer, layer.input_quantizer
    scale = wq.scale.detach().clamp(min=SCALE_EPS).to(weight.dtype)
    qn, qp = wq.qrange
    q = torch.round(weight / scale.view((-1,) + (1,) * (weight.dim() - 1))).clamp_(qn, qp)
    spec = IntegerLayerSpec(
        name=name,
        original_class=class_path(layer._gaqat_original_class),
        weight_bits=wq.bits,
        weight_signed=wq.is_signed,
        weight_shape=tuple(weight.shape),
        input_bits=iq.bits if iq is not None else None,
        input_signed=iq.is_signed if iq is not None else None,
    )
    tensors = {"weight_int": q.to(spec.weight_dtype), "weight_scale": scale}
    if iq is not None:
        tensors["input_scale"] = iq.scale.detach().clamp(min=SCALE_EPS).reshape(())  # one number, 0-d in the file
    return spec, tensors


def to_integer_model(model: nn.Module, inplace: bool = False) -> nn.Module:
    """The integer-weight inference model of a trained fake-quant ``model`` (in eval mode).

    Every quantized layer becomes an integer layer (see
    :mod:`gaqat_wrap.export.integer_layer`); everything else is unchanged. Its
    outputs equal the fake-quant model's in eval mode (``torch.equal``). The
    model is copied unless ``inplace=True``. Inference only.

    Examples:
        >>> from gaqat_wrap import quantize_model
        >>> net = quantize_model(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)), bits=4, act_bits=8)
        >>> _ = net(torch.randn(8, 4))   # initialises the input step sizes
        >>> type(to_integer_model(net)[1]).__name__
        'IntegerLinear'
    """
    layers = exportable_layers(model)
    extracted = {name: integer_tensors(name, m) for name, m in layers if isinstance(m, QuantizedLayer)}
    target = model if inplace else copy.deepcopy(model)
    for name, (spec, tensors) in extracted.items():
        module = target.get_submodule(name)
        make_integer_layer(module, spec, module._gaqat_adapter, **{k: v.clone() for k, v in tensors.items()})
    return target.eval()
