"""Integer-weight inference layers: the deployable form of a quantized layer.

An integer layer is the original Linear/Conv module re-classed in place (it
stays an instance of its original class), with its float ``weight``
Parameter replaced by three buffers:

* ``weight_int``: the integer weight ``q = clamp(round(w_eff / s), Qn, Qp)``,
  ``int8`` (``uint8`` if unsigned), same shape as the weight;
* ``weight_scale``: the per-output-channel step sizes ``s``;
* ``input_scale``: the per-tensor input step size (``None`` when the layer's
  input stays in full precision).

Its forward fake-quantizes the input and multiplies with ``q * s``, through
the layer adapter's ``compute(module, x, w)``. For timm ``StdConv2d`` /
``ScaledStdConv2d`` the stored integers are those of the *standardised*
weight, and ``compute`` does not standardise again. Everything else (bias,
padding, groups, other buffers) is the original module's.

Examples:
    >>> import torch
    >>> from gaqat_wrap.quant.layers import LINEAR
    >>> layer = torch.nn.Linear(2, 2, bias=False)
    >>> spec = IntegerLayerSpec("fc", "torch.nn.modules.linear.Linear", 4, True, (2, 2), None, None)
    >>> make_integer_layer(layer, spec, LINEAR, weight_int=torch.tensor([[1, -2], [3, 0]], dtype=torch.int8),
    ...                    weight_scale=torch.tensor([0.5, 1.0]))
    >>> layer(torch.tensor([[1.0, 1.0]]))
    tensor([[-0.5000,  3.0000]])
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from gaqat_wrap.class_swap import mixin_subclass
from gaqat_wrap.export.ops import dequantize_weight, quantize_dequantize_input
from gaqat_wrap.quant.layers import LayerAdapter
from gaqat_wrap.quant.lsq import quant_range


@dataclass(frozen=True)
class IntegerLayerSpec:
    """Everything about one integer layer except its tensors (the JSON config entry).

    ``original_class`` is the dotted path of the layer's class before
    quantization; ``input_bits`` / ``input_signed`` are ``None`` for a layer
    whose input is not quantized.

    Examples:
        >>> spec = IntegerLayerSpec("fc", "torch.nn.modules.linear.Linear", 4, True, (8, 3), 8, False)
        >>> IntegerLayerSpec.from_json(spec.to_json()) == spec
        True
    """

    name: str
    original_class: str
    weight_bits: int
    weight_signed: bool
    weight_shape: tuple[int, ...]
    input_bits: int | None
    input_signed: bool | None

    @property
    def weight_range(self) -> tuple[int, int]:
        """``(Qn, Qp)`` of the weight integers."""
        return quant_range(self.weight_bits, self.weight_signed)

    @property
    def input_range(self) -> tuple[int, int] | None:
        """``(Qn, Qp)`` of the input integers, ``None`` for a full-precision input."""
        if self.input_bits is None:
            return None
        return quant_range(self.input_bits, bool(self.input_signed))

    @property
    def weight_dtype(self) -> torch.dtype:
        """In-memory container of the weight integers."""
        return torch.int8 if self.weight_signed else torch.uint8

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the layer's entry in the export config)."""
        return {**asdict(self), "weight_shape": list(self.weight_shape)}

    @classmethod
    def from_json(cls, entry: dict[str, Any]) -> IntegerLayerSpec:
        """Inverse of :meth:`to_json`."""
        fields = {k: entry[k] for k in cls.__dataclass_fields__}
        return cls(**{**fields, "weight_shape": tuple(fields["weight_shape"])})


def class_path(cls: type) -> str:
    """Dotted import path of a class, as recorded in :attr:`IntegerLayerSpec.original_class`.

    Examples:
        >>> class_path(torch.nn.Conv2d)
        'torch.nn.modules.conv.Conv2d'
    """
    return f"{cls.__module__}.{cls.__qualname__}"


