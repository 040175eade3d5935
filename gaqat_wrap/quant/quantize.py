"""quantize_model: swap a model's Linear/Conv (and MultiheadAttention) layers for LSQ fake-quantized ones.

The decision for every candidate layer is planned first and applied
afterwards, so a bad option raises before the model changes.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from dataclasses import dataclass
from typing import Any

from torch import nn

from gaqat_wrap.quant.attention import (
    QuantizedAttention,
    attention_skip_reason,
    keep_transformer_layers_unfused,
    quantize_attention,
)
from gaqat_wrap.quant.config import QuantConfig
from gaqat_wrap.quant.layers import QuantizedLayer, adapter_for, quantize_layer
from gaqat_wrap.second_pass import protect_running_stats

logger = logging.getLogger(__name__)

SKIP_REASON_ATTR = "_gaqat_skip_reason"
NOTE_ATTR = "_gaqat_quant_note"
CONFIG_ATTR = "_gaqat_quant_config"
LINEAR_CONV_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
CANDIDATE_TYPES = (*LINEAR_CONV_TYPES, nn.MultiheadAttention)
HEAD_NAME = re.compile(r"classifier|head", re.IGNORECASE)
"""A direct child of the model whose name matches this holds a classifier head (``classifier``, ``cls_classifier``,
``distillation_classifier``, ``heads``, ``head_dist``): its last Linear/Conv layer is kept by ``keep_first_last``."""

FIRST_LAYER_REASON = "first layer kept at full precision (keep_first_last=True)"
CLASSIFIER_REASON = "classifier kept at full precision (keep_first_last=True)"


def candidate_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every Linear/Conv layer (subclasses included) and ``nn.MultiheadAttention``, in registration order.

    Examples:
        >>> [name for name, _ in candidate_layers(nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1)))]
        ['0', '2']
        >>> [name for name, _ in candidate_layers(nn.Sequential(nn.MultiheadAttention(4, 2)))]
        ['0', '0.out_proj']
    """
    return [(name, m) for name, m in model.named_modules() if isinstance(m, CANDIDATE_TYPES)]


def _last_layer_in(module: nn.Module) -> nn.Module | None:
    layers = [m for m in module.modules() if isinstance(m, LINEAR_CONV_TYPES)]
    return layers[-1] if layers else None


def classifier_layers(model: nn.Module) -> list[str]:
    """Names of the layers that produce the model's logits, in registration order.

    Every head counts, so two-head models (DeiT distilled, LeViT: a class and a
    distillation head) give two names. The heads are the modules timm's
    ``get_classifier()`` returns (one or a tuple); otherwise the direct
    children whose name contains ``classifier`` or ``head`` (Hugging Face
    ``classifier`` / ``cls_classifier`` / ``distillation_classifier``,
    torchvision ``heads``), plus the last Linear/Conv layer. Within each head,
    its last Linear/Conv layer is the classifier.

    Examples:
        >>> net = nn.Sequential()
        >>> net.add_module("body", nn.Linear(4, 8))
        >>> net.add_module("cls_head", nn.Linear(8, 3))
        >>> net.add_module("dist_head", nn.Linear(8, 3))
        >>> classifier_layers(net)
        ['cls_head', 'dist_head']
    """
    heads: list[nn.Module] = []
    get_classifier = getattr(model, "get_classifier", None)
    if callable(get_classifier):
        try:
            declared = get_classifier()
        except Exception:  # a model whose get_classifier needs arguments or state: fall back to names
            declared = None
        declared = declared if isinstance(declared, tuple | list) else [declared]
        heads = [head for head in declared if isinstance(head, nn.Module)]
    layers = [found for head in heads if (found := _last_layer_in(head)) is not None]
    if not layers:
        layers = [found for name, child in model.named_children()
                  if HEAD_NAME.search(name) and (found := _last_layer_in(child)) is not None]
        last = _last_layer_in(model)
        layers += [last] if last is not None else []
    ids = {id(m) for m in layers}
    return [name for name, m in model.named_modules() if id(m) in ids]


