"""LSQ fake quantization of timm / Hugging Face vision models."""

from gaqat_wrap.quant.attention import QuantizedAttention
from gaqat_wrap.quant.calibrate import calibrate, input_quantizers, run_model_on_batch
from gaqat_wrap.quant.config import QuantConfig
from gaqat_wrap.quant.layers import LayerAdapter, QuantizedLayer, register_adapter
from gaqat_wrap.quant.lsq import lsq_fake_quant, quant_range
from gaqat_wrap.quant.param_groups import param_groups
from gaqat_wrap.quant.quantize import quantize_model
from gaqat_wrap.quant.quantizer import LSQQuantizer, step_sizes
from gaqat_wrap.quant.report import LayerReport, format_report, quant_report
from gaqat_wrap.quant.unquantize import unquantize_model

__all__ = [
    "LSQQuantizer",
    "LayerAdapter",
    "LayerReport",
    "QuantConfig",
    "QuantizedAttention",
    "QuantizedLayer",
    "calibrate",
    "format_report",
    "input_quantizers",
    "lsq_fake_quant",
    "param_groups",
    "quant_range",
    "quant_report",
    "quantize_model",
    "register_adapter",
    "run_model_on_batch",
    "step_sizes",
    "unquantize_model",
]
