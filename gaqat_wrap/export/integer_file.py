"""Save and load integer-weight models: one safetensors file with a JSON config inside.

File layout (``FORMAT_NAME`` version ``FORMAT_VERSION``): for each quantized
layer ``<name>``

* ``<name>.weight_int``: the integer weight. ``packing="int8"``: ``int8``
  (``uint8`` if unsigned) in the weight's shape; ``packing="int4x2"`` (weights
  of 4 bits or fewer, by default): 1-d ``uint8``, two 4-bit values per byte,
  low nibble first (see :mod:`gaqat_wrap.export.packing`); 2- and 3-bit
  weights use the same 4-bit nibbles;
* ``<name>.weight_scale``: per-output-channel step sizes (float32);
* ``<name>.input_scale``: the input step size (0-d), absent for a
  full-precision input;

and every other entry of the model's ``state_dict`` (non-quantized layers,
norms, biases, BatchNorm statistics) as is, in floating point. The
safetensors metadata key ``"gaqat_export"`` holds the JSON config: format
name and version, library version, model class, and per layer its bits,
signedness, shape, packing and original class (read it with
:func:`read_export_config`).

Examples:
    >>> import tempfile, torch
    >>> from torch import nn
    >>> from gaqat_wrap import quantize_model
    >>> def build():
    ...     return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.Linear(8, 2))
    >>> net = quantize_model(build(), bits=4)
    >>> _ = net(torch.randn(16, 4))
    >>> path = tempfile.mkdtemp() + "/net.safetensors"
    >>> export_integer_model(net, path)["layers"]["2"]["packing"]
    'int4x2'
    >>> deployable = load_integer_model(path, build())
    >>> x = torch.randn(3, 4)
    >>> torch.equal(deployable(x), net.eval()(x))
    True
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from gaqat_wrap.export.integer_layer import IntegerLayer, IntegerLayerSpec, class_path, make_integer_layer
from gaqat_wrap.export.integer_model import exportable_layers, integer_tensors
from gaqat_wrap.export.packing import pack_int4, unpack_int4
from gaqat_wrap.quant.layers import QuantizedLayer, adapter_for

FORMAT_NAME = "gaqat-integer"
FORMAT_VERSION = 1
METADATA_KEY = "gaqat_export"
PACKINGS = ("int8", "int4x2")
_LAYER_TENSORS = ("weight_int", "weight_scale", "input_scale")


def packing_for(spec: IntegerLayerSpec, pack: bool = True) -> str:
    """Storage of a layer's weight integers: ``"int4x2"`` for 4 bits or fewer when ``pack``, else ``"int8"``.

    Examples:
        >>> spec = IntegerLayerSpec("fc", "torch.nn.modules.linear.Linear", 3, True, (4, 4), None, None)
        >>> packing_for(spec), packing_for(spec, pack=False)
        ('int4x2', 'int8')
    """
    return "int4x2" if pack and spec.weight_bits <= 4 else "int8"


def _belongs_to_layer(key: str, layer_names: set[str]) -> bool:
    """True for the float weight, quantizer state or integer tensors of an exported layer."""
    layer, _, leaf = key.rpartition(".")
    if leaf in ("weight", *_LAYER_TENSORS) and layer in layer_names:
        return True
    parts = key.rsplit(".", 2)
    return len(parts) == 3 and parts[1] in ("weight_quantizer", "input_quantizer") and parts[0] in layer_names


def export_integer_model(model: nn.Module, path: str | os.PathLike, *, pack: bool = True) -> dict[str, Any]:
    """Save a trained quantized model as integer weights + scales (safetensors); return the config.

    ``model`` is a model made by :func:`gaqat_wrap.quantize_model` (trained or
    calibrated) or an integer model from :func:`load_integer_model` /
    :func:`~gaqat_wrap.export.to_integer_model`. ``pack=False`` stores every
    weight in an 8-bit container (no 4-bit packing). See the module docstring
    for the layout.

    Examples:
        >>> import tempfile, torch
        >>> from gaqat_wrap import calibrate, quantize_model
        >>> net = quantize_model(torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 8), torch.nn.Linear(8, 2)))
        >>> _ = calibrate(net, [torch.randn(4, 8)])
        >>> path = tempfile.mkdtemp() + "/net.safetensors"
        >>> export_integer_model(net, path)["layers"]["1"]["packing"]
        'int4x2'
    """
    from gaqat_wrap import __version__

    layers = exportable_layers(model)
    names = {name for name, _ in layers}
    tensors: dict[str, Tensor] = {}
    entries: dict[str, dict[str, Any]] = {}
    for name, layer in layers:
        spec, layer_tensors = integer_tensors(name, layer)
        packing = packing_for(spec, pack)
        weight_int = layer_tensors["weight_int"]
        if packing == "int4x2":
            weight_int = pack_int4(weight_int, signed=spec.weight_signed)
        tensors[f"{name}.weight_int"] = weight_int
        tensors[f"{name}.weight_scale"] = layer_tensors["weight_scale"].float()
        if "input_scale" in layer_tensors:
            tensors[f"{name}.input_scale"] = layer_tensors["input_scale"].float()
        entries[name] = {**spec.to_json(), "packing": packing}
    for key, value in model.state_dict().items():
        if not _belongs_to_layer(key, names):
            tensors[key] = value
    config = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "gaqat_wrap_version": __version__,
              "model_class": class_path(type(model)), "layers": entries}
    # clone: safetensors refuses tensors that share storage (tied weights, views)
    save_file({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}, os.fspath(path),
              metadata={"format": "pt", METADATA_KEY: json.dumps(config)})
    return config


def read_export_config(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON config stored in an integer export, after checking its format and version.

    Examples:
        >>> read_export_config("missing.safetensors")
        Traceback (most recent call last):
        ...
        FileNotFoundError: no integer export at missing.safetensors
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"no integer export at {os.fspath(path)}")
    with safe_open(os.fspath(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if METADATA_KEY not in metadata:
        raise ValueError(f"{os.fspath(path)} is not a gaqat_wrap integer export (no {METADATA_KEY!r} metadata); "
                         "write it with gaqat_wrap.export.export_integer_model")
    config = json.loads(metadata[METADATA_KEY])
    if config.get("format") != FORMAT_NAME or config.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{os.fspath(path)} has format {config.get('format')!r} version {config.get('format_version')!r}; "
                         f"this gaqat_wrap reads {FORMAT_NAME!r} version {FORMAT_VERSION}")
    return config


def _skeleton_adapter(name: str, module: nn.Module, spec: IntegerLayerSpec):
    if isinstance(module, QuantizedLayer | IntegerLayer):
        original, adapter = module._gaqat_original_class, module._gaqat_adapter
    else:
        original, adapter = type(module), adapter_for(module)
    if class_path(original) != spec.original_class:
        raise TypeError(f"layer {name} is a {class_path(original)} in this model but a {spec.original_class} in the file; "
                        "pass the same architecture that was quantized")
    if isinstance(adapter, str):
        raise TypeError(f"layer {name} ({class_path(original)}) cannot become an integer layer: {adapter}")
    return adapter


def load_integer_model(path: str | os.PathLike, model: nn.Module) -> nn.Module:
    """Load an integer export into ``model`` and return it as an integer-weight inference model (eval mode).

    ``model`` is the original architecture, built the same way as before
    quantization (e.g. ``timm.create_model(name, pretrained=False, ...)``), or
    the same architecture after the same ``quantize_model`` call; it is
    modified in place. Its outputs equal the exported fake-quant model's in
    eval mode bit for bit (same device and dtype).

    Examples:
        >>> import tempfile, torch
        >>> from gaqat_wrap import calibrate, quantize_model
        >>> def build():
        ...     torch.manual_seed(0)
        ...     return torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))
        >>> net = quantize_model(build())
        >>> _ = calibrate(net, [torch.randn(4, 8)])
        >>> path = tempfile.mkdtemp() + "/net.safetensors"
        >>> _ = export_integer_model(net, path)
        >>> x = torch.randn(3, 8)
        >>> torch.equal(load_integer_model(path, build())(x), net.eval()(x))
        True
    """
    config = read_export_config(path)
    stored = load_file(os.fspath(path))
    state: dict[str, Tensor] = {}
    for name, entry in config["layers"].items():
        spec = IntegerLayerSpec.from_json(entry)
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"the file has a quantized layer {name!r} that this {type(model).__name__} lacks; "
                             "pass the same architecture that was exported") from None
        make_integer_layer(module, spec, _skeleton_adapter(name, module, spec))
        weight_int = stored.pop(f"{name}.weight_int")
        if entry["packing"] == "int4x2":
            numel = int(torch.Size(spec.weight_shape).numel())
            weight_int = unpack_int4(weight_int, numel, signed=spec.weight_signed).reshape(spec.weight_shape)
        elif entry["packing"] != "int8":
            raise ValueError(f"layer {name}: unknown packing {entry['packing']!r}; expected one of {PACKINGS}")
        state[f"{name}.weight_int"] = weight_int
    state.update(stored)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{os.fspath(path)} does not match this {type(model).__name__}: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}; pass the same architecture (and config) that was exported")
    return model.eval()
