"""quantize_model: swap a model's Linear/Conv layers for LSQ fake-quantized ones."""

from __future__ import annotations

import fnmatch
import logging
from typing import Any

from torch import nn

from gaqat_wrap.quant.config import QuantConfig
from gaqat_wrap.quant.layers import QuantizedLayer, adapter_for, quantize_layer
from gaqat_wrap.second_pass import protect_running_stats

logger = logging.getLogger(__name__)

SKIP_REASON_ATTR = "_gaqat_skip_reason"
CANDIDATE_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def candidate_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every Linear/Conv layer (subclasses included) in registration order.

    Examples:
        >>> [name for name, _ in candidate_layers(nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1)))]
        ['0', '2']
    """
    return [(name, m) for name, m in model.named_modules() if isinstance(m, CANDIDATE_TYPES)]


def _classifier_names(model: nn.Module, names: list[str]) -> set[str]:
    """Names of the classifier layers: timm's get_classifier(), else the last layer."""
    get_classifier = getattr(model, "get_classifier", None)
    if callable(get_classifier):
        try:
            head = get_classifier()
        except Exception:
            head = None
        if isinstance(head, nn.Module):
            ids = {id(m) for m in head.modules()}
            found = {name for name, m in model.named_modules() if id(m) in ids and isinstance(m, CANDIDATE_TYPES)}
            if found:
                return found
    return {names[-1]} if names else set()


def _matches(name: str, patterns: tuple[str, ...] | list[str]) -> str | None:
    return next((p for p in patterns if fnmatch.fnmatchcase(name, p)), None)


def _check_patterns(config: QuantConfig, names: list[str]) -> None:
    for what, patterns in (("include", config.include), ("exclude", config.exclude),
                           ("overrides", list(config.overrides))):
        for pattern in patterns:
            if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
                examples = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
                raise ValueError(f"{what} pattern {pattern!r} matches no Linear/Conv layer; layer names look like: {examples}")


def quantize_model(
    model: nn.Module,
    bits: int | None = None,
    act_bits: int | None = None,
    config: QuantConfig | None = None,
    **options: Any,
) -> nn.Module:
    """Make ``model``'s Linear/Conv layers LSQ fake-quantized, in place.

    ``bits``/``act_bits`` and ``options`` (any :class:`QuantConfig` field) build
    the config; pass ``config`` instead to reuse one. Layers keep their class
    (as a base), Parameters and state_dict keys; step sizes are added as
    ``<layer>.weight_quantizer.scale`` / ``<layer>.input_quantizer.scale``.
    Weight step sizes are initialised here, input step sizes by
    :func:`gaqat_wrap.calibrate` or at the first forward. BatchNorm layers are
    protected against the SAM second pass. See :func:`quant_report` for what
    was quantized and why anything was skipped.

    Examples:
        >>> import torch
        >>> net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))
        >>> net = quantize_model(net, bits=4)
        >>> [type(m).__name__ for m in net]
        ['Linear', 'ReLU', 'QuantizedLinear', 'ReLU', 'Linear']
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"quantize_model expects a torch.nn.Module, got {type(model).__name__}")
    if config is not None and (bits is not None or act_bits is not None or options):
        raise TypeError("pass either config=QuantConfig(...) or bits/act_bits/options, not both")
    if config is None:
        config = QuantConfig(bits=4 if bits is None else bits, act_bits=act_bits, **options)
    elif not isinstance(config, QuantConfig):
        raise TypeError(f"config must be a QuantConfig, got {type(config).__name__}")
    if any(isinstance(m, QuantizedLayer) for m in model.modules()):
        raise ValueError("model is already quantized (it contains quantized layers); quantize the original model once")

    layers = candidate_layers(model)
    names = [name for name, _ in layers]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no Linear or Conv layer to quantize")
    _check_patterns(config, names)
    kept: dict[str, str] = {}
    if config.keep_first_last:
        kept = {head: "classifier kept at full precision (keep_first_last=True)" for head in _classifier_names(model, names)}
        kept[names[0]] = "first layer kept at full precision (keep_first_last=True)"

    quantized = 0
    for name, module in layers:
        reason = _skip_reason(config, name, module, kept)
        if reason is None:
            weight_bits, input_bits = config.bits, config.act_bits
            pattern = _matches(name, list(config.overrides))
            if pattern is not None:
                weight_bits, input_bits = QuantConfig.bits_for_override(pattern, config.overrides[pattern])
            quantize_layer(module, weight_bits=weight_bits, input_bits=input_bits if config.quantize_inputs else None,
                           role=name, input_signed=config.act_signed, weight_init=config.weight_init,
                           input_init=config.act_init)
            quantized += 1
        else:
            setattr(module, SKIP_REASON_ATTR, reason)
    if quantized == 0:
        raise ValueError(f"no layer of {type(model).__name__} was quantized: every candidate was skipped "
                         f"({len(layers)} candidates; see quant_report(model) or relax keep_first_last/include/exclude)")
    protect_running_stats(model)
    model._gaqat_quant_config = config
    logger.info("quantized %d of %d Linear/Conv layers of %s", quantized, len(layers), type(model).__name__)
    return model


def _skip_reason(config: QuantConfig, name: str, module: nn.Module, kept: dict[str, str]) -> str | None:
    if name in kept:
        return kept[name]
    if config.include and _matches(name, config.include) is None:
        return "not matched by include patterns"
    pattern = _matches(name, config.exclude)
    if pattern is not None:
        return f"excluded by pattern {pattern!r}"
    adapter = adapter_for(module)
    if isinstance(adapter, str):
        return adapter
    return None
