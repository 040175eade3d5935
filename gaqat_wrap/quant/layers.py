"""Quantized layers: the original module, re-classed in place.

A quantized layer stays an instance of its original class (``isinstance``
checks, peft and timm helpers keep working), keeps its own ``weight`` and
``bias`` Parameters and state_dict keys, and gains two submodules:
``weight_quantizer`` (per output channel) and ``input_quantizer`` (per tensor,
or ``None`` when activations stay in full precision).

Each supported class has a :class:`LayerAdapter` that says what the
*effective* weight is and how the layer computes its output from a given
weight. Plain Linear/Conv classes and timm's weight-standardised and
SAME-padding convolutions have built-in adapters; other classes get theirs
from ``QuantConfig(adapters={cls: LayerAdapter(...)})``, scoped to that
config. Layers whose class overrides ``forward`` and has no adapter are not
quantized: :func:`adapter_for` returns the reason instead.

Examples:
    >>> import torch
    >>> layer = torch.nn.Linear(4, 3)
    >>> quantize_layer(layer, weight_bits=4, input_bits=4, role="fc")
    >>> isinstance(layer, torch.nn.Linear), type(layer).__name__
    (True, 'QuantizedLinear')
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from gaqat_wrap.class_swap import mixin_subclass
from gaqat_wrap.quant.quantizer import LSQQuantizer, ScaleInit


@dataclass(frozen=True)
class LayerAdapter:
    """How one layer class computes with a (quantized) weight.

    ``effective_weight(module)`` is the weight the layer really multiplies
    with (after weight standardisation, for example); ``compute(module, x, w)``
    is the layer's forward given that weight.

    Examples:
        >>> adapter = LayerAdapter(lambda m: m.weight, lambda m, x, w: F.linear(x, w, m.bias))
        >>> adapter.granularity
        'per-output-channel'
    """

    effective_weight: Callable[[nn.Module], Tensor]
    compute: Callable[[nn.Module, Tensor, Tensor], Tensor]
    granularity: str = "per-output-channel"


def _plain_weight(module: nn.Module) -> Tensor:
    return module.weight


def _linear(module: nn.Module, x: Tensor, w: Tensor) -> Tensor:
    return F.linear(x, w, module.bias)


def _conv(module: nn.Module, x: Tensor, w: Tensor) -> Tensor:
    return module._conv_forward(x, w, module.bias)


LINEAR = LayerAdapter(_plain_weight, _linear)
CONV = LayerAdapter(_plain_weight, _conv)

_BASE_FORWARDS = {
    nn.Linear: (nn.Linear.forward, LINEAR),
    nn.Conv1d: (nn.Conv1d.forward, CONV),
    nn.Conv2d: (nn.Conv2d.forward, CONV),
    nn.Conv3d: (nn.Conv3d.forward, CONV),
}

_BUILTIN_ADAPTERS: dict[type, LayerAdapter] = {}
"""Adapters every quantize_model call knows: timm's classes (filled on first sight of a timm layer)."""

_GLOBAL_ADAPTERS: dict[type, LayerAdapter] = {}
"""Adapters added through the deprecated :func:`register_adapter`."""


def register_adapter(cls: type, adapter: LayerAdapter) -> None:
    """Deprecated: teach every later :func:`quantize_model` call a layer class (a process-wide registry).

    Pass ``QuantConfig(adapters={cls: adapter})`` instead: the adapter then
    applies to the models quantized with that config only. Adapters given in a
    config win over ones registered here.

    Examples:
        >>> import warnings
        >>> class MyConv(nn.Conv2d):
        ...     def forward(self, x):
        ...         return self._conv_forward(x, self.weight * 2, self.bias)
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     register_adapter(MyConv, LayerAdapter(lambda m: m.weight * 2, CONV.compute))
        >>> caught[0].category.__name__, "QuantConfig(adapters=" in str(caught[0].message)
        ('DeprecationWarning', True)
        >>> _ = _GLOBAL_ADAPTERS.pop(MyConv)  # undo the process-wide registration
    """
    warnings.warn(f"register_adapter({cls.__qualname__}, ...) changes every later quantize_model call in this process "
                  "and is deprecated: pass QuantConfig(adapters={cls: adapter}) (or quantize_model(..., adapters=...)) "
                  "instead", DeprecationWarning, stacklevel=2)
    validate_adapters({cls: adapter})
    _GLOBAL_ADAPTERS[cls] = adapter


