"""gaqat-wrap: train timm / Hugging Face vision models as 3/4-bit quantized models that generalize.

``GAQATCallback`` and ``GAQATTrainer`` (transformers.Trainer integration) are imported on first use, so
``import gaqat_wrap`` imports neither transformers nor any other optional dependency.

Examples:
    >>> import torch
    >>> from gaqat_wrap import quantize_model, quant_report
    >>> net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))
    >>> net = quantize_model(net, bits=4)
    >>> [layer.weight_bits for layer in quant_report(net)]  # first and last layers stay full precision
    [None, 4, None]
"""

from typing import Any

from gaqat_wrap.export import export_integer_model, export_onnx_integer, export_onnx_qdq, load_integer_model
from gaqat_wrap.optim import (
    FirstPassDone,
    GAQATConfig,
    GAQATOptimizer,
    OscillationConfig,
    OscillationFreezer,
    reestimate_batchnorm,
)
from gaqat_wrap.quant import (
    LayerReport,
    LSQQuantizer,
    QuantConfig,
    calibrate,
    format_report,
    param_groups,
    quant_report,
    quantize_model,
    set_saved_inputs,
    step_sizes,
    unquantize_model,
)
from gaqat_wrap.second_pass import protect_running_stats, second_pass

__version__ = "0.1.0"

_NEEDS_TRANSFORMERS = ("GAQATCallback", "GAQATTrainer")

__all__ = [
    "FirstPassDone",
    "GAQATCallback",
    "GAQATConfig",
    "GAQATOptimizer",
    "GAQATTrainer",
    "LSQQuantizer",
    "LayerReport",
    "OscillationConfig",
    "OscillationFreezer",
    "QuantConfig",
    "__version__",
    "calibrate",
    "export_integer_model",
    "export_onnx_integer",
    "export_onnx_qdq",
    "format_report",
    "load_integer_model",
    "param_groups",
    "protect_running_stats",
    "quant_report",
    "quantize_model",
    "reestimate_batchnorm",
    "second_pass",
    "set_saved_inputs",
    "step_sizes",
    "unquantize_model",
]


def __getattr__(name: str) -> Any:
    if name in _NEEDS_TRANSFORMERS:  # transformers is imported here, on first use, not by `import gaqat_wrap`
        from gaqat_wrap.integrations import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
