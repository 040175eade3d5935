"""GAQATConfig: the validated options of :class:`gaqat_wrap.optim.GAQATOptimizer`."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

VARIANTS = ("sam", "sagm")
METRICS = ("cosine", "sign")
FREEZE_MODES = ("all", "smooth")
RHO_GROUP_KEY = "sam_rho"
"""Param-group key that overrides ``sam_rho`` for the parameters of that group."""


@dataclass
class GAQATConfig:
    """Options of one GAQAT step (DESIGN §2); every field has the documented default.

    Attributes:
        sam_rho: perturbation radius ρ >= 0 (a param group's ``"sam_rho"`` key overrides it).
            ``0`` makes the step equal to the bare base optimizer's.
        freeze_threshold: freeze a scale when its disorder >= this value; in ``(0, 1]``,
            or ``None`` to never freeze (conflicts are still measured and reported).
        window: K, how many recent conflict flags each scale keeps (>= 1).
        reevaluate_every: steps between freeze decisions; ``None`` means ``window``.
            Decisions need a full window.
        permanent_freeze: once frozen, a scale stays frozen (default: re-evaluated).
        freeze_mode: ``"all"`` drops a frozen scale's whole gradient (the base optimizer
            skips it: no momentum drift, no weight decay); ``"smooth"`` keeps only its
            task part g_task = g0.
        metric: ``"cosine"`` (conflict when cos(g_task, g_smooth) < 0) or ``"sign"``
            (conflict when more than half of the elements with a non-zero product
            g_task·g_smooth have opposite signs).
        variant: ``"sam"`` (Foret et al.; update with g1) or ``"sagm"`` (Wang et al. 2023;
            second pass at θ + ε − α g0, update with (g0 + g1) / 2 as in the authors' code).
        adaptive: ASAM (Kwon et al. 2021): ε = ρ T² g / ‖T g‖ with T = |w| + eta.
        eta: ASAM's η >= 0.
        sagm_alpha: SAGM's α >= 0.
        perturb_scales: also perturb the quantizer step sizes (default: weights only).
        eps: added to ‖g‖ in the perturbation denominator (> 0).

    Examples:
        >>> GAQATConfig(sam_rho=0.1, window=4).reevaluate_every
        4
        >>> GAQATConfig(freeze_threshold=1.5)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: freeze_threshold must be in (0, 1] ...; pass freeze_threshold=None to never freeze
    """

    sam_rho: float = 0.05
    freeze_threshold: float | None = 0.5
    window: int = 10
    reevaluate_every: int | None = None
    permanent_freeze: bool = False
    freeze_mode: str = "all"
    metric: str = "cosine"
    variant: str = "sam"
    adaptive: bool = False
    eta: float = 0.01
    sagm_alpha: float = 0.001
    perturb_scales: bool = False
    eps: float = 1e-12

    def __post_init__(self) -> None:
        _non_negative("sam_rho", self.sam_rho)
        _non_negative("eta", self.eta)
        _non_negative("sagm_alpha", self.sagm_alpha)
        if not _is_number(self.eps) or not self.eps > 0:
            raise ValueError(f"eps must be > 0 (it keeps ρ g / (‖g‖ + eps) finite), got {self.eps!r}")
        if self.freeze_threshold is not None and (
            not _is_number(self.freeze_threshold) or not 0 < self.freeze_threshold <= 1
        ):
            raise ValueError(f"freeze_threshold must be in (0, 1] (a disorder is a fraction of steps), got "
                             f"{self.freeze_threshold!r}; pass freeze_threshold=None to never freeze")
        _positive_int("window", self.window)
        if self.reevaluate_every is None:
            self.reevaluate_every = self.window
        _positive_int("reevaluate_every", self.reevaluate_every)
        _choice("freeze_mode", self.freeze_mode, FREEZE_MODES)
        _choice("metric", self.metric, METRICS)
        _choice("variant", self.variant, VARIANTS)
        for name in ("permanent_freeze", "adaptive", "perturb_scales"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (stored in the optimizer's state_dict).

        Examples:
            >>> GAQATConfig().to_dict()["variant"]
            'sam'
        """
        return asdict(self)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _non_negative(name: str, value: Any) -> None:
    if not _is_number(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def _positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1 (a number of steps), got {value!r}")


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
