"""The training methods compared by the recipes, as data: what each quantizes and which optimizer step it takes.

Every method uses the same base optimizer, learning rate, steps, batches and augmentation; they differ only in
the rows of :data:`METHODS`:

| method | quantized | optimizer |
|---|---|---|
| ``fp`` | no | base optimizer (ERM, full precision) |
| ``fp-sam`` | no | GAQATOptimizer, SAM; no scales, so nothing to freeze |
| ``qat`` | LSQ | base optimizer |
| ``sam-qat`` | LSQ | GAQATOptimizer, SAM, ``freeze_threshold=None`` (no freezing) |
| ``sagm-qat`` | LSQ | GAQATOptimizer, SAGM, no freezing |
| ``gaqat`` | LSQ | GAQATOptimizer, SAM, freezing on (threshold / window from the config) |
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MethodSpec:
    """One training method.

    Attributes:
        name: the method's name on the command line.
        quantized: LSQ fake-quantize the model (``quantize_model`` + ``calibrate``).
        sharpness_aware: wrap the base optimizer in ``GAQATOptimizer`` (two passes per step).
        variant: ``GAQATConfig.variant`` (``"sam"`` or ``"sagm"``) when sharpness-aware.
        freezing: freeze conflicting scales (else ``freeze_threshold=None``).
        label: short human-readable description used in tables and plots.

    Examples:
        >>> METHODS["gaqat"].freezing, METHODS["sam-qat"].freezing
        (True, False)
    """

    name: str
    quantized: bool
    sharpness_aware: bool
    variant: str = "sam"
    freezing: bool = False
    label: str = ""


METHODS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec("fp", quantized=False, sharpness_aware=False, label="FP (ERM)"),
        MethodSpec("fp-sam", quantized=False, sharpness_aware=True, label="FP + SAM"),
        MethodSpec("qat", quantized=True, sharpness_aware=False, label="LSQ"),
        MethodSpec("sam-qat", quantized=True, sharpness_aware=True, label="LSQ + SAM"),
        MethodSpec("sagm-qat", quantized=True, sharpness_aware=True, variant="sagm", label="LSQ + SAGM"),
        MethodSpec("gaqat", quantized=True, sharpness_aware=True, freezing=True, label="GAQAT"),
    )
}
"""Method name -> :class:`MethodSpec`; the single list of methods the recipes accept."""


def method_spec(name: str) -> MethodSpec:
    """Look a method up by name, with an error listing the valid names.

    Examples:
        >>> method_spec("qat").quantized
        True
        >>> method_spec("lsq")
        Traceback (most recent call last):
        ...
        ValueError: unknown method 'lsq'; choose one of fp, fp-sam, qat, sam-qat, sagm-qat, gaqat
    """
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]