def validate_adapters(adapters: object) -> dict[type, LayerAdapter]:
    """Check an ``adapters`` mapping ``{Linear/Conv subclass: LayerAdapter}`` and return it as a dict.

    Examples:
        >>> validate_adapters({nn.ReLU: LINEAR})
        Traceback (most recent call last):
        ...
        TypeError: adapters keys must be subclasses of nn.Linear or nn.Conv1d/2d/3d (the layers quantize_model swaps), got ReLU
    """
    if not isinstance(adapters, Mapping):
        raise TypeError(f"adapters must be a dict {{layer class: LayerAdapter}}, got {type(adapters).__name__}")
    for cls, adapter in adapters.items():
        if not (isinstance(cls, type) and issubclass(cls, tuple(_BASE_FORWARDS))):
            shown = cls.__qualname__ if isinstance(cls, type) else repr(cls)
            raise TypeError("adapters keys must be subclasses of nn.Linear or nn.Conv1d/2d/3d (the layers quantize_model "
                            f"swaps), got {shown}")
        if not isinstance(adapter, LayerAdapter):
            raise TypeError(f"adapters[{cls.__qualname__}] must be a LayerAdapter, got {type(adapter).__name__}")
    return dict(adapters)


def _standardized_weight(module: nn.Module) -> Tensor:
    """timm StdConv2d: per-output-channel weight standardisation."""
    return F.batch_norm(
        module.weight.reshape(1, module.out_channels, -1), None, None, training=True, momentum=0.0, eps=module.eps
    ).reshape_as(module.weight)


def _scaled_standardized_weight(module: nn.Module) -> Tensor:
    """timm ScaledStdConv2d: standardisation with a learnable gain."""
    return F.batch_norm(
        module.weight.reshape(1, module.out_channels, -1),
        None,
        None,
        weight=(module.gain * module.scale).view(-1),
        training=True,
        momentum=0.0,
        eps=module.eps,
    ).reshape_as(module.weight)


def _conv_maybe_same(module: nn.Module, x: Tensor, w: Tensor) -> Tensor:
    """timm Std/ScaledStdConv2d(Same): optional dynamic SAME padding, then conv2d."""
    if getattr(module, "same_pad", False):
        from timm.layers.padding import pad_same

        x = pad_same(x, module.kernel_size, module.stride, module.dilation)
    return F.conv2d(x, w, module.bias, module.stride, module.padding, module.dilation, module.groups)


def _conv_same(module: nn.Module, x: Tensor, w: Tensor) -> Tensor:
    """timm Conv2dSame: dynamic SAME padding, then conv2d without padding."""
    from timm.layers.padding import pad_same

    x = pad_same(x, module.kernel_size, module.stride, module.dilation)
    return F.conv2d(x, w, module.bias, module.stride, (0, 0), module.dilation, module.groups)


_timm_adapters_registered = False


def _register_timm_adapters() -> None:
    """Add timm's weight-standardised and SAME-padding convs to the built-in adapters (on first sight of a timm layer).

    Lazy so that ``import gaqat_wrap`` does not import timm: a timm layer can
    only exist once timm is imported.
    """
    global _timm_adapters_registered
    _timm_adapters_registered = True
    try:
        # By module path: ``timm.layers.conv2d_same`` is also the name of a function re-exported by timm.layers.
        conv2d_same = importlib.import_module("timm.layers.conv2d_same")
        std_conv = importlib.import_module("timm.layers.std_conv")
    except ImportError:  # timm is an optional extra
        return
    for name, weight_fn in (("StdConv2d", _standardized_weight), ("StdConv2dSame", _standardized_weight),
                            ("ScaledStdConv2d", _scaled_standardized_weight),
                            ("ScaledStdConv2dSame", _scaled_standardized_weight)):
        if hasattr(std_conv, name):
            _BUILTIN_ADAPTERS[getattr(std_conv, name)] = LayerAdapter(weight_fn, _conv_maybe_same)
    if hasattr(conv2d_same, "Conv2dSame"):
        _BUILTIN_ADAPTERS[conv2d_same.Conv2dSame] = LayerAdapter(_plain_weight, _conv_same)


def _lookup(cls: type, adapters: Mapping[type, LayerAdapter]) -> LayerAdapter | None:
    """The adapter of the nearest class in ``cls``'s MRO that has one, if ``cls`` runs that class's forward."""
    for klass in cls.__mro__:
        if klass in adapters:
            return adapters[klass] if getattr(klass, "forward", None) is cls.forward else None
    return None


