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

import math
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


def conflict_flags(stats: Tensor, metric: str, null_mean: Tensor | None = None) -> Tensor:
    """One bool per scale.

    ``"cosine"``: cos < 0; ``"sign"``: more than half of the non-zero products are negative;
    ``"calibrated"``: cos below ``null_mean`` (the mean cosine of the random-direction null, 0 when
    there is none yet). The calibrated metric freezes by a test over the window, not by these flags;
    they only feed the reported disorder.

    Examples:
        >>> conflict_flags(torch.tensor([[-2.0], [1.0], [4.0], [1.0], [2.0]]), "sign").tolist()
        [False]
        >>> conflict_flags(torch.tensor([[-2.0], [1.0], [4.0], [1.0], [2.0]]), "calibrated", torch.tensor([-1.5])).tolist()
        [False]
    """
    if metric == "cosine":
        return cosine(stats) < 0
    if metric == "sign":
        return stats[3] * 2 > stats[4]
    if metric == "calibrated":
        return cosine(stats) < (0.0 if null_mean is None else null_mean)
    raise ValueError(f"metric must be 'cosine', 'sign' or 'calibrated', got {metric!r}")


def student_t_quantile(p: float, df: Tensor) -> Tensor:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (tensor), on df's device.

    A Cornish-Fisher expansion around the normal quantile, within 1e-3 of the exact value for
    df >= 3 at p <= 0.99 (the calibrated metric needs windows of 4 or more, so df >= 3).

    Examples:
        >>> [round(v, 3) for v in student_t_quantile(0.95, torch.tensor([3.0, 9.0, 1000.0])).tolist()]
        [2.352, 1.833, 1.646]
    """
    z = math.sqrt(2.0) * torch.erfinv(torch.tensor(2 * p - 1.0, dtype=torch.float64)).item()
    df = df.to(torch.float64).clamp(min=1.0)
    terms = ((z**3 + z) / 4, (5 * z**5 + 16 * z**3 + 3 * z) / 96, (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384,
             (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160)
    return (z + sum(term / df**power for power, term in enumerate(terms, start=1))).float()


def welch_statistic(values: Tensor, measured: Tensor, null_values: Tensor, null_measured: Tensor) -> tuple[Tensor, Tensor]:
    """Per scale, Welch's t of (mean of ``values`` − mean of ``null_values``) over their measured cells, and its df.

    Rows with fewer than two measurements on either side, or no spread at all, get t = 0.

    Examples:
        >>> a = torch.tensor([[-1.0, -0.8, -0.9, -1.0]]); n = torch.tensor([[0.1, -0.1, 0.0, 0.2]])
        >>> t, df = welch_statistic(a, torch.ones(1, 4, dtype=torch.bool), n, torch.ones(1, 4, dtype=torch.bool))
        >>> round(t.item(), 2), round(df.item(), 2)   # scipy.stats.ttest_ind(equal_var=False) gives the same
        (-12.13, 5.53)
    """
    def moments(x: Tensor, m: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        count = m.sum(1).float()
        mean = (x * m).sum(1) / count.clamp(min=1)
        var = (((x - mean.unsqueeze(1)) * m) ** 2).sum(1) / (count - 1).clamp(min=1)
        return count, mean, var

    n_a, mean_a, var_a = moments(values.float(), measured)
    n_0, mean_0, var_0 = moments(null_values.float(), null_measured)
    se2 = var_a / n_a.clamp(min=1) + var_0 / n_0.clamp(min=1)
    usable = (n_a >= 2) & (n_0 >= 2) & (se2 > 0)
    t = torch.where(usable, (mean_a - mean_0) / se2.clamp(min=1e-30).sqrt(), 0.0)
    denominator = (var_a / n_a.clamp(min=1)) ** 2 / (n_a - 1).clamp(min=1) + (var_0 / n_0.clamp(min=1)) ** 2 / (
        n_0 - 1).clamp(min=1)
    df = torch.where(usable, se2**2 / denominator.clamp(min=1e-30), (n_a + n_0 - 2).clamp(min=1))
    return t, df


@dataclass(frozen=True)
class ScaleStatus:
    """One row of :meth:`GAQATOptimizer.freeze_report`.

    Attributes:
        role: the scale's role string (``"<module>.weight"`` or ``"<module>.input"``).
        disorder: fraction of conflicting steps among the measured steps in the window.
        frozen: whether the scale is frozen for the coming updates.
        frozen_steps: how many updates it has been frozen for so far.
        conflicts: conflicting steps in the window.
        window_filled: measured steps in the window (at most K).
        statistic: ``metric="calibrated"`` only: Welch's t of the window's mean cosine against the
            null's (negative: below the null; frozen when below minus the t quantile of level alpha).

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
    statistic: float | None = None


