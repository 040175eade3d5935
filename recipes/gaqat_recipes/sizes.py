"""File sizes of a quantized model: FP32 original vs integer exports.

Examples:
    >>> import tempfile, torch
    >>> from torch import nn
    >>> from gaqat_wrap import quantize_model
    >>> net = quantize_model(nn.Sequential(nn.Linear(8, 256), nn.Linear(256, 256), nn.Linear(256, 2)), bits=4)
    >>> _ = net(torch.randn(4, 8))
    >>> sizes = export_sizes(net, tempfile.mkdtemp())
    >>> sizes.packed_bytes < sizes.int8_bytes < sizes.fp32_bytes
    True
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from gaqat_wrap.export import export_integer_model, exportable_layers
from gaqat_wrap.quant import QuantizedLayer


@dataclass(frozen=True)
class ExportSizes:
    """Bytes on disk of the same model saved three ways (safetensors files).

    ``fp32_bytes``: the original state_dict (no quantizer state) in float32;
    ``int8_bytes``: integer export with every weight in an 8-bit container;
    ``packed_bytes``: integer export with weights of 4 bits or fewer packed two per byte.

    Examples:
        >>> sizes = ExportSizes(fp32_bytes=800, int8_bytes=200, packed_bytes=100)
        >>> sizes.fp32_bytes // sizes.packed_bytes
        8
    """

    fp32_bytes: int
    int8_bytes: int
    packed_bytes: int

    def ratios(self) -> dict[str, float]:
        """How many times smaller than FP32 each export is.

        Examples:
            >>> ExportSizes(800, 200, 100).ratios()
            {'int8': 4.0, 'packed': 8.0}
        """
        return {"int8": self.fp32_bytes / self.int8_bytes, "packed": self.fp32_bytes / self.packed_bytes}


def fp32_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state_dict without quantizer state, floating tensors in float32 (what the FP model saves)."""
    return {key: (value.float() if value.is_floating_point() else value).detach().cpu().contiguous().clone()
            for key, value in model.state_dict().items()
            if ".weight_quantizer." not in f".{key}" and ".input_quantizer." not in f".{key}"}


def export_sizes(model: nn.Module, directory: str | os.PathLike) -> ExportSizes:
    """Write ``fp32.safetensors``, ``int8.safetensors`` and ``packed.safetensors`` to ``directory``; return their sizes.

    ``model`` is a trained or calibrated model made by :func:`gaqat_wrap.quantize_model`
    (it still holds the float weights the FP32 file needs).

    Examples:
        >>> import tempfile
        >>> from gaqat_wrap import quantize_model
        >>> net = quantize_model(nn.Sequential(nn.Linear(8, 64), nn.Linear(64, 64), nn.Linear(64, 2)), bits=4)
        >>> _ = net(torch.randn(4, 8))
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     sizes = export_sizes(net, folder)
        ...     files = sorted(p.name for p in Path(folder).iterdir())
        >>> files
        ['fp32.safetensors', 'int8.safetensors', 'packed.safetensors']
        >>> sizes.packed_bytes < sizes.int8_bytes < sizes.fp32_bytes
        True
    """
    layers = exportable_layers(model)
    if not all(isinstance(m, QuantizedLayer) for _, m in layers):
        raise ValueError("export_sizes needs the fake-quant model (with its float weights), not an integer model: "
                         "pass the model returned by quantize_model")
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(fp32_state_dict(model), folder / "fp32.safetensors")
    export_integer_model(model, folder / "int8.safetensors", pack=False)
    export_integer_model(model, folder / "packed.safetensors", pack=True)
    return ExportSizes(*((folder / f"{name}.safetensors").stat().st_size for name in ("fp32", "int8", "packed")))