def _matches(name: str, patterns: tuple[str, ...] | list[str]) -> str | None:
    return next((p for p in patterns if fnmatch.fnmatchcase(name, p)), None)


def _check_patterns(config: QuantConfig, names: list[str]) -> None:
    for what, patterns in (("include", config.include), ("exclude", config.exclude),
                           ("overrides", list(config.overrides))):
        for pattern in patterns:
            if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
                examples = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
                raise ValueError(f"{what} pattern {pattern!r} matches no Linear/Conv layer; layer names look like: {examples}")


@dataclass
class _Plan:
    """What quantize_model will do to one layer."""

    skip_reason: str | None = None
    weight_bits: int = 0
    input_bits: int | None = None
    override: str | None = None
    note: str | None = None


def _plan_layer(config: QuantConfig, name: str, module: nn.Module, kept: dict[str, str]) -> _Plan:
    override = _matches(name, list(config.overrides))
    if name in kept and override is None:
        return _Plan(kept[name])
    if config.include and _matches(name, config.include) is None:
        return _Plan("not matched by include patterns")
    pattern = _matches(name, config.exclude)
    if pattern is not None:
        return _Plan(f"excluded by pattern {pattern!r}")
    if isinstance(module, nn.MultiheadAttention):
        reason = attention_skip_reason(module)
    else:
        adapter = adapter_for(module, config.adapters)
        reason = adapter if isinstance(adapter, str) else None
    if reason is not None:
        return _Plan(reason)
    weight_bits, input_bits = config.bits, config.act_bits
    note = None
    if override is not None:
        weight_bits, input_bits = QuantConfig.bits_for_override(override, config.overrides[override])
        if name in kept:
            what = "first layer" if kept[name] == FIRST_LAYER_REASON else "classifier"
            note = f"{what} quantized: override {override!r} wins over keep_first_last"
    return _Plan(weight_bits=weight_bits, input_bits=input_bits if config.quantize_inputs else None,
                 override=override, note=note)


def _skip_projections_of_fp_attention(layers: list[tuple[str, nn.Module]], plans: dict[str, _Plan]) -> None:
    """``nn.MultiheadAttention`` reads ``out_proj.weight`` itself: its out_proj runs quantized only inside a quantized one."""
    for name, module in layers:
        if isinstance(module, nn.MultiheadAttention) and plans[name].skip_reason is not None:
            out_proj = f"{name}.out_proj"
            if out_proj in plans and plans[out_proj].skip_reason is None:
                plans[out_proj] = _Plan(f"runs inside {name} (MultiheadAttention reads out_proj.weight directly), "
                                        f"which is not quantized: {plans[name].skip_reason}")


def _check_overrides_take_effect(config: QuantConfig, plans: dict[str, _Plan]) -> None:
    """An override that sets the bits of no quantized layer is an error, never silently ignored."""
    for pattern in config.overrides:
        if any(plan.override == pattern for plan in plans.values() if plan.skip_reason is None):
            continue
        fates = []
        for name, plan in plans.items():
            if fnmatch.fnmatchcase(name, pattern):
                first = _matches(name, list(config.overrides))
                fates.append(f"{name}: " + (plan.skip_reason or f"earlier pattern {first!r} matches it first"))
        shown = "; ".join(fates[:3]) + (f"; and {len(fates) - 3} more" if len(fates) > 3 else "")
        raise ValueError(f"overrides pattern {pattern!r} sets the bits of no quantized layer ({shown}); "
                         "remove it, or change the options that skip those layers")


