"""OscillationConfig: the validated options of oscillation freezing and dampening, and their schedules.

Both schedules follow Nagel et al. (ICML 2022, "Overcoming Oscillations in Quantization-Aware
Training"): nothing happens during a warm start (the first ``warm_start`` share of the training
steps), then a cosine takes the value from its start to its final value at ``total_steps``. Every
option is documented on ``docs/concepts/oscillations.md`` (table "Options").
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from gaqat_wrap.optim.config import check_choice, check_non_negative, is_finite_number
from gaqat_wrap.quant.lsq import validate_bits

DAMPENING_REDUCTIONS = ("kernel_mean", "sum", "mean")
"""How the dampening loss of one layer is reduced over its weights (see :func:`~gaqat_wrap.optim.dampening_loss`)."""


def cosine_anneal(step: int, total_steps: int, start: float, end: float, warm_start: float) -> float | None:
    """The schedule value at ``step``: ``None`` during the warm start, then a cosine from ``start`` to ``end``.

    With ``t0 = warm_start * total_steps`` and ``r = (step - t0) / (total_steps - t0)`` clipped to
    [0, 1], the value is ``end + (start - end) * (1 + cos(pi * r)) / 2``: ``start`` at ``t0``,
    ``end`` from ``total_steps`` on.

    Examples:
        >>> [cosine_anneal(t, 100, 0.1, 0.01, warm_start=0.2) for t in (0, 19, 20, 100, 500)]
        [None, None, 0.1, 0.01, 0.01]
        >>> round(cosine_anneal(60, 100, 0.1, 0.01, warm_start=0.2), 6)   # half-way through the cosine
        0.055
    """
    begin = warm_start * total_steps
    if step < begin:
        return None
    progress = min(max((step - begin) / max(total_steps - begin, 1e-12), 0.0), 1.0)
    return end + (start - end) * (1.0 + math.cos(math.pi * progress)) / 2.0


def _check_threshold(name: str, value: Any, hint: str) -> None:
    if not is_finite_number(value) or not 0 < value <= 1:
        raise ValueError(f"{name} must be in (0, 1] (an oscillation frequency is a share of steps), got {value!r}{hint}")


def _check_warm_start(value: Any) -> None:
    if not is_finite_number(value) or not 0 <= value < 1:
        raise ValueError(f"warm_start must be a share of total_steps in [0, 1), got {value!r}")


@dataclass
class OscillationConfig:
    """Options of :class:`~gaqat_wrap.optim.OscillationFreezer`; every field has the documented default.

    Attributes:
        momentum: m of the exponential moving averages (oscillation frequency and integer state),
            in (0, 1). 1e-3 is the default of the authors' command line and the value their
            thresholds were tuned with (their tracker class defaults to 0.01); keep it at least
            2-3x below the final threshold.
        freeze_threshold: frequency above which a weight is frozen when the cosine starts; in
            (0, 1], or ``None`` to track only (no freezing).
        freeze_threshold_final: the threshold at the end of training (the authors: 0.01 at 4 bits,
            0.011 at 3 bits with their MobileNetV2 settings).
        dampening: final weight λ of the dampening loss (0 turns it off; the authors used 0.1 with
            ``"kernel_mean"``). λ rises from 0 along the same warm start and cosine.
        dampening_reduction: ``"kernel_mean"`` (sum over output channels, mean over the rest: the
            authors' default), ``"sum"`` or ``"mean"`` over each layer's weights.
        warm_start: share of ``total_steps`` with neither freezing nor dampening, in [0, 1).
        max_bits: only layers with at most this many weight bits are tracked (the paper: 4).

    Examples:
        >>> OscillationConfig().freeze_threshold, OscillationConfig().momentum
        (0.1, 0.001)
        >>> OscillationConfig(momentum=0.2)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: momentum must be below freeze_threshold_final ...
    """

    momentum: float = 1e-3
    freeze_threshold: float | None = 0.1
    freeze_threshold_final: float = 0.01
    dampening: float = 0.0
    dampening_reduction: str = "kernel_mean"
    warm_start: float = 0.25
    max_bits: int = 4

    def __post_init__(self) -> None:
        if not is_finite_number(self.momentum) or not 0 < self.momentum < 1:
            raise ValueError(f"momentum must be in (0, 1) (the weight of the newest step in the moving averages), "
                             f"got {self.momentum!r}")
        if self.freeze_threshold is not None:
            _check_threshold("freeze_threshold", self.freeze_threshold, "; pass freeze_threshold=None to track only")
        _check_threshold("freeze_threshold_final", self.freeze_threshold_final, "")
        if self.freeze_threshold is not None and self.momentum >= self.freeze_threshold_final:
            raise ValueError(f"momentum must be below freeze_threshold_final ({self.momentum!r} >= "
                             f"{self.freeze_threshold_final!r}): a single oscillation raises the frequency by "
                             "momentum and would freeze a weight at once; lower momentum (e.g. 1e-3)")
        check_non_negative("dampening", self.dampening)
        check_choice("dampening_reduction", self.dampening_reduction, DAMPENING_REDUCTIONS)
        _check_warm_start(self.warm_start)
        validate_bits(self.max_bits, "max_bits")

    def threshold_at(self, step: int, total_steps: int) -> float | None:
        """The freezing threshold after ``step`` completed steps; ``None`` while nothing may freeze.

        Examples:
            >>> config = OscillationConfig(warm_start=0.5)
            >>> config.threshold_at(10, 100), config.threshold_at(50, 100), config.threshold_at(100, 100)
            (None, 0.1, 0.01)
        """
        if self.freeze_threshold is None:
            return None
        return cosine_anneal(step, total_steps, self.freeze_threshold, self.freeze_threshold_final, self.warm_start)

    def dampening_at(self, step: int, total_steps: int) -> float:
        """The dampening weight λ after ``step`` completed steps: 0 in the warm start, then up to ``dampening``.

        Examples:
            >>> config = OscillationConfig(dampening=0.1, warm_start=0.0)
            >>> config.dampening_at(0, 100), round(config.dampening_at(50, 100), 6), config.dampening_at(100, 100)
            (0.0, 0.05, 0.1)
        """
        value = cosine_anneal(step, total_steps, 0.0, self.dampening, self.warm_start)
        return 0.0 if value is None else value

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (stored in the freezer's state_dict).

        Examples:
            >>> OscillationConfig().to_dict()["max_bits"]
            4
        """
        return asdict(self)

    def differences(self, saved: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
        """Options whose saved value differs from this config's: ``{name: (saved, here)}``.

        Examples:
            >>> OscillationConfig().differences({"momentum": 0.01})
            {'momentum': (0.01, 0.001)}
        """
        mine = self.to_dict()
        return {name: (saved[name], mine[name]) for name in mine if name in saved and saved[name] != mine[name]}
