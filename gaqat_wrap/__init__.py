"""gaqat-wrap: train timm / Hugging Face vision models as 3/4-bit quantized models that generalize.

Examples:
    >>> import torch
    >>> from gaqat_wrap import quantize_model
    >>> net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))
    >>> net = quantize_model(net, bits=4)
"""

from gaqat_wrap.export import export_integer_model, export_onnx_integer, export_onnx_qdq, load_integer_model
from gaqat_wrap.optim import GAQATConfig, GAQATOptimizer
from gaqat_wrap.quant import (
    LayerReport,
    LSQQuantizer,
    QuantConfig,
    calibrate,
    format_report,
    is_scale_parameter,
    param_groups,
    quant_report,
    quantize_model,
)
from gaqat_wrap.second_pass import protect_running_stats, second_pass

__version__ = "0.1.0"

__all__ = [
    "GAQATConfig",
    "GAQATOptimizer",
    "LSQQuantizer",
    "LayerReport",
    "QuantConfig",
    "__version__",
    "calibrate",
    "export_integer_model",
    "export_onnx_integer",
    "export_onnx_qdq",
    "format_report",
    "is_scale_parameter",
    "load_integer_model",
    "param_groups",
    "protect_running_stats",
    "quant_report",
    "quantize_model",
    "second_pass",
]