def quantize_model(
    model: nn.Module,
    bits: int | None = None,
    act_bits: int | None = None,
    config: QuantConfig | None = None,
    **options: Any,
) -> nn.Module:
    """Make ``model``'s Linear/Conv and MultiheadAttention layers LSQ fake-quantized, in place.

    ``bits``/``act_bits`` and ``options`` (any :class:`QuantConfig` field) build
    the config; pass ``config`` instead to reuse one. Layers keep their class
    (as a base), Parameters and state_dict keys; step sizes are added as
    ``<layer>.weight_quantizer.scale`` / ``<layer>.input_quantizer.scale``
    (``<attention>.in_proj_weight_quantizer.scale`` for ``nn.MultiheadAttention``,
    whose ``out_proj`` is quantized as a Linear layer). Weight step sizes are
    initialised here, input step sizes by :func:`gaqat_wrap.calibrate` or at
    the first forward. BatchNorm layers are protected against the SAM second
    pass. Every option is checked before the model changes. See
    :func:`quant_report` for what was quantized and why anything was skipped,
    and :func:`gaqat_wrap.quant.unquantize_model` to undo it.

    Examples:
        >>> import torch
        >>> net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))
        >>> net = quantize_model(net, bits=4)
        >>> [type(m).__name__ for m in net]
        ['Linear', 'ReLU', 'QuantizedLinear', 'ReLU', 'Linear']
        >>> net = quantize_model(nn.Sequential(nn.Linear(8, 16), nn.Linear(16, 16), nn.Linear(16, 2)), overrides={"2": 8})
        >>> net[2].weight_quantizer.bits  # an override naming the kept classifier quantizes it
        8
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"quantize_model expects a torch.nn.Module, got {type(model).__name__}")
    if config is not None and (bits is not None or act_bits is not None or options):
        raise TypeError("pass either config=QuantConfig(...) or bits/act_bits/options, not both")
    if config is None:
        config = QuantConfig(bits=4 if bits is None else bits, act_bits=act_bits, **options)
    elif not isinstance(config, QuantConfig):
        raise TypeError(f"config must be a QuantConfig, got {type(config).__name__}")
    if any(isinstance(m, QuantizedLayer | QuantizedAttention) for m in model.modules()):
        raise ValueError("model is already quantized (it contains quantized layers); quantize the original model once, "
                         "or call gaqat_wrap.quant.unquantize_model(model) first")

    layers = candidate_layers(model)
    names = [name for name, _ in layers]
    if not any(isinstance(m, LINEAR_CONV_TYPES) for _, m in layers):
        raise ValueError(f"{type(model).__name__} has no Linear or Conv layer to quantize")
    _check_patterns(config, names)
    kept: dict[str, str] = {}
    if config.keep_first_last:
        kept = dict.fromkeys(classifier_layers(model), CLASSIFIER_REASON)
        kept[next(name for name, m in layers if isinstance(m, LINEAR_CONV_TYPES))] = FIRST_LAYER_REASON
    plans = {name: _plan_layer(config, name, module, kept) for name, module in layers}
    _skip_projections_of_fp_attention(layers, plans)
    _check_overrides_take_effect(config, plans)
    if all(plan.skip_reason is not None for plan in plans.values()):
        raise ValueError(f"no layer of {type(model).__name__} was quantized: every candidate was skipped "
                         f"({len(layers)} candidates; see quant_report(model) or relax keep_first_last/include/exclude)")

    for name, module in layers:
        plan = plans[name]
        if plan.skip_reason is not None:
            setattr(module, SKIP_REASON_ATTR, plan.skip_reason)
            continue
        common = {"weight_bits": plan.weight_bits, "input_bits": plan.input_bits, "role": name,
                  "input_signed": config.act_signed, "weight_init": config.weight_init, "input_init": config.act_init}
        if isinstance(module, nn.MultiheadAttention):
            quantize_attention(module, **common)
        else:
            quantize_layer(module, adapters=config.adapters, **common)
        if plan.note is not None:
            setattr(module, NOTE_ATTR, plan.note)
            logger.info("%s: %s", name, plan.note)
    keep_transformer_layers_unfused(model, [m for name, m in layers if plans[name].skip_reason is None])
    protect_running_stats(model)
    setattr(model, CONFIG_ATTR, config)
    quantized = sum(plan.skip_reason is None for plan in plans.values())
    logger.info("quantized %d of %d candidate layers of %s", quantized, len(layers), type(model).__name__)
    return model
