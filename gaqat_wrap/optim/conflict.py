"""Scale-gradient conflict: per-scale statistics, the conflict window, disorder and freezing.

For a quantizer step size l, g_task = g0_l (first pass) and g_smooth = g1_l − g0_l
(the gradient of the sharpness term L(θ+ε) − L(θ)). :func:`scale_grad_conflict`
reduces every scale to five sums (batched over all scales, one tensor);
:func:`conflict_flags` turns them into one flag per scale; :class:`ConflictTracker`
keeps the last K flags per step-size role, the disorder (fraction of conflicting
steps in the window) and the freeze decisions. Everything stays on the gradients'
device (``docs/concepts/gaqat.md``, steps 5 and 6).

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
    concatenated; ``segment_ids[i]`` names the scale of element ``i``.

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


@dataclass
class Proposal:
    """One step's tentative tracker update; :meth:`ConflictTracker.commit` applies it once the step is known to count.

    Attributes:
        flags: the window of conflict flags with this step's flags written in, ``(scales, K)``, on the device.
        measured: which cells of that window hold a measurement, ``(scales, K)``, on the device.
        measured_now: which scales were measured this step (host).
        decided: whether this step makes a freeze decision.
        frozen: the frozen flags after this step's decision (device), or ``None`` when nothing was decided.

    Examples:
        >>> ConflictTracker(["a"], GAQATConfig(window=1)).propose(torch.tensor([True])).decided
        True
    """

    flags: Tensor
    measured: Tensor
    measured_now: list[bool]
    decided: bool
    frozen: Tensor | None


class ConflictTracker:
    """The last K conflict flags of every step size, keyed by role; disorder and freeze decisions.

    A step's flags are first *proposed* (:meth:`propose`, device tensors only, no host
    synchronisation) and *committed* (:meth:`commit`) once the optimizer knows the step
    counts (it was finite). A scale without a gradient in either pass that step is not
    measured: its cell stays empty and does not count towards its window. When a scale's
    window holds K measurements and the step count is a multiple of ``reevaluate_every``,
    its frozen flag becomes ``disorder >= freeze_threshold`` (OR-ed into the old flag with
    ``permanent_freeze``). The decision applies from the update of that same step on.

    Examples:
        >>> tracker = ConflictTracker(["a.weight", "a.input"], GAQATConfig(window=2, freeze_threshold=0.5))
        >>> tracker.record(torch.tensor([True, False]))
        False
        >>> tracker.record(torch.tensor([False, False]))
        True
        >>> tracker.frozen, tracker.disorder().tolist()
        ([True, False], [0.5, 0.0])
    """

    def __init__(self, roles: list[str], config: GAQATConfig, device: torch.device | str | None = None) -> None:
        if len(set(roles)) != len(roles):
            raise ValueError(f"step-size roles must be unique, got {roles}")
        self.config = config
        self.roles = list(roles)
        size, k = len(roles), config.window
        self.flags = torch.zeros(size, k, dtype=torch.bool, device=device)
        self.measured = torch.zeros(size, k, dtype=torch.bool, device=device)
        self.filled = [0] * size
        self._measured_host = [[False] * k for _ in range(size)]
        self.position = 0
        self.steps = 0
        self.frozen = [False] * size
        self.frozen_steps = [0] * size
        self._frozen_device = torch.zeros(size, dtype=torch.bool, device=device)

    @property
    def device(self) -> torch.device:
        return self.flags.device

    def to(self, device: torch.device | str) -> ConflictTracker:
        """Move the device-side state (flags, measurements, frozen flags) to ``device``."""
        self.flags, self.measured = self.flags.to(device), self.measured.to(device)
        self._frozen_device = self._frozen_device.to(device)
        return self

    def align(self, roles: list[str]) -> None:
        """Order rows as ``roles``; roles new to the tracker (``add_param_group``) get empty rows.

        Raises ``ValueError`` naming the step sizes the tracker knows but ``roles`` lacks.

        Examples:
            >>> tracker = ConflictTracker(["a"], GAQATConfig(window=1)); tracker.align(["b", "a"]); tracker.roles
            ['b', 'a']
        """
        if roles == self.roles:
            return
        missing = [r for r in self.roles if r not in roles]
        if missing:
            raise ValueError(f"the optimizer lost step sizes it was tracking: {missing[:5]}"
                             f"{' ...' if len(missing) > 5 else ''}; step sizes can be added (add_param_group) but "
                             "not removed or renamed")
        if len(set(roles)) != len(roles):
            raise ValueError(f"step-size roles must be unique, got {roles}")
        index = {role: i for i, role in enumerate(self.roles)}
        k, device = self.config.window, self.device
        rows = [index.get(role, -1) for role in roles]
        take = torch.tensor([max(r, 0) for r in rows], device=device)
        known = torch.tensor([r >= 0 for r in rows], device=device).unsqueeze(1)
        self.flags = self.flags[take] & known if self.roles else torch.zeros(len(roles), k, dtype=torch.bool, device=device)
        self.measured = (self.measured[take] & known if self.roles
                         else torch.zeros(len(roles), k, dtype=torch.bool, device=device))
        self._frozen_device = self.flags.new_tensor([self.frozen[r] if r >= 0 else False for r in rows])
        self.filled = [self.filled[r] if r >= 0 else 0 for r in rows]
        self._measured_host = [list(self._measured_host[r]) if r >= 0 else [False] * k for r in rows]
        self.frozen = [self.frozen[r] if r >= 0 else False for r in rows]
        self.frozen_steps = [self.frozen_steps[r] if r >= 0 else 0 for r in rows]
        self.roles = list(roles)

    def disorder(self, flags: Tensor | None = None, measured: Tensor | None = None) -> Tensor:
        """Fraction of conflicting steps among the measured steps in the window, per scale (0 before any)."""
        flags = self.flags if flags is None else flags
        measured = self.measured if measured is None else measured
        return flags.sum(1).float() / measured.sum(1).clamp(min=1).float()

    def propose(self, flags: Tensor, measured: list[bool] | None = None) -> Proposal:
        """This step's tracker update, computed on the flags' device without reading anything back.

        ``measured[i]`` is False for a scale without a gradient in one of the passes (default: all measured).
        """
        config, k, pos = self.config, self.config.window, self.position
        measured = [True] * len(self.roles) if measured is None else list(measured)
        if all(measured):
            column = torch.ones(len(self.roles), dtype=torch.bool, device=self.device)
        else:
            column = torch.tensor(measured, dtype=torch.bool, device=self.device)
        new_flags, new_measured = self.flags.clone(), self.measured.clone()
        new_flags[:, pos] = flags.to(self.device, torch.bool) & column
        new_measured[:, pos] = column
        filled = [f - old[pos] + now for f, old, now in zip(self.filled, self._measured_host, measured, strict=True)]
        steps = self.steps + 1
        decided = any(f == k for f in filled) and steps % config.reevaluate_every == 0
        frozen = None
        if decided and config.freeze_threshold is not None:
            ready = new_measured.sum(1) == k
            decision = (self.disorder(new_flags, new_measured) >= config.freeze_threshold) & ready
            frozen = (self._frozen_device | decision if config.permanent_freeze
                      else torch.where(ready, decision, self._frozen_device))
        return Proposal(new_flags, new_measured, measured, decided, frozen)

    def commit(self, proposal: Proposal, frozen: list[bool] | None = None) -> None:
        """Apply ``proposal``; ``frozen`` is ``proposal.frozen`` read back to the host (when it is not ``None``)."""
        pos = self.position
        for row, now in zip(self._measured_host, proposal.measured_now, strict=True):
            row[pos] = now
        self.filled = [sum(row) for row in self._measured_host]
        self.flags, self.measured = proposal.flags, proposal.measured
        self.position = (pos + 1) % self.config.window
        self.steps += 1
        if proposal.frozen is not None:
            if frozen is None:
                frozen = proposal.frozen.tolist()
            self._frozen_device = proposal.frozen
            self.frozen = [bool(f) for f in frozen]
        self.frozen_steps = [n + f for n, f in zip(self.frozen_steps, self.frozen, strict=True)]

    def record(self, flags: Tensor, measured: list[bool] | None = None) -> bool:
        """Propose and commit one step's flags at once; True when a freeze decision was made."""
        proposal = self.propose(flags, measured)
        self.commit(proposal)
        return proposal.decided

    def report(self) -> list[ScaleStatus]:
        """One :class:`ScaleStatus` per scale (reads the device state back: not for every step)."""
        disorder = self.disorder().tolist()
        conflicts = self.flags.sum(1).tolist()
        return [ScaleStatus(role, disorder[i], self.frozen[i], self.frozen_steps[i], conflicts[i], self.filled[i])
                for i, role in enumerate(self.roles)]

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit-identically, keyed by step-size role."""
        return {"roles": list(self.roles), "flags": self.flags.cpu().clone(), "measured": self.measured.cpu().clone(),
                "position": self.position, "steps": self.steps, "frozen": torch.tensor(self.frozen, dtype=torch.bool),
                "frozen_steps": torch.tensor(self.frozen_steps, dtype=torch.int64)}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], config: GAQATConfig,
                        device: torch.device | str | None = None) -> ConflictTracker:
        """Rebuild a tracker saved by :meth:`state_dict`; the window length K must match ``config``."""
        flags = state["flags"].to(dtype=torch.bool)
        if flags.shape[1] != config.window:
            raise ValueError(f"the saved conflict window has K={flags.shape[1]} but this optimizer has window="
                             f"{config.window}; build the optimizer with the same window to resume")
        tracker = cls(list(state["roles"]), config, device)
        tracker.flags = flags.to(tracker.device).clone()
        tracker.measured = state["measured"].to(tracker.device, torch.bool).clone()
        tracker._measured_host = [[bool(v) for v in row] for row in state["measured"].tolist()]
        tracker.filled = [sum(row) for row in tracker._measured_host]
        tracker.position, tracker.steps = int(state["position"]), int(state["steps"])
        tracker.frozen = [bool(v) for v in torch.as_tensor(state["frozen"]).tolist()]
        tracker._frozen_device = torch.tensor(tracker.frozen, dtype=torch.bool, device=tracker.device)
        tracker.frozen_steps = [int(v) for v in torch.as_tensor(state["frozen_steps"]).tolist()]
        return tracker
