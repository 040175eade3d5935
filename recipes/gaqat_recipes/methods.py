"""The training methods the study compares, as data: what each quantizes and which optimizer step it takes.

Every method uses the same base optimizer, learning rate, steps, batches and augmentation; they differ only in
the rows of :data:`METHODS`:

| method | quantized | optimizer |
|---|---|---|
| ``fp`` | no | base optimizer (ERM, full precision) |
| ``fp-sam`` | no | GAQATOptimizer, SAM; no scales, so nothing to freeze |
| ``qat`` | LSQ | base optimizer |
| ``sam-qat`` | LSQ | GAQATOptimizer, SAM, ``freeze_threshold=None`` (no freezing) |
| ``sagm-qat`` | LSQ | GAQATOptimizer, SAGM, no freezing |
| ``gaqat`` | LSQ | GAQATOptimizer, SAM, freezing on (threshold / window from the run's GAQAT options) |
| ``gaqat-cal`` | LSQ | GAQATOptimizer, SAM, freezing by the calibrated test (``metric="calibrated"``) |
| ``gaqat-cal-sagm`` | LSQ | GAQATOptimizer, SAGM, freezing by the calibrated test |
| ``osc-qat`` | LSQ | base optimizer + oscillation freezing of weights (Nagel et al. 2022) |
| ``osc-damp-qat`` | LSQ | base optimizer + oscillation freezing + dampening (λ 0 -> 0.1) |
| ``gaqat-osc`` | LSQ | GAQATOptimizer, SAGM, calibrated freezing + oscillation freezing of weights |
| ``qat-delayed`` | LSQ after 30% of the steps | base optimizer; full precision first, then LSQ (QT-DoG) |

A new method is one row: a name, whether it quantizes, whether it takes the GAQAT (two-pass) step, the
:class:`gaqat_wrap.GAQATConfig` fields it fixes (``gaqat``), which win over the run's own GAQAT options, the
:class:`gaqat_wrap.OscillationConfig` fields of its oscillation freezer (``oscillation``; ``None``: none) and
the share of the steps it trains in full precision before quantizing (``delay_fraction``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class MethodSpec:
    """One training method.

    Attributes:
        name: the method's name on the command line.
        quantized: LSQ fake-quantize the model (``quantize_model`` + ``calibrate``).
        sharpness_aware: wrap the base optimizer in ``GAQATOptimizer`` (two passes per step).
        label: short human-readable description used in tables and plots.
        gaqat: ``GAQATConfig`` fields this method fixes, e.g. ``{"variant": "sagm"}`` or
            ``{"freeze_threshold": None}`` (never freeze); they override the run's GAQAT options.
        oscillation: ``OscillationConfig`` fields of the method's oscillation freezer of weights
            (``{}``: the defaults), or ``None`` for no freezer.
        delay_fraction: share of the run's ``steps`` trained in full precision before the model is quantized
            and calibrated (0: quantized from the start; QT-DoG's delayed quantization otherwise).

    Examples:
        >>> METHODS["gaqat"].freezing, METHODS["sam-qat"].freezing
        (True, False)
        >>> dict(METHODS["sagm-qat"].gaqat)
        {'variant': 'sagm', 'freeze_threshold': None}
    """

    name: str
    quantized: bool
    sharpness_aware: bool
    label: str = ""
    gaqat: Mapping[str, Any] = field(default_factory=dict)
    oscillation: Mapping[str, Any] | None = None
    delay_fraction: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "gaqat", MappingProxyType(dict(self.gaqat)))  # rows are shared: read-only
        if self.oscillation is not None:
            object.__setattr__(self, "oscillation", MappingProxyType(dict(self.oscillation)))
        if not 0.0 <= self.delay_fraction < 1.0:
            raise ValueError(f"delay_fraction must be in [0, 1), got {self.delay_fraction}")
        if self.delay_fraction and (not self.quantized or self.oscillation is not None):
            raise ValueError("a delayed method must quantize and cannot track oscillations from the start")

    @property
    def freezing(self) -> bool:
        """Whether this method may freeze step sizes (sharpness-aware and not fixed to ``freeze_threshold=None``)."""
        return self.sharpness_aware and self.gaqat.get("freeze_threshold", "default") is not None


_NEVER_FREEZE = {"freeze_threshold": None}
_CALIBRATED = {"metric": "calibrated"}

METHODS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec("fp", quantized=False, sharpness_aware=False, label="FP (ERM)"),
        MethodSpec("fp-sam", quantized=False, sharpness_aware=True, label="FP + SAM", gaqat=_NEVER_FREEZE),
        MethodSpec("qat", quantized=True, sharpness_aware=False, label="LSQ"),
        MethodSpec("sam-qat", quantized=True, sharpness_aware=True, label="LSQ + SAM", gaqat=_NEVER_FREEZE),
        MethodSpec("sagm-qat", quantized=True, sharpness_aware=True, label="LSQ + SAGM",
                   gaqat={"variant": "sagm", **_NEVER_FREEZE}),
        MethodSpec("gaqat", quantized=True, sharpness_aware=True, label="GAQAT"),
        MethodSpec("gaqat-cal", quantized=True, sharpness_aware=True, label="GAQAT, calibrated", gaqat=_CALIBRATED),
        MethodSpec("gaqat-cal-sagm", quantized=True, sharpness_aware=True, label="GAQAT, calibrated, SAGM",
                   gaqat={**_CALIBRATED, "variant": "sagm"}),
        MethodSpec("osc-qat", quantized=True, sharpness_aware=False, label="LSQ + osc. freezing", oscillation={}),
        MethodSpec("osc-damp-qat", quantized=True, sharpness_aware=False, label="LSQ + osc. freezing + damp.",
                   oscillation={"dampening": 0.1}),
        MethodSpec("gaqat-osc", quantized=True, sharpness_aware=True, label="GAQAT cal. SAGM + osc. freezing",
                   gaqat={**_CALIBRATED, "variant": "sagm"}, oscillation={}),
        MethodSpec("qat-delayed", quantized=True, sharpness_aware=False, label="LSQ, delayed (QT-DoG)",
                   delay_fraction=0.3),
    )
}
"""Method name -> :class:`MethodSpec`; the single list of methods the recipes accept."""


def method_spec(name: str) -> MethodSpec:
    """Look a method up by name, with an error listing the valid names.

    Examples:
        >>> method_spec("qat").quantized
        True
        >>> method_spec("lsq")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: unknown method 'lsq'; choose one of fp, fp-sam, qat, sam-qat, sagm-qat, gaqat, gaqat-cal, ...
    """
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]