def adapter_for(module: nn.Module, adapters: Mapping[type, LayerAdapter] | None = None) -> LayerAdapter | str:
    """The adapter for ``module``, or the reason it cannot be quantized.

    ``adapters`` (a config's ``{class: LayerAdapter}``) is searched first, then
    the built-in adapters, then the deprecated :func:`register_adapter`
    registry. A subclass that does not override ``forward`` uses its base
    class's adapter.

    Examples:
        >>> adapter_for(nn.Linear(2, 2)) is LINEAR, adapter_for(nn.ReLU())
        (True, 'not a Linear/Conv layer')
        >>> class Doubled(nn.Linear):
        ...     def forward(self, x):
        ...         return F.linear(x, 2 * self.weight, self.bias)
        >>> doubled = LayerAdapter(lambda m: 2 * m.weight, LINEAR.compute)
        >>> adapter_for(Doubled(2, 2), {Doubled: doubled}) is doubled, "has no adapter" in adapter_for(Doubled(2, 2))
        (True, True)
    """
    cls = type(module)
    if isinstance(module, QuantizedLayer):
        return "already quantized"
    if not _timm_adapters_registered and cls.__module__.startswith("timm."):
        _register_timm_adapters()
    for registry in (adapters or {}, _BUILTIN_ADAPTERS, _GLOBAL_ADAPTERS):
        found = _lookup(cls, registry)
        if found is not None:
            return found
    for base, (base_forward, adapter) in _BASE_FORWARDS.items():
        if isinstance(module, base):
            if cls.forward is base_forward:
                if isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d) and module.padding_mode != "zeros":
                    return CONV  # _conv_forward handles the padding mode
                return adapter
            return (f"{cls.__module__}.{cls.__qualname__} overrides forward() and has no adapter "
                    "(pass QuantConfig(adapters={" + cls.__qualname__ + ": LayerAdapter(...)}), see "
                    "gaqat_wrap.quant.layers.LayerAdapter)")
    return "not a Linear/Conv layer"


class QuantizedLayer(nn.Module):
    """Mixin placed in front of the original class by :func:`quantize_layer`.

    Examples:
        >>> layer = nn.Linear(4, 2)
        >>> quantize_layer(layer, weight_bits=8, input_bits=None, role="fc")
        >>> isinstance(layer, QuantizedLayer), layer.effective_weight() is layer.weight
        (True, True)
    """

    _gaqat_adapter: LayerAdapter
    _gaqat_original_class: type
    weight_quantizer: LSQQuantizer
    input_quantizer: LSQQuantizer | None

    def forward(self, x: Tensor) -> Tensor:
        if self.input_quantizer is not None:
            x = self.input_quantizer(x)
        weight = self.weight_quantizer(self._gaqat_adapter.effective_weight(self))
        return self._gaqat_adapter.compute(self, x, weight)

    def effective_weight(self) -> Tensor:
        """The full-precision weight this layer quantizes."""
        return self._gaqat_adapter.effective_weight(self)

    def __reduce_ex__(self, protocol: int) -> tuple:
        # Pickle by the original class: the dynamic subclass is rebuilt on load, even in a fresh process.
        reduced = super().__reduce_ex__(protocol)
        return (_new_quantized, (self._gaqat_original_class,), *reduced[2:])


def _new_quantized(original: type) -> nn.Module:
    """Unpickling helper: an empty instance of the quantized subclass of ``original``."""
    cls = quantized_class(original)
    return cls.__new__(cls)


_CLASS_CACHE: dict[type, type] = {}


def quantized_class(cls: type) -> type:
    """The (cached) quantized subclass of ``cls``; instances pickle through the original class.

    Examples:
        >>> quantized_class(nn.Conv2d) is quantized_class(nn.Conv2d), issubclass(quantized_class(nn.Conv2d), nn.Conv2d)
        (True, True)
    """
    return mixin_subclass(QuantizedLayer, cls, "Quantized", __name__, _CLASS_CACHE)


def quantize_layer(
    module: nn.Module,
    *,
    weight_bits: int,
    input_bits: int | None,
    role: str,
    input_signed: bool | None = None,
    weight_init: ScaleInit = "lsq",
    input_init: ScaleInit = "lsq",
    adapters: Mapping[type, LayerAdapter] | None = None,
) -> None:
    """Turn ``module`` into its quantized class in place.

    ``input_bits=None`` keeps the layer's input in full precision. ``adapters``
    are searched first for the layer's class (see :func:`adapter_for`). Raises
    ``TypeError`` with the reason when the layer cannot be quantized.

    Examples:
        >>> conv = nn.Conv2d(3, 4, 3)
        >>> quantize_layer(conv, weight_bits=4, input_bits=8, role="conv")
        >>> conv.weight_quantizer.scale.shape, conv.input_quantizer.bits
        (torch.Size([4]), 8)
    """
    adapter = adapter_for(module, adapters)
    if isinstance(adapter, str):
        raise TypeError(f"cannot quantize {role or type(module).__name__}: {adapter}")
    weight = adapter.effective_weight(module)
    weight_quantizer = LSQQuantizer(weight_bits, kind="weight", num_channels=weight.shape[0], init=weight_init,
                                    role=f"{role}.weight")
    weight_quantizer.to(device=module.weight.device)
    weight_quantizer.initialize_from_weight(weight)
    input_quantizer = None
    if input_bits is not None:
        input_quantizer = LSQQuantizer(input_bits, kind="input", signed=input_signed, init=input_init,
                                       role=f"{role}.input").to(device=module.weight.device)
    original = type(module)
    module.__class__ = quantized_class(original)
    module._gaqat_adapter = adapter
    module._gaqat_original_class = original
    module.weight_quantizer = weight_quantizer
    module.input_quantizer = input_quantizer
