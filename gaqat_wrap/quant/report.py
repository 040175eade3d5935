"""quant_report: what quantize_model did to every candidate layer."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from gaqat_wrap.quant.attention import QuantizedAttention, projection_weight_names
from gaqat_wrap.quant.layers import QuantizedLayer
from gaqat_wrap.quant.quantize import NOTE_ATTR, SKIP_REASON_ATTR, candidate_layers


@dataclass(frozen=True)
class LayerReport:
    """One Linear/Conv/MultiheadAttention layer: quantized (with bit widths) or skipped (with the reason).

    ``note`` says more about a quantized layer: which weights of an attention
    layer are quantized, or that an override quantized a layer
    ``keep_first_last`` would have kept.

    Examples:
        >>> str(LayerReport("head", "Linear", quantized=False, reason="classifier kept")).split()[-2:]
        ['classifier', 'kept']
    """

    name: str
    layer_type: str
    quantized: bool
    weight_bits: int | None = None
    input_bits: int | None = None
    weight_granularity: str | None = None
    input_granularity: str | None = None
    input_signed: bool | None = None
    reason: str | None = None
    note: str | None = None

    def __str__(self) -> str:
        if not self.quantized:
            return f"{self.name:<40} {self.layer_type:<24} skipped: {self.reason}"
        sign = {None: "sign from data", True: "signed", False: "unsigned"}[self.input_signed]
        inputs = f"A{self.input_bits} {self.input_granularity} {sign}" if self.input_bits else "A: full precision"
        note = f" ({self.note})" if self.note else ""
        return f"{self.name:<40} {self.layer_type:<24} W{self.weight_bits} {self.weight_granularity}, {inputs}{note}"


def _quantized_row(name: str, layer_type: str, module: nn.Module) -> LayerReport:
    iq = module.input_quantizer
    note = getattr(module, NOTE_ATTR, None)
    if isinstance(module, QuantizedAttention):
        weights = " and ".join(projection_weight_names(module))
        quantizer = getattr(module, f"{projection_weight_names(module)[0]}_quantizer")
        granularity = "per-output-channel"
        inputs = "; query, key and value share the input step size" if iq is not None else ""
        note = "; ".join(filter(None, [f"{weights} quantized{inputs}; out_proj is its own row", note]))
    else:
        quantizer, granularity = module.weight_quantizer, module._gaqat_adapter.granularity
    return LayerReport(
        name=name, layer_type=layer_type, quantized=True,
        weight_bits=quantizer.bits,
        input_bits=iq.bits if iq is not None else None,
        weight_granularity=granularity,
        input_granularity="per-tensor" if iq is not None else None,
        input_signed=(iq.is_signed if iq.is_initialized else None) if iq is not None else None,
        note=note,
    )


def quant_report(model: nn.Module) -> list[LayerReport]:
    """List every Linear/Conv and MultiheadAttention layer of ``model`` as quantized or skipped.

    Examples:
        >>> from gaqat_wrap import quantize_model
        >>> net = quantize_model(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)), bits=4)
        >>> [(r.name, r.quantized) for r in quant_report(net)]
        [('0', False), ('1', True), ('2', False)]
    """
    rows = []
    for name, module in candidate_layers(model):
        layer_type = getattr(module, "_gaqat_original_class", type(module)).__name__
        if isinstance(module, QuantizedLayer | QuantizedAttention):
            rows.append(_quantized_row(name, layer_type, module))
        else:
            reason = getattr(module, SKIP_REASON_ATTR, "not seen by quantize_model (added after quantization?)")
            rows.append(LayerReport(name=name, layer_type=layer_type, quantized=False, reason=reason))
    return rows


def format_report(model: nn.Module) -> str:
    """:func:`quant_report` as a printable table with a summary line.

    Examples:
        >>> from gaqat_wrap import quantize_model
        >>> net = quantize_model(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)), bits=4)
        >>> format_report(net).splitlines()[-1]
        '1 of 3 Linear/Conv layers quantized'
    """
    rows = quant_report(model)
    done = sum(r.quantized for r in rows)
    attention = any(isinstance(m, nn.MultiheadAttention) for _, m in candidate_layers(model))
    kinds = "Linear/Conv" + ("/MultiheadAttention" if attention else "")
    return "\n".join([*map(str, rows), f"{done} of {len(rows)} {kinds} layers quantized"])