class IntegerLayer(nn.Module):
    """Mixin placed in front of the original class by :func:`make_integer_layer` (inference only).

    ``weight`` reads back the dequantized weight ``q * s``; ``integer_spec`` holds bit widths and shape.

    Examples:
        >>> from gaqat_wrap.quant.layers import adapter_for
        >>> layer = torch.nn.Linear(3, 2)
        >>> spec = IntegerLayerSpec("fc", class_path(torch.nn.Linear), 4, True, (2, 3), None, None)
        >>> make_integer_layer(layer, spec, adapter_for(layer), weight_scale=torch.tensor([0.5, 0.25]),
        ...                    weight_int=torch.tensor([[1, -2, 3], [0, 7, -8]], dtype=torch.int8))
        >>> isinstance(layer, IntegerLayer), isinstance(layer, torch.nn.Linear)
        (True, True)
        >>> layer.weight.tolist()
        [[0.5, -1.0, 1.5], [0.0, 1.75, -2.0]]
        >>> layer.integer_spec.weight_range
        (-8, 7)
    """

    weight_int: Tensor
    weight_scale: Tensor
    input_scale: Tensor | None
    _gaqat_adapter: LayerAdapter
    _gaqat_original_class: type
    _gaqat_integer_spec: IntegerLayerSpec

    @property
    def weight(self) -> Tensor:
        """The dequantized weight ``q * s`` (for code that reads ``layer.weight``)."""
        return self.dequantized_weight()

    @property
    def integer_spec(self) -> IntegerLayerSpec:
        """Bit widths, signedness and shape of this layer."""
        return self._gaqat_integer_spec

    def dequantized_weight(self) -> Tensor:
        """``q * s`` per output channel: bit-identical to the fake-quant weight it came from."""
        return dequantize_weight(self.weight_int, self.weight_scale, self._gaqat_integer_spec.name)

    def forward(self, x: Tensor) -> Tensor:
        spec = self._gaqat_integer_spec
        if self.input_scale is not None:
            qn, qp = spec.input_range
            x = quantize_dequantize_input(x, self.input_scale, qn, qp, spec.name)
        return self._gaqat_adapter.compute(self, x, self.dequantized_weight())

    def extra_repr(self) -> str:
        spec = self._gaqat_integer_spec
        inputs = "A: full precision" if spec.input_bits is None else \
            f"A{spec.input_bits} {'signed' if spec.input_signed else 'unsigned'}"
        return f"{super().extra_repr()}, W{spec.weight_bits} integer, {inputs}"


_CLASS_CACHE: dict[type, type] = {}


def integer_class(cls: type) -> type:
    """The (cached) integer-weight subclass of ``cls``, importable by name for pickling.

    Examples:
        >>> integer_class(torch.nn.Linear).__name__
        'IntegerLinear'
    """
    return mixin_subclass(IntegerLayer, cls, "Integer", __name__, _CLASS_CACHE)


def make_integer_layer(
    module: nn.Module,
    spec: IntegerLayerSpec,
    adapter: LayerAdapter,
    *,
    weight_int: Tensor | None = None,
    weight_scale: Tensor | None = None,
    input_scale: Tensor | None = None,
) -> None:
    """Turn ``module`` (plain, or made by ``quantize_model``) into an integer layer, in place.

    The float ``weight`` Parameter and any quantizer submodules are removed.
    Tensors not given are allocated empty (to be filled by ``load_state_dict``).
    """
    original = getattr(module, "_gaqat_original_class", type(module))
    reference = next(iter(module.parameters(recurse=False)), None)
    device = reference.device if reference is not None else torch.device("cpu")
    if weight_int is None:
        weight_int = torch.zeros(spec.weight_shape, dtype=spec.weight_dtype, device=device)
    if tuple(weight_int.shape) != tuple(spec.weight_shape) or weight_int.dtype != spec.weight_dtype:
        raise ValueError(f"layer {spec.name}: integer weight is {weight_int.dtype} {tuple(weight_int.shape)}, "
                         f"expected {spec.weight_dtype} {spec.weight_shape}")
    if weight_scale is None:
        weight_scale = torch.ones(spec.weight_shape[0], device=device)
    if spec.input_bits is not None and input_scale is None:
        input_scale = torch.ones((), device=device)
    for attr in ("weight_quantizer", "input_quantizer"):
        module._modules.pop(attr, None)
    module._parameters.pop("weight", None)
    module.__class__ = integer_class(original)
    module._gaqat_adapter = adapter
    module._gaqat_original_class = original
    module._gaqat_integer_spec = spec
    module.register_buffer("weight_int", weight_int.to(device))
    module.register_buffer("weight_scale", weight_scale.to(device))
    module.register_buffer("input_scale", input_scale.to(device) if spec.input_bits is not None else None)
