"""Scale-gradient conflict: per-scale statistics, the conflict window, disorder and freezing.

For a quantizer step size l, g_task = g0_l (first pass) and g_smooth = g1_l − g0_l
(the gradient of the sharpness term L(θ+ε) − L(θ)). :func:`scale_grad_conflict`
reduces every scale to five sums (batched over all scales, one tensor), which
under DDP are all-reduced before any decision; :func:`conflict_flags` turns
them into one flag per scale; :class:`ConflictTracker` keeps the last K flags,
the disorder (fraction of conflicting steps in the window) and the freeze
decisions.

Examples:
    >>> g_task = torch.tensor([1.0, 1.0, -1.0])      # scales: [0, 0] and [1]
    >>> g_smooth = torch.tensor([-2.0, 0.5, -1.0])
    >>> stats = scale_grad_conflict(g_task, g_smooth, torch.tensor([0, 0, 1]), 2)
    >>> conflict_flags(stats, "cosine").tolist(), conflict_flags(stats, "sign").tolist()
    ([True, False], [False, False])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from gaqat_wrap.optim.config import GAQATConfig

STAT_ROWS = ("dot", "task_sq", "smooth_sq", "sign_disagree", "sign_nonzero")
"""Rows of the statistics tensor: Σ g_task·g_smooth, Σ g_task², Σ g_smooth², #(product < 0), #(product ≠ 0)."""


def scale_grad_conflict(g_task: Tensor, g_smooth: Tensor, segment_ids: Tensor, num_scales: int) -> Tensor:
    """Per-scale sums of :data:`STAT_ROWS` as a ``(5, num_scales)`` float32 tensor.

    ``g_task`` and ``g_smooth`` are all scales' gradients flattened and
    concatenated; ``segment_ids[i]`` names the scale of element ``i``. Sums are
    additive, so summing them over ranks (DDP) is meaningful.

    Examples:
        >>> scale_grad_conflict(torch.tensor([1.0, 2.0]), torch.tensor([3.0, -1.0]), torch.tensor([0, 0]), 1).flatten().tolist()
        [1.0, 5.0, 10.0, 1.0, 2.0]
    """
    g_task, g_smooth = g_task.float(), g_smooth.float()
    product = g_task * g_smooth
    rows = torch.stack([product, g_task * g_task, g_smooth * g_smooth, (product < 0).float(), (product != 0).float()])
    out = torch.zeros(len(STAT_ROWS), num_scales, dtype=torch.float32, device=g_task.device)
    return out.index_add_(1, segment_ids, rows)


def cosine(stats: Tensor) -> Tensor:
    """cos(g_task, g_smooth) per scale from the statistics (0 where either gradient is zero).

    Examples:
        >>> cosine(torch.tensor([[-2.0], [1.0], [4.0], [1.0], [1.0]])).tolist()
        [-1.0]
    """
    denominator = (stats[1] * stats[2]).sqrt()
    return torch.where(denominator > 0, stats[0] / denominator.clamp(min=torch.finfo(stats.dtype).tiny), 0.0)


def conflict_flags(stats: Tensor, metric: str) -> Tensor:
    """One bool per scale: ``"cosine"``: cos < 0; ``"sign"``: more than half of the non-zero products are negative.

    Examples:
        >>> conflict_flags(torch.tensor([[-2.0], [1.0], [4.0], [1.0], [2.0]]), "sign").tolist()
        [False]
    """
    if metric == "cosine":
        return cosine(stats) < 0
    if metric == "sign":
        return stats[3] * 2 > stats[4]
    raise ValueError(f"metric must be 'cosine' or 'sign', got {metric!r}")


@dataclass(frozen=True)
class ScaleStatus:
    """One row of :meth:`GAQATOptimizer.freeze_report`.

    Attributes:
        role: the scale's role string (``"<module>.weight"`` or ``"<module>.input"``).
        disorder: fraction of conflicting steps among the flags in the window.
        frozen: whether the scale is frozen for the coming updates.
        frozen_steps: how many updates it has been frozen for so far.
        conflicts: conflicting steps in the window.
        window_filled: flags in the window (at most K).

    Examples:
        >>> ScaleStatus("fc.weight", 0.5, True, 3, 2, 4).frozen
        True
    """

    role: str
    disorder: float
    frozen: bool
    frozen_steps: int
    conflicts: int
    window_filled: int


