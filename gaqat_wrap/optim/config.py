"""GAQATConfig: the validated options of :class:`gaqat_wrap.optim.GAQATOptimizer`, and the checks it uses.

Every option is documented on ``docs/concepts/gaqat.md`` (table "Options"), with
how its default was chosen.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

VARIANTS = ("sam", "sagm")
"""SAM-family variants (``adaptive=True`` turns either into its ASAM form)."""
METRICS = ("cosine", "sign", "calibrated")
"""Conflict tests (``docs/concepts/gaqat.md``, step 5): the paper's per-step ``"cosine"`` / ``"sign"`` flags with a
disorder threshold, or the ``"calibrated"`` test against random perturbations of the same size."""
FREEZE_MODES = ("all", "smooth")
"""What a frozen step size loses: its whole gradient, or only the sharpness part."""
RHO_GROUP_KEY = "sam_rho"
"""Param-group key that overrides ``sam_rho`` for the parameters of that group."""



@dataclass
class GAQATConfig:
    """Options of one GAQAT step; every field has the documented default.

    Attributes:
        sam_rho: perturbation radius ρ >= 0 (a param group's ``"sam_rho"`` key overrides it).
            ``0`` everywhere makes the step the bare base optimizer's (one pass, no perturbation).
        freeze_threshold: freeze a scale when its disorder >= this value; in ``(0, 1]``,
            or ``None`` to never freeze (conflicts are still measured and reported).
        window: K, how many recent conflict flags each scale keeps (>= 1).
        reevaluate_every: steps between freeze decisions; ``None`` means ``window``.
            Decisions need a full window.
        permanent_freeze: once frozen, a scale stays frozen (default: re-evaluated).
        freeze_mode: ``"all"`` drops a frozen scale's whole gradient (the base optimizer
            skips it: no momentum drift, no weight decay); ``"smooth"`` keeps only its
            task part g_task = g0.
        metric: ``"cosine"`` (conflict when cos(g_task, g_smooth) < 0), ``"sign"``
            (conflict when more than half of the elements with a non-zero product
            g_task·g_smooth have opposite signs), or ``"calibrated"``: a step size is frozen
            when the mean cosine over its window lies below the mean cosine measured for
            random perturbations of the same per-parameter norm (the null), by a one-sided
            Welch t-test at level ``alpha`` (conservative degrees of freedom); ``freeze_threshold`` then only switches freezing
            on (any value) or off (``None``). Needs ``step(closure)`` (a third pass).
        alpha: the calibrated test's one-sided level: the share of step sizes it freezes
            when nothing but noise separates the two perturbations, at most (0 < alpha < 0.5).
        null_every: the calibrated metric runs its random-direction pass every this many steps
            (its window holds the last ``window`` such measurements; cost: one extra
            forward + backward per ``null_every`` steps).
        null_seed: seed of the random directions (the same on every DDP rank).
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
    alpha: float = 0.05
    null_every: int = 5
    null_seed: int = 0

    def __post_init__(self) -> None:
        check_non_negative("sam_rho", self.sam_rho)
        check_non_negative("eta", self.eta)
        check_non_negative("sagm_alpha", self.sagm_alpha)
        if not is_finite_number(self.eps) or not self.eps > 0:
            raise ValueError(f"eps must be > 0 (it keeps ρ g / (‖g‖ + eps) finite), got {self.eps!r}")
        if self.freeze_threshold is not None and (
            not is_finite_number(self.freeze_threshold) or not 0 < self.freeze_threshold <= 1
        ):
            raise ValueError(f"freeze_threshold must be in (0, 1] (a disorder is a fraction of steps), got "
                             f"{self.freeze_threshold!r}; pass freeze_threshold=None to never freeze")
        check_positive_int("window", self.window)
        if self.reevaluate_every is None:
            self.reevaluate_every = self.window
        check_positive_int("reevaluate_every", self.reevaluate_every)
        check_choice("freeze_mode", self.freeze_mode, FREEZE_MODES)
        check_choice("metric", self.metric, METRICS)
        check_choice("variant", self.variant, VARIANTS)
        if not is_finite_number(self.alpha) or not 0 < self.alpha < 0.5:
            raise ValueError(f"alpha must be in (0, 0.5) (a one-sided test level), got {self.alpha!r}")
        check_positive_int("null_every", self.null_every)
        if isinstance(self.null_seed, bool) or not isinstance(self.null_seed, int):
            raise ValueError(f"null_seed must be an integer, got {self.null_seed!r}")
        if self.metric == "calibrated" and self.window < 4:
            raise ValueError(f"metric='calibrated' needs window >= 4 (a t-test over the window), got {self.window}")
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

    @classmethod
    def from_options(cls, **options: Any) -> GAQATConfig:
        """Build from keyword options, with an error naming every valid option for an unknown one.

        Examples:
            >>> GAQATConfig.from_options(window=3).window
            3
            >>> GAQATConfig.from_options(rho=0.1)  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            TypeError: unknown GAQAT option(s) 'rho'; the options are the GAQATConfig fields: sam_rho, ...
        """
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise TypeError(f"unknown GAQAT option(s) {', '.join(map(repr, unknown))}; the options are the "
                            f"GAQATConfig fields: {', '.join(names)}")
        return cls(**options)

    def differences(self, saved: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
        """``{field: (saved, this)}`` for every field of a saved :meth:`to_dict` that differs from this config.

        Examples:
            >>> GAQATConfig(sam_rho=0.1).differences(GAQATConfig().to_dict())
            {'sam_rho': (0.05, 0.1)}
        """
        mine = self.to_dict()
        return {name: (saved[name], mine[name]) for name in mine if name in saved and saved[name] != mine[name]}


def is_finite_number(value: Any) -> bool:
    """True for a finite int or float (``bool`` is not a number here).

    Examples:
        >>> is_finite_number(0.5), is_finite_number(float("nan")), is_finite_number(True)
        (True, False, False)
    """
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_non_negative(name: str, value: Any) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite number >= 0.

    Examples:
        >>> check_non_negative("sam_rho", float("inf"))
        Traceback (most recent call last):
        ...
        ValueError: sam_rho must be a finite number >= 0, got inf
    """
    if not is_finite_number(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def check_positive_int(name: str, value: Any) -> None:
    """Raise ``ValueError`` unless ``value`` is an int >= 1.

    Examples:
        >>> check_positive_int("window", 0)
        Traceback (most recent call last):
        ...
        ValueError: window must be an integer >= 1 (a number of steps), got 0
    """
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1 (a number of steps), got {value!r}")


def check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    """Raise ``ValueError`` naming the allowed values unless ``value`` is one of them.

    Examples:
        >>> check_choice("variant", "adam", VARIANTS)
        Traceback (most recent call last):
        ...
        ValueError: variant must be one of 'sam', 'sagm', got 'adam'
    """
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
