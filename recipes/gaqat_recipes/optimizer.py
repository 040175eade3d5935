"""The optimizer step of a run: the base optimizer on ``param_groups``, the GAQAT wrapper, the schedule, the freeze trace.

Every method builds the same base optimizer (AdamW or SGD over :func:`gaqat_wrap.param_groups`, so step sizes
never decay); the sharpness-aware methods wrap it in :class:`gaqat_wrap.GAQATOptimizer` with the run's
:meth:`~gaqat_recipes.TrainConfig.gaqat_config`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from gaqat_recipes.methods import method_spec
from gaqat_wrap import GAQATOptimizer, OscillationFreezer, param_groups

if TYPE_CHECKING:
    from gaqat_recipes.config import TrainConfig


@dataclass
class FreezeTrace:
    """Per-scale disorder and frozen flags at every freeze decision (installed as the GAQAT optimizer's freeze hook).

    Examples:
        >>> trace = FreezeTrace()
        >>> trace.to_dict()
        {'steps': [], 'roles': [], 'disorder': [], 'frozen': []}
    """

    steps: list[int] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)
    disorder: list[list[float]] = field(default_factory=list)
    frozen: list[list[bool]] = field(default_factory=list)

    def __call__(self, optimizer: GAQATOptimizer, report: list) -> None:
        self.roles = [s.role for s in report]
        self.steps.append(optimizer.steps)
        self.disorder.append([round(s.disorder, 4) for s in report])
        self.frozen.append([bool(s.frozen) for s in report])

    def to_dict(self) -> dict[str, Any]:
        """The trace as JSON-ready lists (``metrics.json``'s ``freeze_trace``)."""
        return {"steps": self.steps, "roles": self.roles, "disorder": self.disorder, "frozen": self.frozen}


@dataclass
class RunOptimizer:
    """What a run steps with.

    Attributes:
        optimizer: the optimizer the loop calls (the GAQAT wrapper for sharpness-aware methods).
        gaqat: the GAQAT wrapper, or ``None`` for methods that take the base optimizer's step.
        scheduler: the learning-rate schedule (``None`` for a constant rate).
        trace: the freeze decisions recorded for the sharpness-aware methods.
        freezer: the oscillation freezer of weights of the methods that have one, else ``None``.

    Examples:
        >>> from gaqat_recipes import TrainConfig
        >>> run = build_optimizer(TrainConfig(test_domain="0", method="qat"), torch.nn.Linear(4, 2))
        >>> run.gaqat is None, type(run.optimizer).__name__
        (True, 'AdamW')
    """

    optimizer: torch.optim.Optimizer
    gaqat: GAQATOptimizer | None
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    trace: FreezeTrace
    freezer: OscillationFreezer | None = None

    def extra_loss(self) -> torch.Tensor | float:
        """The term the closure adds to the task loss: the oscillation dampening loss, or 0."""
        return self.freezer.dampening_loss() if self.freezer is not None else 0.0


def build_optimizer(config: TrainConfig, model: torch.nn.Module) -> RunOptimizer:
    """The base optimizer of ``config`` over ``model``, wrapped in GAQAT for the sharpness-aware methods.

    Examples:
        >>> from gaqat_recipes import TrainConfig
        >>> net = torch.nn.Linear(4, 2)
        >>> run = build_optimizer(TrainConfig(test_domain="0", method="fp-sam", schedule="cosine"), net)
        >>> type(run.optimizer).__name__, run.gaqat.config.freeze_threshold, run.scheduler is not None
        ('GAQATOptimizer', None, True)
        >>> type(build_optimizer(TrainConfig(test_domain="0", method="fp", optimizer="sgd"), net).optimizer).__name__
        'SGD'
    """
    groups = param_groups(model, weight_decay=config.weight_decay, scale_lr=config.scale_lr, lr=config.lr)
    if config.optimizer == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    else:
        optimizer = torch.optim.AdamW(groups, lr=config.lr)
    gaqat = None
    trace = FreezeTrace()
    if method_spec(config.method).sharpness_aware:
        gaqat = GAQATOptimizer(optimizer, config=config.gaqat_config(), model=model)
        gaqat.register_freeze_hook(trace)
        optimizer = gaqat
    freezer = None
    oscillation = method_spec(config.method).oscillation
    if oscillation is not None:
        freezer = OscillationFreezer(model, optimizer, total_steps=config.oscillation_steps or config.steps, **oscillation)
    scheduler = None
    if config.schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, config.steps) / config.steps)))
    return RunOptimizer(optimizer=optimizer, gaqat=gaqat, scheduler=scheduler, trace=trace, freezer=freezer)


def add_step_sizes(config: TrainConfig, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Give ``optimizer`` the step sizes of ``model``, quantized after the optimizer was built (delayed methods).

    They join as one group without weight decay, at ``config.scale_lr`` (else ``config.lr``), with their
    roles, as :func:`gaqat_wrap.param_groups` would have grouped them. Returns how many were added.

    Examples:
        >>> from gaqat_recipes import TrainConfig
        >>> from gaqat_wrap import quantize_model
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
        >>> optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
        >>> add_step_sizes(TrainConfig(test_domain="0"), quantize_model(net), optimizer), len(optimizer.param_groups)
        (2, 2)
    """
    scales = [g for g in param_groups(model, lr=config.lr, scale_lr=config.scale_lr) if g["group"] == "scales"]
    for group in scales:
        optimizer.add_param_group(group)
    return sum(len(group["params"]) for group in scales)
