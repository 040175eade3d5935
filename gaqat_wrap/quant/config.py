"""QuantConfig: what :func:`gaqat_wrap.quantize_model` quantizes, and how."""

from __future__ import annotations

from dataclasses import dataclass, field

from gaqat_wrap.quant.layers import LayerAdapter, validate_adapters
from gaqat_wrap.quant.lsq import validate_bits

_INITS = ("lsq", "mse")


@dataclass
class QuantConfig:
    """Validated quantization settings.

    Attributes:
        bits: weight bit width (2..8).
        act_bits: bit width of layer inputs; ``None`` means the same as ``bits``.
        quantize_inputs: ``False`` keeps every layer input in full precision (weight-only QAT).
        keep_first_last: keep the first Linear/Conv layer (stem / patch embedding)
            and every classifier head (each head of a two-head model too) at full precision.
        include: module-name globs; when given, only matching layers are quantized.
        exclude: module-name globs never quantized.
        overrides: ``{glob: bits}`` or ``{glob: (weight_bits, input_bits)}``; the
            first matching glob wins over ``bits`` / ``act_bits``, and over
            ``keep_first_last``: an override that names a kept layer quantizes it
            (``{"head": 8}`` gives an 8-bit classifier). An override that ends up
            setting the bits of no layer is an error.
        weight_init: ``"mse"`` (grid search for the least squared error, default) or
            ``"lsq"`` (the paper's ``2 mean|w| / sqrt(Qp)``; at 8 bits it clips far too wide).
        act_init: the same choice for input step sizes.
        act_signed: force signed (``True``) / unsigned (``False``) inputs; ``None``
            decides per layer from calibration data.
        adapters: ``{layer class: LayerAdapter}`` for Linear/Conv subclasses with
            their own ``forward``, used by this config only (searched before the
            built-in timm adapters).

    Examples:
        >>> QuantConfig(bits=3, overrides={"blocks.0.*": 8}).act_bits
        3
    """

    bits: int = 4
    act_bits: int | None = None
    quantize_inputs: bool = True
    keep_first_last: bool = True
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    overrides: dict[str, int | tuple[int, int]] = field(default_factory=dict)
    weight_init: str = "mse"
    act_init: str = "mse"
    act_signed: bool | None = None
    adapters: dict[type, LayerAdapter] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_bits(self.bits, "bits")
        if self.act_bits is None:
            self.act_bits = self.bits
        validate_bits(self.act_bits, "act_bits")
        for name in ("include", "exclude"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = (value,)
            if not all(isinstance(v, str) for v in value):
                raise TypeError(f"{name} must be a sequence of module-name glob strings, got {value!r}")
            setattr(self, name, tuple(value))
        if not isinstance(self.overrides, dict):
            raise TypeError(f"overrides must be a dict {{glob: bits}}, got {type(self.overrides).__name__}")
        for pattern, spec in self.overrides.items():
            self.bits_for_override(pattern, spec)
        for name in ("weight_init", "act_init"):
            if getattr(self, name) not in _INITS:
                raise ValueError(f"{name} must be one of {_INITS}, got {getattr(self, name)!r}")
        if self.act_signed not in (None, True, False):
            raise TypeError(f"act_signed must be None, True or False, got {self.act_signed!r}")
        self.adapters = validate_adapters(self.adapters)

    @staticmethod
    def bits_for_override(pattern: str, spec: int | tuple[int, int]) -> tuple[int, int]:
        """Validate one ``overrides`` entry and return ``(weight_bits, input_bits)``."""
        if isinstance(spec, tuple):
            if len(spec) != 2:
                raise ValueError(f"overrides[{pattern!r}] must be bits or (weight_bits, input_bits), got {spec!r}")
            return validate_bits(spec[0], f"overrides[{pattern!r}][0]"), validate_bits(spec[1], f"overrides[{pattern!r}][1]")
        bits = validate_bits(spec, f"overrides[{pattern!r}]")
        return bits, bits