class Window:
    """The last K values of every scale (a ring buffer on the device) with which cells hold a measurement.

    How many cells each row holds is also kept on the host (it only depends on which gradients
    existed), so deciding whether a window is full never reads the device.

    Examples:
        >>> window = Window(2, 3)
        >>> window.commit(*window.propose(torch.tensor([0.5, -1.0]), [True, False]), [True, False])
        >>> window.filled, window.values[:, 0].tolist()
        ([1, 0], [0.5, 0.0])
    """

    def __init__(self, size: int, k: int, device: torch.device | str | None = None) -> None:
        self.k = k
        self.values = torch.zeros(size, k, dtype=torch.float32, device=device)
        self.measured = torch.zeros(size, k, dtype=torch.bool, device=device)
        self.position = 0
        self._host = [[False] * k for _ in range(size)]

    @property
    def filled(self) -> list[int]:
        return [sum(row) for row in self._host]

    def filled_after(self, measured: list[bool]) -> list[int]:
        """Per row, the cells that would hold a measurement after writing ``measured`` at the current position."""
        return [sum(row) - row[self.position] + now for row, now in zip(self._host, measured, strict=True)]

    def propose(self, column: Tensor, measured: list[bool]) -> tuple[Tensor, Tensor]:
        """New ``(values, measured)`` tensors with ``column`` written at the current position (nothing committed)."""
        device = self.values.device
        if all(measured):
            mask = torch.ones(len(measured), dtype=torch.bool, device=device)
        else:
            mask = torch.tensor(measured, dtype=torch.bool, device=device)
        values, cells = self.values.clone(), self.measured.clone()
        values[:, self.position] = torch.where(mask, column.to(device, torch.float32), 0.0)
        cells[:, self.position] = mask
        return values, cells

    def commit(self, values: Tensor, cells: Tensor, measured: list[bool]) -> None:
        for row, now in zip(self._host, measured, strict=True):
            row[self.position] = now
        self.values, self.measured = values, cells
        self.position = (self.position + 1) % self.k

    def take(self, rows: list[int]) -> None:
        """Keep the rows ``rows`` in that order; ``-1`` makes an empty row."""
        device = self.values.device
        take = torch.tensor([max(r, 0) for r in rows], dtype=torch.long, device=device)
        known = torch.tensor([r >= 0 for r in rows], dtype=torch.bool, device=device).unsqueeze(1)
        if self.values.shape[0]:
            self.values, self.measured = self.values[take] * known, self.measured[take] & known
        else:
            self.values = torch.zeros(len(rows), self.k, device=device)
            self.measured = torch.zeros(len(rows), self.k, dtype=torch.bool, device=device)
        self._host = [list(self._host[r]) if r >= 0 else [False] * self.k for r in rows]

    def to(self, device: torch.device | str) -> None:
        self.values, self.measured = self.values.to(device), self.measured.to(device)

    def state_dict(self) -> dict[str, Any]:
        return {"values": self.values.cpu().clone(), "measured": self.measured.cpu().clone(), "position": self.position}

    def load(self, state: dict[str, Any]) -> None:
        self.values = state["values"].to(self.values.device, torch.float32).clone()
        self.measured = state["measured"].to(self.values.device, torch.bool).clone()
        self.position = int(state["position"])
        self._host = [[bool(v) for v in row] for row in state["measured"].tolist()]


@dataclass
class Proposal:
    """One step's tentative tracker update; :meth:`ConflictTracker.commit` applies it once the step is known to count.

    Attributes:
        flags: the window of conflict flags with this step's flags written in, ``(scales, K)``, on the device.
        values: the window of per-step cosines and which cells hold one, with this step's written in.
        null: the same for the null's cosines (``metric="calibrated"`` at a random-direction step), else ``None``.
        measured: which scales were measured this step (host).
        null_measured: which scales the null measured this step (host), or ``None``.
        decided: whether this step makes a freeze decision.
        frozen: the frozen flags after this step's decision (device), or ``None`` when nothing was decided.

    Examples:
        >>> ConflictTracker(["a"], GAQATConfig(window=1)).propose(torch.tensor([True])).decided
        True
    """

    flags: Tensor
    values: tuple[Tensor, Tensor]
    null: tuple[Tensor, Tensor] | None
    measured: list[bool]
    null_measured: list[bool] | None
    decided: bool
    frozen: Tensor | None


