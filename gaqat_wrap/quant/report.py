"""quant_report: what quantize_model did to every candidate layer."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from gaqat_wrap.quant.layers import QuantizedLayer
from gaqat_wrap.quant.quantize import SKIP_REASON_ATTR, candidate_layers


@dataclass(frozen=True)
class LayerReport:
    """One Linear/Conv layer: quantized (with bit widths) or skipped (with the reason).

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

    def __str__(self) -> str:
        if not self.quantized:
            return f"{self.name:<40} {self.layer_type:<24} skipped: {self.reason}"
        sign = {None: "sign from data", True: "signed", False: "unsigned"}[self.input_signed]
        inputs = f"A{self.input_bits} {self.input_granularity} {sign}" if self.input_bits else "A: full precision"
        return f"{self.name:<40} {self.layer_type:<24} W{self.weight_bits} {self.weight_granularity}, {inputs}"


def quant_report(model: nn.Module) -> list[LayerReport]:
    """List every Linear/Conv layer of ``model`` as quantized or skipped.

    Examples:
        >>> from gaqat_wrap import quantize_model
        >>> net = quantize_model(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)), bits=4)
        >>> [(r.name, r.quantized) for r in quant_report(net)]
        [('0', False), ('1', True), ('2', False)]
    """
    rows = []
    for name, module in candidate_layers(model):
        original = getattr(module, "_gaqat_original_class", type(module))
        layer_type = original.__name__
        if isinstance(module, QuantizedLayer):
            iq = module.input_quantizer
            rows.append(LayerReport(
                name=name, layer_type=layer_type, quantized=True,
                weight_bits=module.weight_quantizer.bits,
                input_bits=iq.bits if iq is not None else None,
                weight_granularity=module._gaqat_adapter.granularity,
                input_granularity="per-tensor" if iq is not None else None,
                input_signed=(iq.is_signed if iq.is_initialized else None) if iq is not None else None,
            ))
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
    return "\n".join([*map(str, rows), f"{done} of {len(rows)} Linear/Conv layers quantized"])