class ConflictTracker:
    """Window of the last K conflict flags per scale, disorder and freeze decisions.

    :meth:`record` appends one step's flags; when the window is full and the
    step count is a multiple of ``reevaluate_every``, every scale's frozen
    flag is set to ``disorder >= freeze_threshold`` (or OR-ed into it with
    ``permanent_freeze``). The decision applies from the update of that same
    step on.

    Examples:
        >>> tracker = ConflictTracker(2, GAQATConfig(window=2, freeze_threshold=0.5))
        >>> tracker.record(torch.tensor([True, False]))
        False
        >>> tracker.record(torch.tensor([False, False]))
        True
        >>> tracker.frozen.tolist(), tracker.disorder().tolist()
        ([True, False], [0.5, 0.0])
    """

    def __init__(self, num_scales: int, config: GAQATConfig) -> None:
        self.config = config
        self.window = torch.zeros(num_scales, config.window, dtype=torch.bool)
        self.position = 0
        self.filled = torch.zeros(num_scales, dtype=torch.int64)
        self.steps = 0
        self.frozen = torch.zeros(num_scales, dtype=torch.bool)
        self.frozen_steps = torch.zeros(num_scales, dtype=torch.int64)

    @property
    def num_scales(self) -> int:
        return self.window.shape[0]

    def grow(self, num_scales: int) -> None:
        """Add empty rows for scales added since (``add_param_group``)."""
        extra = num_scales - self.num_scales
        if extra < 0:
            raise ValueError(f"the optimizer lost {-extra} quantizer scales since its first step; scales can be added "
                             "(add_param_group) but not removed")
        if extra:
            self.window = torch.cat([self.window, torch.zeros(extra, self.config.window, dtype=torch.bool)])
            self.filled = torch.cat([self.filled, torch.zeros(extra, dtype=torch.int64)])
            self.frozen = torch.cat([self.frozen, torch.zeros(extra, dtype=torch.bool)])
            self.frozen_steps = torch.cat([self.frozen_steps, torch.zeros(extra, dtype=torch.int64)])

    def disorder(self) -> Tensor:
        """Fraction of conflicting flags among the flags recorded in the window, per scale (0 before any)."""
        return self.window.sum(1).float() / self.filled.clamp(min=1).float()

    def record(self, flags: Tensor) -> bool:
        """Append one step's flags; return True when a freeze decision was made."""
        config = self.config
        self.window[:, self.position] = flags.to(device="cpu", dtype=torch.bool)
        self.position = (self.position + 1) % config.window
        self.filled = (self.filled + 1).clamp(max=config.window)
        self.steps += 1
        ready = self.filled == config.window       # scales added later fill their window later
        decided = bool(ready.any()) and self.steps % config.reevaluate_every == 0
        if decided and config.freeze_threshold is not None:
            decision = (self.disorder() >= config.freeze_threshold) & ready
            self.frozen = self.frozen | decision if config.permanent_freeze else torch.where(ready, decision, self.frozen)
        self.frozen_steps += self.frozen.long()
        return decided

    def report(self, roles: list[str]) -> list[ScaleStatus]:
        """One :class:`ScaleStatus` per scale."""
        disorder = self.disorder().tolist()
        conflicts = self.window.sum(1).tolist()
        frozen, frozen_steps, filled = self.frozen.tolist(), self.frozen_steps.tolist(), self.filled.tolist()
        return [ScaleStatus(role, disorder[i], frozen[i], frozen_steps[i], conflicts[i], filled[i])
                for i, role in enumerate(roles)]

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit-identically."""
        return {"window": self.window.clone(), "position": self.position, "filled": self.filled.clone(), "steps": self.steps,
                "frozen": self.frozen.clone(), "frozen_steps": self.frozen_steps.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`; the window length K must match."""
        window = state["window"].to(device="cpu", dtype=torch.bool)
        if window.shape[1] != self.config.window:
            raise ValueError(f"the saved conflict window has K={window.shape[1]} but this optimizer has window="
                             f"{self.config.window}; build the optimizer with the same window to resume")
        self.window = window.clone()
        self.position, self.steps = int(state["position"]), int(state["steps"])
        self.filled = torch.as_tensor(state["filled"], dtype=torch.int64).cpu().clone()
        self.frozen = state["frozen"].to(device="cpu", dtype=torch.bool).clone()
        self.frozen_steps = state["frozen_steps"].to(device="cpu", dtype=torch.int64).clone()