class ConflictTracker:
    """The last K conflict flags and cosines of every step size, keyed by role; disorder and freeze decisions.

    A step's flags are first *proposed* (:meth:`propose`, device tensors only, no host
    synchronisation) and *committed* (:meth:`commit`) once the optimizer knows the step
    counts (it was finite). A scale without a gradient in either pass that step is not
    measured: its cell stays empty and does not count towards its window. When a scale's
    window holds K measurements (and, for ``metric="calibrated"``, its null window too) and
    the step count is a multiple of ``reevaluate_every``, its frozen flag is decided:
    ``disorder >= freeze_threshold`` for the cosine and sign metrics; for the calibrated
    metric, Welch's t of the window's mean cosine against the null's below the negative
    ``1 - alpha`` quantile of Student's t with min(K, K_null) − 1 degrees of freedom. With
    ``permanent_freeze`` the decision is OR-ed into the old flag. The decision applies from the
    update of that same step on.

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
        self.cosines = Window(size, k, device)
        self.null = Window(size, k, device)
        self.steps = 0
        self.frozen = [False] * size
        self.frozen_steps = [0] * size
        self._frozen_device = torch.zeros(size, dtype=torch.bool, device=device)

    @property
    def device(self) -> torch.device:
        return self.flags.device

    @property
    def filled(self) -> list[int]:
        return self.cosines.filled

    def to(self, device: torch.device | str) -> ConflictTracker:
        """Move the device-side state (windows, frozen flags) to ``device``."""
        self.flags, self._frozen_device = self.flags.to(device), self._frozen_device.to(device)
        self.cosines.to(device)
        self.null.to(device)
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
        rows = [index.get(role, -1) for role in roles]
        device = self.device
        take = torch.tensor([max(r, 0) for r in rows], dtype=torch.long, device=device)
        known = torch.tensor([r >= 0 for r in rows], dtype=torch.bool, device=device)
        self.flags = (self.flags[take] & known.unsqueeze(1) if self.roles
                      else torch.zeros(len(roles), self.config.window, dtype=torch.bool, device=device))
        self.cosines.take(rows)
        self.null.take(rows)
        self.frozen = [self.frozen[r] if r >= 0 else False for r in rows]
        self.frozen_steps = [self.frozen_steps[r] if r >= 0 else 0 for r in rows]
        self._frozen_device = torch.tensor(self.frozen, dtype=torch.bool, device=device)
        self.roles = list(roles)

    def disorder(self) -> Tensor:
        """Fraction of conflicting steps among the measured steps in the window, per scale (0 before any)."""
        return self.flags.sum(1).float() / self.cosines.measured.sum(1).clamp(min=1).float()

    def null_mean(self, null: tuple[Tensor, Tensor] | None = None) -> Tensor | None:
        """Per scale, the mean cosine of the null window (``None`` while it is empty)."""
        values, measured = null if null is not None else (self.null.values, self.null.measured)
        count = measured.sum(1)
        if null is None and not any(self.null.filled):
            return None
        return torch.where(count > 0, (values * measured).sum(1) / count.clamp(min=1), 0.0)

    def statistic(self, values: tuple[Tensor, Tensor] | None = None,
                  null: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """Welch's t of the window's cosines against the null's, and its degrees of freedom."""
        values = values if values is not None else (self.cosines.values, self.cosines.measured)
        null = null if null is not None else (self.null.values, self.null.measured)
        return welch_statistic(values[0], values[1], null[0], null[1])

    def propose(self, flags: Tensor, measured: list[bool] | None = None, cosines: Tensor | None = None,
                null_cosines: Tensor | None = None, null_measured: list[bool] | None = None) -> Proposal:
        """This step's tracker update, computed on the device without reading anything back.

        ``measured[i]`` is False for a scale without a gradient in one of the passes (default: all
        measured); ``cosines`` are this step's cos(g_task, g_smooth) (default: not recorded, zeros);
        ``null_cosines`` / ``null_measured`` the null pass's, at a random-direction step.
        """
        config, k = self.config, self.config.window
        measured = [True] * len(self.roles) if measured is None else list(measured)
        if cosines is None:
            cosines = torch.zeros(len(self.roles), device=self.device)
        values = self.cosines.propose(cosines, measured)
        null = None
        if null_cosines is not None:
            null_measured = [True] * len(self.roles) if null_measured is None else list(null_measured)
            null = self.null.propose(null_cosines, null_measured)
        new_flags = self.flags.clone()
        new_flags[:, self.cosines.position] = flags.to(self.device, torch.bool) & values[1][:, self.cosines.position]
        calibrated = config.metric == "calibrated"
        filled = self.cosines.filled_after(measured)
        null_filled = self.null.filled_after(null_measured) if null is not None else self.null.filled
        ready_host = [f == k and (not calibrated or n == k) for f, n in zip(filled, null_filled, strict=True)]
        steps = self.steps + 1
        decided = any(ready_host) and steps % config.reevaluate_every == 0
        frozen = None
        if decided and config.freeze_threshold is not None:
            ready = values[1].sum(1) == k
            null_window = null if null is not None else (self.null.values, self.null.measured)
            if calibrated:
                ready = ready & (null_window[1].sum(1) == k)
                t, _ = welch_statistic(values[0], values[1], null_window[0], null_window[1])
                # the conservative degrees of freedom min(n, n_null) - 1, not Welch-Satterthwaite's: the cosines of
                # small step sizes are far from normal, and the Welch df let 5.2% freeze at alpha = 0.05 without a
                # conflict (bench/bench_calibrated_metric.py; 4.1% with this df)
                df = torch.minimum(values[1].sum(1), null_window[1].sum(1)).float() - 1
                decision = t < -student_t_quantile(1 - config.alpha, df)
            else:
                disorder = new_flags.sum(1).float() / values[1].sum(1).clamp(min=1).float()
                decision = disorder >= config.freeze_threshold
            decision = decision & ready
            frozen = (self._frozen_device | decision if config.permanent_freeze
                      else torch.where(ready, decision, self._frozen_device))
        return Proposal(new_flags, values, null, measured, null_measured if null is not None else None, decided, frozen)

    def commit(self, proposal: Proposal, frozen: list[bool] | None = None) -> None:
        """Apply ``proposal``; ``frozen`` is ``proposal.frozen`` read back to the host (when it is not ``None``)."""
        self.flags = proposal.flags
        self.cosines.commit(*proposal.values, proposal.measured)
        if proposal.null is not None:
            self.null.commit(*proposal.null, proposal.null_measured)
        self.steps += 1
        if proposal.frozen is not None:
            if frozen is None:
                frozen = proposal.frozen.tolist()
            self._frozen_device = proposal.frozen
            self.frozen = [bool(f) for f in frozen]
        self.frozen_steps = [n + f for n, f in zip(self.frozen_steps, self.frozen, strict=True)]

    def record(self, flags: Tensor, measured: list[bool] | None = None, **values: Any) -> bool:
        """Propose and commit one step's flags at once; True when a freeze decision was made."""
        proposal = self.propose(flags, measured, **values)
        self.commit(proposal)
        return proposal.decided

    def report(self) -> list[ScaleStatus]:
        """One :class:`ScaleStatus` per scale (reads the device state back: not for every step)."""
        disorder = self.disorder().tolist()
        conflicts = self.flags.sum(1).tolist()
        statistic = self.statistic()[0].tolist() if self.config.metric == "calibrated" else [None] * len(self.roles)
        filled = self.filled
        return [ScaleStatus(role, disorder[i], self.frozen[i], self.frozen_steps[i], conflicts[i], filled[i], statistic[i])
                for i, role in enumerate(self.roles)]

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit-identically, keyed by step-size role."""
        return {"roles": list(self.roles), "flags": self.flags.cpu().clone(), "cosines": self.cosines.state_dict(),
                "null": self.null.state_dict(), "steps": self.steps,
                "frozen": torch.tensor(self.frozen, dtype=torch.bool),
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
        tracker.cosines.load(state["cosines"])
        tracker.null.load(state["null"])
        tracker.steps = int(state["steps"])
        tracker.frozen = [bool(v) for v in torch.as_tensor(state["frozen"]).tolist()]
        tracker._frozen_device = torch.tensor(tracker.frozen, dtype=torch.bool, device=tracker.device)
        tracker.frozen_steps = [int(v) for v in torch.as_tensor(state["frozen_steps"]).tolist()]
        return tracker
